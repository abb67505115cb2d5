//! Writing Cloud Storage through a real FUSE mount with real tools, every
//! result checked with curl on the emulator (a client that is not ciofs).

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

use common::*;
use serde_json::json;

fn exists(bucket: &str, name: &str) -> bool {
    let url = format!("{}/storage/v1/b/{bucket}/o/{}", gcs_url(), encode(name));
    Command::new("curl").args(["-sf", "-o", "/dev/null", &url]).status().is_ok_and(|s| s.success())
}

struct Fixture {
    bucket: String,
    mount: FuseMount,
}

impl Fixture {
    fn new(test: &str) -> Self {
        let bucket = bucket_name(test);
        create_bucket(&bucket);
        Fixture { bucket, mount: FuseMount::start(&[]) }
    }

    /// The bucket's directory in the mount, as a shell word.
    fn dir(&self) -> String {
        self.mount.path(&format!("{PROJECT}/storage/{}", self.bucket)).display().to_string()
    }
}

#[test]
fn new_files_are_uploaded_at_close() {
    let f = Fixture::new("w_new");
    let d = f.dir();
    ok(&format!("/bin/echo hello > {d}/hello.txt"));
    assert_eq!(read_object(&f.bucket, "hello.txt"), b"hello\n");
    ok(&format!("touch {d}/empty"));
    assert!(exists(&f.bucket, "empty"));
    assert_eq!(read_object(&f.bucket, "empty"), b"");

    let big = pattern(3 * 1024 * 1024 + 5, 9);
    let mut local = tempfile::NamedTempFile::new().unwrap();
    local.write_all(&big).unwrap();
    ok(&format!("mkdir -p {d}/sub/deeper && cp {} {d}/sub/deeper/big.bin", local.path().display()));
    assert!(read_object(&f.bucket, "sub/deeper/big.bin") == big, "cp uploaded other bytes");
    // And it reads back through the mount, also after the kernel forgot it.
    ok(&format!("cmp {} {d}/sub/deeper/big.bin", local.path().display()));
}

#[test]
fn overwrite_append_offset_writes_and_truncate() {
    let f = Fixture::new("w_edit");
    upload(&f.bucket, "f.txt", b"0123456789");
    let d = f.dir();
    ok(&format!("/bin/echo -n abc > {d}/f.txt"));
    assert_eq!(read_object(&f.bucket, "f.txt"), b"abc");
    ok(&format!("/bin/echo -n def >> {d}/f.txt"));
    assert_eq!(read_object(&f.bucket, "f.txt"), b"abcdef");
    ok(&format!("printf XY | dd of={d}/f.txt bs=1 seek=2 conv=notrunc status=none"));
    assert_eq!(read_object(&f.bucket, "f.txt"), b"abXYef");
    ok(&format!("truncate -s 4 {d}/f.txt"));
    assert_eq!(read_object(&f.bucket, "f.txt"), b"abXY");
    ok(&format!("truncate -s 6 {d}/f.txt"));
    assert_eq!(read_object(&f.bucket, "f.txt"), b"abXY\0\0");
    ok(&format!("sed -i 's/XY/--/' {d}/f.txt"));
    assert_eq!(read_object(&f.bucket, "f.txt"), b"ab--\0\0");
}

#[test]
fn rm_mkdir_rmdir_and_buckets() {
    let f = Fixture::new("w_dirs");
    let d = f.dir();
    upload(&f.bucket, "gone.txt", b"x");
    ok(&format!("rm {d}/gone.txt"));
    assert!(!exists(&f.bucket, "gone.txt"));

    ok(&format!("mkdir {d}/empty"));
    assert!(exists(&f.bucket, "empty/"), "mkdir writes a placeholder");
    ok(&format!("test -d {d}/empty && rmdir {d}/empty"));
    assert!(!exists(&f.bucket, "empty/"));

    upload(&f.bucket, "full/a", b"a");
    let output = sh(&format!("rmdir {d}/full"));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("not empty"), "{output:?}");
    ok(&format!("rm -r {d}/full"));
    assert!(!exists(&f.bucket, "full/a"));

    // A new bucket: created at its settings, or with the defaults once it
    // waited a second for them.
    let storage = f.mount.path(&format!("{PROJECT}/storage")).display().to_string();
    let url_of = |bucket: &str| format!("{}/storage/v1/b/{bucket}", gcs_url());
    let made = |bucket: &str| Command::new("curl").args(["-sf", "-o", "/dev/null", &url_of(bucket)]).status().unwrap();
    let with_settings = bucket_name("w_made");
    let document = r#"{"versioning": true, "labels": {"made-by": "ciofs"}}"#;
    ok(&format!(
        "mkdir {storage}/{with_settings} && /bin/echo '{document}' > {storage}/{with_settings}/.meta/_bucket.json"
    ));
    let bucket: serde_json::Value = serde_json::from_slice(&curl(&[&url_of(&with_settings)])).unwrap();
    assert_eq!(bucket["versioning"]["enabled"], json!(true), "{bucket}");
    ok(&format!("rmdir {storage}/{with_settings}"));
    assert!(!made(&with_settings).success());
    let defaults = bucket_name("w_default");
    ok(&format!("mkdir {storage}/{defaults}"));
    wait_until("the bucket is made", std::time::Duration::from_secs(5), || made(&defaults).success());
    ok(&format!("rmdir {storage}/{defaults}"));
    let taken = sh(&format!("mkdir {storage}/{}", f.bucket));
    assert!(String::from_utf8_lossy(&taken.stderr).contains("File exists"), "{taken:?}");
}

/// What `mkdir` made and that still waits for its settings is created when
/// the mount ends, however soon after the `mkdir`.
#[test]
fn a_bucket_and_a_dataset_made_just_before_unmount_are_created() {
    let mut mount = FuseMount::start(&[]);
    let root = mount.path(PROJECT).display().to_string();
    let (bucket, dataset) = (bucket_name("w_settle"), dataset_name("w_settle"));
    ok(&format!("mkdir {root}/storage/{bucket} {root}/bigquery/{dataset}"));
    mount.terminate();
    let url = format!("{}/storage/v1/b/{bucket}", gcs_url());
    let made = Command::new("curl").args(["-sf", "-o", "/dev/null", &url]).status().unwrap();
    assert!(made.success(), "the bucket was not made:\n{}", mount.log_text());
    assert!(bq_get(&format!("/datasets/{dataset}")).is_some(), "the dataset was not made:\n{}", mount.log_text());
}

/// fake-gcs-server keeps no bucket labels, location or storage class: what
/// ciofs asked for is read off a recording proxy in front of it.
#[test]
fn a_new_bucket_is_created_with_the_settings_of_its_bucket_document() {
    let proxy = common::proxy::RecordingProxy::start(&gcs_url());
    let mount = FuseMount::start_with_env(&[], &[("STORAGE_EMULATOR_HOST", proxy.url())]);
    let storage = mount.path(&format!("{PROJECT}/storage")).display().to_string();
    let bucket = bucket_name("w_settings");
    let document = r#"{"location": "EUROPE-WEST1", "storage_class": "NEARLINE", "labels": {"team": "data"}}"#;
    ok(&format!("mkdir {storage}/{bucket} && /bin/echo '{document}' > {storage}/{bucket}/.meta/_bucket.json"));
    let sent = proxy.sent();
    let create =
        sent.split("POST ").find(|request| request.contains(&format!("\"name\":\"{bucket}\""))).unwrap_or_default();
    for wanted in [r#""location":"EUROPE-WEST1""#, r#""storageClass":"NEARLINE""#, r#""labels":{"team":"data"}"#] {
        assert!(create.contains(wanted), "{wanted} not in the bucket's creation:\n{create}");
    }
    // Made once, with its settings: no default creation came first.
    assert_eq!(sent.matches(&format!("\"name\":\"{bucket}\"")).count(), 1, "{sent}");
    // Its location cannot change afterwards.
    let moved = sh(&format!("/bin/echo '{{\"location\": \"ASIA\"}}' > {storage}/{bucket}/.meta/_bucket.json"));
    assert!(!moved.status.success(), "{moved:?}");
    let errors = std::fs::read_to_string(mount.path(".ciofs/errors")).unwrap();
    assert!(errors.contains("location cannot change"), "{errors}");
    ok(&format!("rmdir {storage}/{bucket}"));
}

#[test]
fn mv_renames_files_and_directories_server_side() {
    let f = Fixture::new("w_mv");
    upload(&f.bucket, "a.txt", b"alpha");
    patch_metadata(&f.bucket, "a.txt", "text/plain", &[("k", "v")]);
    upload(&f.bucket, "dir/one", b"1");
    upload(&f.bucket, "dir/sub/two", b"2");
    let d = f.dir();
    ok(&format!("mv {d}/a.txt {d}/b.txt && cat {d}/b.txt >/dev/null"));
    assert!(!exists(&f.bucket, "a.txt"));
    assert_eq!(read_object(&f.bucket, "b.txt"), b"alpha");
    let moved = object_json(&f.bucket, "b.txt");
    assert_eq!(moved["metadata"]["k"], "v");
    assert_eq!(moved["contentType"], "text/plain");

    ok(&format!("mv {d}/dir {d}/renamed && ls -R {d}/renamed >/dev/null"));
    assert!(!exists(&f.bucket, "dir/one") && !exists(&f.bucket, "dir/sub/two"));
    assert_eq!(read_object(&f.bucket, "renamed/one"), b"1");
    assert_eq!(read_object(&f.bucket, "renamed/sub/two"), b"2");
}

#[test]
fn metadata_files_and_attributes_accept_writes_and_change_nothing() {
    let f = Fixture::new("w_meta");
    upload(&f.bucket, "x.txt", b"x");
    let d = f.dir();
    let before = object_json(&f.bucket, "x.txt");
    ok(&format!("/bin/echo '{{}}' > {d}/.meta/x.txt.json"));
    ok(&format!("chmod 600 {d}/x.txt && touch -d 2020-01-01 {d}/x.txt && chown 0:0 {d}/x.txt"));
    let after = object_json(&f.bucket, "x.txt");
    assert_eq!(before["generation"], after["generation"], "nothing was rewritten");
    assert_eq!(read_object(&f.bucket, "x.txt"), b"x");
}

#[test]
fn a_second_writer_with_unflushed_data_is_ebusy() {
    let f = Fixture::new("w_busy");
    upload(&f.bucket, "f", b"old");
    let path = format!("{}/f", f.dir());
    let script = format!(
        r#"
import errno, os
a = os.open("{path}", os.O_WRONLY)
os.write(a, b"new")
try:
    os.open("{path}", os.O_WRONLY)
    print("opened")
except OSError as e:
    print(errno.errorcode[e.errno])
os.close(a)
b = os.open("{path}", os.O_WRONLY | os.O_TRUNC)
os.write(b, b"again")
os.close(b)
"#
    );
    let output = run(Command::new("python3").args(["-c", &script]));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "EBUSY");
    assert_eq!(read_object(&f.bucket, "f"), b"again");
}

#[test]
fn vim_saves_with_both_backupcopy_modes() {
    let f = Fixture::new("w_vim");
    upload(&f.bucket, "notes.txt", b"one\ntwo\n");
    let d = f.dir();
    for (mode, line) in [("yes", "three"), ("no", "four")] {
        // A real vim: swap file, the `4913` probe, a backup, a rename or a
        // rewrite in place, depending on backupcopy.
        ok(&format!(
            "cd {d} && HOME=/nonexistent vim -u NONE -i NONE -N -es -c 'set backup backupcopy={mode}' \
             -c 'call append(line(\"$\"), \"{line}\")' -c wq notes.txt"
        ));
    }
    assert_eq!(read_object(&f.bucket, "notes.txt"), b"one\ntwo\nthree\nfour\n");
    let listing = curl(&[&format!("{}/storage/v1/b/{}/o", gcs_url(), f.bucket)]);
    let listing = String::from_utf8_lossy(&listing);
    assert!(!listing.contains("4913") && !listing.contains(".swp"), "vim left scratch files: {listing}");
}

#[test]
fn tar_x_and_cp_r_into_a_bucket_twice() {
    let f = Fixture::new("w_tar");
    let src = tempfile::tempdir().unwrap();
    ok(&format!(
        "cd {} && mkdir -p a/b c && echo one > a/1 && echo two > a/b/2 && head -c 100000 /dev/urandom > c/blob && \
         tar cf ../in.tar a c && mv ../in.tar .",
        src.path().display()
    ));
    let d = f.dir();
    // GNU tar as root: O_EXCL creates, unlink on EEXIST, fchown, fchmod, utimensat.
    for _ in 0..2 {
        ok(&format!("tar xf {}/in.tar -C {d}", src.path().display()));
    }
    assert_eq!(read_object(&f.bucket, "a/1"), b"one\n");
    assert_eq!(read_object(&f.bucket, "a/b/2"), b"two\n");
    assert_eq!(read_object(&f.bucket, "c/blob"), std::fs::read(src.path().join("c/blob")).unwrap());
    ok(&format!("cp -r {}/a {d}/copied && cp -r {}/a/. {d}/copied", src.path().display(), src.path().display()));
    assert_eq!(read_object(&f.bucket, "copied/b/2"), b"two\n");
    ok(&format!("diff -r --exclude=.meta {}/a {d}/copied", src.path().display()));

    // An export of the bucket (its .meta/ documents included) extracted
    // over itself: every .meta file exists, so tar unlinks it and creates
    // it again with O_EXCL. It must end (it looped once) and change nothing.
    let export = src.path().join("export.tar");
    ok(&format!("tar cf {} -C {d} .", export.display()));
    assert!(ok(&format!("tar tf {}", export.display())).contains("./.meta/_bucket.json"));
    for _ in 0..2 {
        ok(&format!("timeout 60 tar xf {} -C {d}", export.display()));
    }
    assert_eq!(read_object(&f.bucket, "a/b/2"), b"two\n");
    assert_eq!(
        ok(&format!("ls {d}/.meta {d}/a/b/.meta")),
        format!("{d}/.meta:\n_bucket.json\n\n{d}/a/b/.meta:\n2.json\n")
    );
}

#[test]
fn sixteen_concurrent_writers_all_land_intact() {
    let f = Fixture::new("w_many");
    let d = f.dir();
    let writers: Vec<_> = (0..16)
        .map(|i| {
            let path = format!("{d}/w{i}.bin");
            std::thread::spawn(move || {
                let data = pattern(256 * 1024 + i, i as u8);
                std::fs::write(&path, &data).unwrap();
                data
            })
        })
        .collect();
    for (i, writer) in writers.into_iter().enumerate() {
        let data = writer.join().unwrap();
        assert!(read_object(&f.bucket, &format!("w{i}.bin")) == data, "w{i}.bin");
    }
}

#[test]
fn a_file_being_written_is_visible_and_readable_before_close() {
    let f = Fixture::new("w_open");
    let path = format!("{}/pending.txt", f.dir());
    let script = format!(
        r#"
import os
fd = os.open("{path}", os.O_CREAT | os.O_RDWR)
os.write(fd, b"not yet uploaded")
print(os.stat("{path}").st_size)
print("pending.txt" in os.listdir(os.path.dirname("{path}")))
with open("{path}", "rb") as r:
    print(r.read().decode())
os.close(fd)
"#
    );
    let output = run(Command::new("python3").args(["-c", &script]));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "16\nTrue\nnot yet uploaded\n");
    assert_eq!(read_object(&f.bucket, "pending.txt"), b"not yet uploaded");
}

/// Writes `data` to `path` through Python, returning the errno of close()
/// (0 when it succeeded): bash's builtin echo would hide it.
fn write_and_close(path: &str, data: &str) -> i32 {
    let script = format!(
        r#"
import os, sys
fd = os.open("{path}", os.O_WRONLY | os.O_TRUNC)
os.write(fd, b"{data}")
try:
    os.close(fd)
    print(0)
except OSError as e:
    print(e.errno)
"#
    );
    let output = run(Command::new("python3").args(["-c", &script]));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap()
}

/// A private emulator (it will be stopped) whose bucket `faults` holds
/// `f.bin` = "previous", and a mount on it; the object's path in the mount.
fn faults_fixture() -> (PrivateGcs, FuseMount, String) {
    let gcs = PrivateGcs::start();
    let url = gcs.url();
    curl(&["-X", "POST", &format!("{url}/storage/v1/b?project={PROJECT}"), "-d", "{\"name\":\"faults\"}"]);
    curl(&["-X", "POST", &format!("{url}/upload/storage/v1/b/faults/o?uploadType=media&name=f.bin"), "-d", "previous"]);
    let mount = FuseMount::start_with_env(&[], &[("STORAGE_EMULATOR_HOST", &url)]);
    let path = mount.path(&format!("{PROJECT}/storage/faults/f.bin")).display().to_string();
    assert_eq!(std::fs::read(&path).unwrap(), b"previous");
    (gcs, mount, path)
}

/// Opens `path` with O_TRUNC and writes `mib` MiB in Python, runs `before`,
/// lets Python close while `during` runs, and returns close()'s errno (0:
/// it succeeded).
fn close_around(path: &str, mib: usize, before: impl FnOnce(), during: impl FnOnce()) -> i32 {
    let script = format!(
        r#"
import os, sys
fd = os.open("{path}", os.O_WRONLY | os.O_TRUNC)
block = bytes(range(256)) * 4096
for _ in range({mib}):
    os.write(fd, block)
sys.stdout.write("written\n"); sys.stdout.flush()
sys.stdin.readline()
try:
    os.close(fd)
    print(0)
except OSError as e:
    print(e.errno)
"#
    );
    let mut child = Command::new("python3")
        .args(["-c", &script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "written\n");
    before();
    writeln!(child.stdin.take().unwrap()).unwrap();
    during();
    let mut errno = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut errno).unwrap();
    assert!(child.wait().unwrap().success());
    errno.trim().parse().unwrap()
}

/// The object still holds "previous", and it is the bucket's only object.
fn assert_previous_intact(gcs: &PrivateGcs) {
    let url = gcs.url();
    let stored = curl(&[&format!("{url}/storage/v1/b/faults/o/f.bin?alt=media")]);
    let meta = String::from_utf8_lossy(&curl(&[&format!("{url}/storage/v1/b/faults/o/f.bin")])).into_owned();
    assert!(stored == b"previous", "the previous version is not intact: {} bytes, {meta}", stored.len());
    let listing = String::from_utf8(curl(&[&format!("{url}/storage/v1/b/faults/o")])).unwrap();
    assert_eq!(listing.matches("\"name\"").count(), 1, "no partial object: {listing}");
}

#[test]
fn a_failed_upload_fails_close_and_keeps_the_previous_version() {
    let (mut gcs, _mount, path) = faults_fixture();
    // The service goes away between the writes and the close.
    let errno = close_around(&path, 1, || gcs.stop(), || {});
    assert_eq!(errno, libc::EIO, "close() reports the failed upload");
    gcs.resume();
    assert_previous_intact(&gcs);
    // Once the service is back, writing again succeeds.
    assert_eq!(write_and_close(&path, "retried"), 0);
    assert_eq!(curl(&[&format!("{}/storage/v1/b/faults/o/f.bin?alt=media", gcs.url())]), b"retried");
}

/// 1 MiB blocks of `close_around`'s Python writer.
fn blocks(mib: usize) -> Vec<u8> {
    (0..mib * 4096).flat_map(|_| 0..=255u8).collect()
}

#[test]
fn a_large_sequential_write_is_streamed_and_appears_only_at_close() {
    let f = Fixture::new("w_stream");
    let d = f.dir();
    ok(&format!("touch {d}/s.bin"));
    let path = format!("{d}/s.bin");
    let errno = close_around(&path, 24, || assert_eq!(read_object(&f.bucket, "s.bin"), b"", "not before close"), || {});
    assert_eq!(errno, 0, "{}", f.mount.log_text());
    assert!(read_object(&f.bucket, "s.bin") == blocks(24), "the streamed object holds other bytes");
    assert!(f.mount.log_text().contains("streaming the upload"), "not streamed:\n{}", f.mount.log_text());
    // A writer that goes back to fill in a header: the stream is abandoned
    // and the file goes up whole.
    let script = format!(
        r#"
import os
fd = os.open("{d}/h.bin", os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
block = bytes(range(256)) * 4096
for _ in range(20):
    os.write(fd, block)
os.lseek(fd, 0, 0)
os.write(fd, b"HEADER")
os.close(fd)
"#
    );
    let output = run(Command::new("python3").args(["-c", &script]));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let mut want = blocks(20);
    want[..6].copy_from_slice(b"HEADER");
    assert!(read_object(&f.bucket, "h.bin") == want, "the object after a seek back holds other bytes");
}

#[test]
fn a_redirect_uploads_once_and_never_an_empty_object_in_between() {
    let f = Fixture::new("w_once");
    upload(&f.bucket, "f.txt", b"before");
    let generation = |o: &serde_json::Value| o["generation"].as_str().unwrap().parse::<i64>().unwrap();
    let before = generation(&object_json(&f.bucket, "f.txt"));
    // bash opens with O_TRUNC, dups to stdout and closes the original first.
    ok(&format!("/bin/echo after > {}/f.txt", f.dir()));
    let after = object_json(&f.bucket, "f.txt");
    assert_eq!(read_object(&f.bucket, "f.txt"), b"after\n");
    // fake-gcs-server's generations are timestamps: one upload, one step,
    // which the log confirms; count uploads in the mount's log.
    assert!(generation(&after) > before);
    let uploads = f.mount.log_text().matches("uploaded bucket=").count();
    assert_eq!(uploads, 1, "one upload for one redirect:\n{}", f.mount.log_text());
}

#[test]
fn a_file_removed_while_open_is_never_uploaded() {
    let f = Fixture::new("w_unlink");
    upload(&f.bucket, "old.txt", b"old content");
    let d = f.dir();
    let script = format!(
        r#"
import os
fd = os.open("{d}/tmp1", os.O_CREAT | os.O_RDWR)
os.write(fd, b"scratch")
os.unlink("{d}/tmp1")
print(os.path.exists("{d}/tmp1"))
os.write(fd, b" more")
os.lseek(fd, 0, 0)
print(os.read(fd, 100).decode())
os.close(fd)
fd = os.open("{d}/old.txt", os.O_RDWR)
os.unlink("{d}/old.txt")
os.write(fd, b"NEW")
os.lseek(fd, 0, 0)
print(os.read(fd, 100).decode())
os.close(fd)
"#
    );
    let output = run(Command::new("python3").args(["-c", &script]));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "False\nscratch more\nNEW content\n");
    assert!(!exists(&f.bucket, "tmp1"), "a removed file must not appear at close");
    assert!(!exists(&f.bucket, "old.txt"));
}

#[test]
fn a_file_renamed_while_open_for_write_keeps_its_writes_under_the_new_name() {
    let f = Fixture::new("w_rotate");
    let d = f.dir();
    upload(&f.bucket, "old.log", b"old\n");
    // logrotate's way: mv while the writer keeps its descriptor and writes on.
    let script = format!(
        r#"
import os, subprocess
for name, flags in [("app.log", os.O_CREAT | os.O_WRONLY | os.O_TRUNC), ("old.log", os.O_WRONLY | os.O_APPEND)]:
    fd = os.open("{d}/" + name, flags)
    os.write(fd, b"before\n")
    subprocess.run(["mv", "{d}/" + name, "{d}/" + name + ".1"], check=True)
    os.write(fd, b"after\n")
    os.close(fd)
print(sorted(os.listdir("{d}")))
"#
    );
    let output = run(Command::new("python3").args(["-c", &script]));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "['.meta', 'app.log.1', 'old.log.1']\n");
    assert_eq!(read_object(&f.bucket, "app.log.1"), b"before\nafter\n");
    assert_eq!(read_object(&f.bucket, "old.log.1"), b"old\nbefore\nafter\n");
    assert!(!exists(&f.bucket, "app.log") && !exists(&f.bucket, "old.log"), "nothing under the old names");
    // A directory holding a file open for write is not moved (EBUSY); once
    // it is closed, it is.
    let script = format!(
        r#"
import os, subprocess
os.mkdir("{d}/logs")
fd = os.open("{d}/logs/now.log", os.O_CREAT | os.O_WRONLY)
os.write(fd, b"open")
moved = subprocess.run(["mv", "{d}/logs", "{d}/archived"], capture_output=True, text=True)
print("busy" if "busy" in moved.stderr else moved.stderr)
os.close(fd)
subprocess.run(["mv", "{d}/logs", "{d}/archived"], check=True)
"#
    );
    let output = run(Command::new("python3").args(["-c", &script]));
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "busy\n");
    assert_eq!(read_object(&f.bucket, "archived/now.log"), b"open");
}

#[test]
fn names_longer_than_255_bytes_are_enametoolong() {
    let f = Fixture::new("w_long");
    let long = "n".repeat(256);
    let d = f.dir();
    for script in [format!("stat {d}/{long}"), format!("touch {d}/{long}"), format!("mkdir {d}/{long}")] {
        let output = sh(&script);
        assert!(String::from_utf8_lossy(&output.stderr).contains("File name too long"), "{script}: {output:?}");
    }
}

#[test]
fn the_service_going_away_during_an_upload_fails_close_and_leaves_nothing_half_written() {
    let (mut gcs, _mount, path) = faults_fixture();
    // 96 MiB: an upload that takes a while on this emulator.
    // The upload of a sequential writer is streamed while it writes: the
    // service freezes before the close, with the request open, and goes
    // away while the close waits for it.
    let pid = gcs.pid();
    let errno = close_around(
        &path,
        96,
        // SAFETY: kill with the pid of the test's own emulator process.
        || unsafe {
            libc::kill(pid, libc::SIGSTOP);
        },
        || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            gcs.stop();
        },
    );
    assert_eq!(errno, libc::EIO, "close() reports the broken upload");
    gcs.resume();
    assert_previous_intact(&gcs);
}

#[test]
fn meta_documents_set_content_type_and_custom_metadata() {
    let f = Fixture::new("w_setmeta");
    let d = f.dir();
    upload(&f.bucket, "x.txt", b"x");
    let before = object_json(&f.bucket, "x.txt");
    // An existing object: patched, its data (generation) unchanged.
    let doc = r#"{"content_type": "text/csv", "custom_metadata": {"team": "data"}}"#;
    assert_eq!(write_and_close_errno(&PathBuf::from(format!("{d}/.meta/x.txt.json")), doc.as_bytes()), 0);
    let after = object_json(&f.bucket, "x.txt");
    assert_eq!((&after["contentType"], &after["metadata"]), (&json!("text/csv"), &json!({"team": "data"})));
    assert_eq!(after["generation"], before["generation"], "the data was not rewritten");
    assert_eq!(ok(&format!("grep -c text/csv {d}/.meta/x.txt.json")), "1\n");
    // Refused: not JSON, with the place in `.ciofs/errors`.
    let path = PathBuf::from(format!("{d}/.meta/x.txt.json"));
    assert_eq!(write_and_close_errno(&path, b"{not json"), libc::EINVAL);
    let errors = std::fs::read_to_string(f.mount.path(".ciofs/errors")).unwrap();
    assert!(errors.lines().last().unwrap_or_default().contains("line 1"), "{errors}");
    // A key left out is removed: sent as null, which removes it on Cloud
    // Storage; fake-gcs-server keeps the key with an empty value.
    assert_eq!(write_and_close_errno(&path, br#"{"custom_metadata": {"owner": "me"}}"#), 0);
    let after = object_json(&f.bucket, "x.txt");
    let team = after["metadata"].get("team").and_then(|v| v.as_str()).unwrap_or_default();
    assert_eq!((team, &after["metadata"]["owner"]), ("", &json!("me")), "{after}");
    // Editors: sed -i (a temporary file renamed over the document) and vim
    // in both save modes.
    ok(&format!("sed -i 's/\"me\"/\"sed\"/' {d}/.meta/x.txt.json"));
    assert_eq!(object_json(&f.bucket, "x.txt")["metadata"]["owner"], json!("sed"));
    for (mode, owner) in [("yes", "vim-yes"), ("no", "vim-no")] {
        let edit = format!("%s/\"owner\": \"[a-z-]*\"/\"owner\": \"{owner}\"/");
        ok(&format!("vim -u NONE -es -c 'set backupcopy={mode} backup' -c '{edit}' -c wq {d}/.meta/x.txt.json"));
        assert_eq!(object_json(&f.bucket, "x.txt")["metadata"]["owner"], json!(owner), "backupcopy={mode}");
    }
    assert_eq!(object_json(&f.bucket, "x.txt")["generation"], before["generation"], "metadata only");
    // tar x's order: the document before its object, which is then uploaded
    // with it.
    let doc = r#"{"content_type": "application/json", "custom_metadata": {"source": "export"}}"#;
    assert_eq!(write_and_close_errno(&PathBuf::from(format!("{d}/.meta/new.json.json")), doc.as_bytes()), 0);
    assert_eq!(write_and_close_errno(&PathBuf::from(format!("{d}/new.json")), b"{}"), 0);
    let new = object_json(&f.bucket, "new.json");
    assert_eq!((&new["contentType"], &new["metadata"]), (&json!("application/json"), &json!({"source": "export"})));
}

/// How long after the service froze a close or fsync must report it: one
/// backend call's retry window (60 s) and one stall (30 s) with the
/// defaults, with room for the streamed request that stalled first.
const EIO_WITHIN: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs `dd bs=1M count=64 iflag=fullblock conv=fsync of=PATH`, feeding
/// `data` (64 MiB) on its stdin; `midway` runs once dd has taken half of it.
/// Returns whether dd succeeded, its stderr, and how long it ran after
/// `midway` began. A dd still running after 10 minutes fails the test.
fn dd_with_pause(path: &str, data: &[u8], midway: impl FnOnce()) -> (bool, String, std::time::Duration) {
    use std::io::Read;
    let mut child = Command::new("dd")
        .args(["if=/dev/stdin", &format!("of={path}"), "bs=1M", "count=64", "iflag=fullblock", "conv=fsync"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let (first, second) = data.split_at(data.len() / 2);
    stdin.write_all(first).unwrap();
    let started = std::time::Instant::now();
    midway();
    stdin.write_all(second).unwrap();
    drop(stdin);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(600), "dd still runs after 10 minutes");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let elapsed = started.elapsed();
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (status.success(), stderr, elapsed)
}

#[test]
fn a_frozen_service_fails_fsync_within_two_minutes_and_the_same_dd_works_once_it_is_back() {
    let (gcs, mount, path) = faults_fixture();
    let data = pattern(64 << 20, 11);
    // Frozen half way: the streamed request is open and has bytes to send,
    // and the file's whole upload that follows its failure stalls too.
    let (succeeded, stderr, elapsed) = dd_with_pause(&path, &data, || gcs.freeze());
    assert!(!succeeded, "dd reports the failed fsync: {stderr}");
    assert!(stderr.contains("Input/output error"), "EIO: {stderr}");
    eprintln!("fsync failed {:.1} s after the freeze", elapsed.as_secs_f64());
    assert!(
        elapsed <= EIO_WITHIN,
        "EIO came {elapsed:?} after the freeze, not within {EIO_WITHIN:?}:\n{}",
        mount.log_text()
    );
    gcs.thaw();
    assert_previous_intact(&gcs);
    // Once the service answers again, the same command succeeds.
    let (succeeded, stderr, _) = dd_with_pause(&path, &data, || {});
    assert!(succeeded, "dd after the thaw: {stderr}\n{}", mount.log_text());
    let stored = curl(&[&format!("{}/storage/v1/b/faults/o/f.bin?alt=media", gcs.url())]);
    assert!(stored == data, "the object holds {} other bytes", stored.len());
}

/// `--stall-timeout` reaches the mount's calls: with 2 s, a lookup on a
/// frozen service gives EIO once its attempts are spent (5 of 2 s), long
/// before one attempt of the default 30 s would have ended.
#[test]
fn the_stall_timeout_option_bounds_each_attempt() {
    let gcs = PrivateGcs::start();
    let url = gcs.url();
    curl(&["-X", "POST", &format!("{url}/storage/v1/b?project={PROJECT}"), "-d", "{\"name\":\"faults\"}"]);
    let mount = FuseMount::start_with_env(&["--stall-timeout", "2"], &[("STORAGE_EMULATOR_HOST", &url)]);
    let path = mount.path(&format!("{PROJECT}/storage/faults/never-seen.bin"));
    gcs.freeze();
    let started = std::time::Instant::now();
    let error = std::fs::metadata(&path).expect_err("the service is frozen");
    let elapsed = started.elapsed();
    gcs.thaw();
    assert_eq!(error.raw_os_error(), Some(libc::EIO), "{error}");
    assert!(elapsed < std::time::Duration::from_secs(20), "EIO after {elapsed:?}:\n{}", mount.log_text());
    // Each attempt ended by the stall timeout: the watchdog's "no progress"
    // or the HTTP client's read timeout, set to it; both say Stalled.
    let log = mount.log_text();
    assert!(log.contains("error=Stalled"), "{log}");
}
