//! macOS's metadata files (`._*`, `.DS_Store`, `.Trashes`, `.Spotlight-V100`,
//! `.fseventsd` ...) on a real FUSE mount and through `serve-nfs`: made with
//! real tools (or NFS calls), read back, listed, renamed and removed within
//! the mount, and never sent to the emulator (its bucket is listed
//! directly); gone after a restart. With `--upload-macos-files` the same
//! names are objects, which shows the listing of the bucket can fail.

mod common;

use std::time::Duration;

use common::nfs::*;
use common::*;
use nfs3_client::nfs3_types::nfs3::{
    CREATE3args, MKDIR3args, Nfs3Result, REMOVE3args, RENAME3args, RMDIR3args, createhow3, nfsstat3, sattr3,
};

/// Every object of `bucket`, listed with the emulator's REST API.
fn objects(bucket: &str) -> Vec<String> {
    let body = curl(&[&format!("{}/storage/v1/b/{bucket}/o", gcs_url())]);
    let listing: serde_json::Value = serde_json::from_slice(&body).expect("a JSON listing");
    let items = listing["items"].as_array().cloned().unwrap_or_default();
    let mut names: Vec<String> = items.iter().filter_map(|item| item["name"].as_str().map(str::to_string)).collect();
    names.sort();
    names
}

#[test]
fn macos_files_over_fuse_stay_in_the_mount_and_never_reach_the_emulator() {
    let bucket = bucket_name("macos_fuse");
    create_bucket(&bucket);
    upload(&bucket, "photo.jpg", b"jpeg");
    let mut mount = FuseMount::start(&[]);
    let dir = mount.path(&format!("{PROJECT}/storage/{bucket}"));
    let root = mount.dir.display().to_string();
    let made = ok(&format!(
        "set -e; cd '{}'
         touch .DS_Store
         echo xattrs > ._photo.jpg
         cp photo.jpg ._copy.jpg
         mkdir .Trashes .Spotlight-V100 .fseventsd .TemporaryItems
         mkdir .Trashes/501
         echo trashed > .Trashes/501/photo.jpg
         echo store > .Spotlight-V100/store.db
         echo 1 > .fseventsd/0000000000000001
         touch .VolumeIcon.icns .apdisk
         mkdir '{root}/.fseventsd'; echo root > '{root}/.fseventsd/0001'; touch '{root}/.DS_Store'
         mv ._photo.jpg ._renamed.jpg
         mv .Trashes/501/photo.jpg .Trashes/moved.jpg
         cat ._renamed.jpg ._copy.jpg .Trashes/moved.jpg .Spotlight-V100/store.db '{root}/.fseventsd/0001'; echo
         export LC_ALL=C; ls -A; ls -A .Trashes; ls -A '{root}'",
        dir.display()
    ));
    let bucket_listing = [
        ".DS_Store",
        ".Spotlight-V100",
        ".TemporaryItems",
        ".Trashes",
        ".VolumeIcon.icns",
        "._copy.jpg",
        "._renamed.jpg",
        ".apdisk",
        ".fseventsd",
        ".meta",
        "photo.jpg",
    ];
    let expected = format!(
        "xattrs\njpegtrashed\nstore\nroot\n\n{}\n501\nmoved.jpg\n.DS_Store\n.ciofs\n.fseventsd\n{PROJECT}\n",
        bucket_listing.join("\n")
    );
    assert_eq!(made, expected);
    assert_eq!(objects(&bucket), ["photo.jpg"], "nothing of them reached the emulator");

    ok(&format!("set -e; cd '{}'; rm -r .Trashes ._renamed.jpg; rmdir .TemporaryItems", dir.display()));
    let left = ok(&format!("ls -A '{}'", dir.display()));
    assert!(!left.contains(".Trashes") && !left.contains("._renamed.jpg") && left.contains(".DS_Store"), "{left}");
    assert_eq!(objects(&bucket), ["photo.jpg"]);

    mount.terminate();
    let mount = FuseMount::start(&[]);
    let listed = ok(&format!("ls -A '{}'", mount.path(&format!("{PROJECT}/storage/{bucket}")).display()));
    assert_eq!(listed, ".meta\nphoto.jpg\n", "gone after a restart");
}

#[test]
fn with_upload_macos_files_fuse_sends_them_as_objects() {
    let bucket = bucket_name("macos_fuse_up");
    create_bucket(&bucket);
    let mount = FuseMount::start(&["--upload-macos-files"]);
    let dir = mount.path(&format!("{PROJECT}/storage/{bucket}"));
    ok(&format!("set -e; cd '{}'; echo x > .DS_Store; mkdir .Trashes; echo y > .Trashes/._f", dir.display()));
    assert_eq!(objects(&bucket), [".DS_Store", ".Trashes/", ".Trashes/._f"]);
}

#[tokio::test]
async fn macos_files_over_nfs_stay_in_the_server_and_never_reach_the_emulator() {
    let bucket = bucket_name("macos_nfs");
    create_bucket(&bucket);
    upload(&bucket, "photo.jpg", b"jpeg");
    let state = tempfile::tempdir().unwrap();
    let server = NfsServer::start(state.path());
    let mut conn = connect(server.port).await;
    let dir = walk(&mut conn, &format!("{PROJECT}/storage/{bucket}")).await;

    for name in [".DS_Store", "._photo.jpg"] {
        let args = CREATE3args { where_: dirop(&dir, name), how: createhow3::UNCHECKED(sattr3::default()) };
        let file = conn.create(&args).await.unwrap().unwrap().obj.unwrap();
        write(&mut conn, &file, 0, name.as_bytes()).await;
        assert_eq!(read(&mut conn, &file, 0, 100).await.0, name.as_bytes());
    }
    let mkdir = MKDIR3args { where_: dirop(&dir, ".Trashes"), attributes: sattr3::default() };
    let trashes = conn.mkdir(&mkdir).await.unwrap().unwrap().obj.unwrap();
    let args = CREATE3args { where_: dirop(&trashes, "f"), how: createhow3::UNCHECKED(sattr3::default()) };
    let inner = conn.create(&args).await.unwrap().unwrap().obj.unwrap();
    write(&mut conn, &inner, 0, b"in the trash").await;
    let rename = RENAME3args { from: dirop(&dir, "._photo.jpg"), to: dirop(&trashes, "._moved.jpg") };
    conn.rename(&rename).await.unwrap().unwrap();

    let (names, _) = list(&mut conn, &dir, 8192).await;
    assert_eq!(names, [".meta", "photo.jpg", ".Trashes", ".DS_Store"], "local ones after Google's");
    let (names, _) = list(&mut conn, &trashes, 8192).await;
    assert_eq!(names, ["._moved.jpg", "f"]);
    let moved = lookup(&mut conn, &trashes, "._moved.jpg").await.unwrap();
    assert_eq!(read(&mut conn, &moved, 0, 100).await.0, b"._photo.jpg");
    // Past the idle time in which an NFS write would be uploaded.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(objects(&bucket), ["photo.jpg"], "nothing of them reached the emulator");

    let rmdir = RMDIR3args { object: dirop(&dir, ".Trashes") };
    let refused = match conn.rmdir(&rmdir).await.unwrap() {
        Nfs3Result::Ok(_) => nfsstat3::NFS3_OK,
        Nfs3Result::Err((status, _)) => status,
    };
    assert_eq!(refused, nfsstat3::NFS3ERR_NOTEMPTY);
    for name in ["._moved.jpg", "f"] {
        conn.remove(&REMOVE3args { object: dirop(&trashes, name) }).await.unwrap().unwrap();
    }
    conn.rmdir(&rmdir).await.unwrap().unwrap();
    assert_eq!(lookup(&mut conn, &dir, ".Trashes").await, Err(nfsstat3::NFS3ERR_NOENT));
    drop(server);

    let server = NfsServer::start(state.path());
    let mut conn = connect(server.port).await;
    let dir = walk(&mut conn, &format!("{PROJECT}/storage/{bucket}")).await;
    let (names, _) = list(&mut conn, &dir, 8192).await;
    assert_eq!(names, [".meta", "photo.jpg"], "gone after a restart");
}

#[tokio::test]
async fn with_upload_macos_files_nfs_sends_them_as_objects() {
    let bucket = bucket_name("macos_nfs_up");
    create_bucket(&bucket);
    let state = tempfile::tempdir().unwrap();
    let server = NfsServer::start_with_args(state.path(), &[], &["--upload-macos-files"]);
    let mut conn = connect(server.port).await;
    let dir = walk(&mut conn, &format!("{PROJECT}/storage/{bucket}")).await;
    let args = CREATE3args { where_: dirop(&dir, ".DS_Store"), how: createhow3::UNCHECKED(sattr3::default()) };
    let file = conn.create(&args).await.unwrap().unwrap().obj.unwrap();
    write(&mut conn, &file, 0, b"finder").await;
    wait_until("the upload", Duration::from_secs(20), || objects(&bucket) == [".DS_Store"]);
}
