//! The same Cloud Storage tree through `ciofs serve-nfs`, driven by a
//! userspace NFSv3 client (this kernel has none): lookup, paged
//! READDIRPLUS, reads at offsets, and handles that stay valid across a
//! restart of the server.

mod common;

use common::*;
use nfs3_client::nfs3_types::nfs3::{
    GETATTR3args, LOOKUP3args, Nfs3Option, Nfs3Result, READ3args, READDIRPLUS3args, diropargs3, nfs_fh3, nfsstat3,
};
use nfs3_client::tokio::{TokioConnector, TokioIo};
use nfs3_client::{Nfs3Connection, Nfs3ConnectionBuilder};
use tokio::net::TcpStream;

type Conn = Nfs3Connection<TokioIo<TcpStream>>;

async fn connect(port: u16) -> Conn {
    Nfs3ConnectionBuilder::new(TokioConnector, "127.0.0.1", "/")
        .portmapper_port(port)
        .mount_port(port)
        .nfs3_port(port)
        .connect_from_privileged_port(false)
        .mount()
        .await
        .expect("NFS mount")
}

async fn lookup(conn: &mut Conn, dir: &nfs_fh3, name: &str) -> Result<nfs_fh3, nfsstat3> {
    let args = LOOKUP3args { what: diropargs3 { dir: dir.clone(), name: name.as_bytes().into() } };
    match conn.lookup(&args).await.expect("lookup call") {
        Nfs3Result::Ok(ok) => Ok(ok.object),
        Nfs3Result::Err((status, _)) => Err(status),
    }
}

async fn walk(conn: &mut Conn, path: &str) -> nfs_fh3 {
    let mut fh = conn.root_nfs_fh3();
    for part in path.split('/') {
        fh = lookup(conn, &fh, part).await.unwrap_or_else(|e| panic!("lookup {part} of {path}: {e:?}"));
    }
    fh
}

async fn read(conn: &mut Conn, fh: &nfs_fh3, offset: u64, count: u32) -> (Vec<u8>, bool) {
    let ok = conn.read(&READ3args { file: fh.clone(), offset, count }).await.expect("read call").unwrap();
    (ok.data.to_vec(), ok.eof)
}

/// Every name in a directory, through READDIRPLUS pages of about `maxcount` bytes.
async fn list(conn: &mut Conn, dir: &nfs_fh3, maxcount: u32) -> (Vec<String>, usize) {
    let (mut names, mut pages, mut cookie, mut cookieverf) = (Vec::new(), 0, 0, Default::default());
    loop {
        let args = READDIRPLUS3args { dir: dir.clone(), cookie, cookieverf, dircount: maxcount / 4, maxcount };
        let ok = conn.readdirplus(&args).await.expect("readdirplus call").unwrap();
        pages += 1;
        let entries = ok.reply.entries.into_inner();
        for entry in &entries {
            assert!(matches!(entry.name_attributes, Nfs3Option::Some(_)), "readdirplus gives attributes");
            names.push(String::from_utf8(entry.name.0.to_vec()).expect("utf-8 name"));
        }
        if ok.reply.eof {
            return (names, pages);
        }
        cookie = entries.last().expect("a page before eof has entries").cookie;
        cookieverf = ok.cookieverf;
        assert!(pages < 10_000, "listing does not end");
    }
}

#[tokio::test]
async fn lookup_readdirplus_and_reads_at_offsets() {
    let bucket = bucket_name("nfs_reads");
    create_bucket(&bucket);
    let big = pattern(2 * 1024 * 1024 + 7, 3);
    upload(&bucket, "data/big.bin", &big);
    let mut expected: Vec<String> = (0..300).map(|i| format!("n{i:04}")).collect();
    for name in &expected {
        upload(&bucket, &format!("many/{name}"), name.as_bytes());
    }
    let state = tempfile::tempdir().unwrap();
    let server = NfsServer::start(state.path());
    let mut conn = connect(server.port).await;

    let file = walk(&mut conn, &format!("{PROJECT}/storage/{bucket}/data/big.bin")).await;
    let attr = conn.getattr(&GETATTR3args { object: file.clone() }).await.unwrap().unwrap().obj_attributes;
    assert_eq!(attr.size, big.len() as u64);
    for (offset, count) in [(0u64, 65_536u32), (1_000_003, 4096), (big.len() as u64 - 10, 100)] {
        let (data, eof) = read(&mut conn, &file, offset, count).await;
        let end = (offset + u64::from(count)).min(big.len() as u64);
        assert!(data == read_range(&bucket, "data/big.bin", offset, end - 1), "read at {offset}");
        assert_eq!(eof, end == big.len() as u64);
    }

    let many = walk(&mut conn, &format!("{PROJECT}/storage/{bucket}/many")).await;
    let (names, pages) = list(&mut conn, &many, 4096).await;
    expected.insert(0, ".meta".to_string());
    assert_eq!(names, expected, "every entry once, in order");
    assert!(pages > 3, "several pages expected, got {pages}");

    let root = conn.root_nfs_fh3();
    assert_eq!(lookup(&mut conn, &root, "no-such-project").await, Err(nfsstat3::NFS3ERR_NOENT));
    let meta = walk(&mut conn, &format!("{PROJECT}/storage/{bucket}/many/.meta/n0007.json")).await;
    let (document, eof) = read(&mut conn, &meta, 0, 1 << 20).await;
    assert!(eof);
    let document: serde_json::Value = serde_json::from_slice(&document).unwrap();
    assert_eq!(document["name"], "many/n0007");
}

#[tokio::test]
async fn handles_stay_valid_across_a_server_restart() {
    let bucket = bucket_name("nfs_restart");
    create_bucket(&bucket);
    upload(&bucket, "keep/file.txt", b"survives a restart\n");
    let state = tempfile::tempdir().unwrap();

    let (file, dir) = {
        let server = NfsServer::start(state.path());
        let mut conn = connect(server.port).await;
        let dir = walk(&mut conn, &format!("{PROJECT}/storage/{bucket}/keep")).await;
        let file = lookup(&mut conn, &dir, "file.txt").await.unwrap();
        assert_eq!(read(&mut conn, &file, 0, 100).await.0, b"survives a restart\n");
        (file, dir)
        // The server stops here.
    };

    let server = NfsServer::start(state.path());
    let mut conn = connect(server.port).await;
    // The old handles, never looked up on this server, still work.
    let attr = conn.getattr(&GETATTR3args { object: file.clone() }).await.unwrap().unwrap().obj_attributes;
    assert_eq!(attr.size, 19);
    assert_eq!(read(&mut conn, &file, 9, 100).await.0, b"a restart\n");
    let (names, _) = list(&mut conn, &dir, 8192).await;
    assert_eq!(names, [".meta", "file.txt"]);

    // A handle the server never issued is refused, never another file.
    let mut bogus = file.clone();
    bogus.data.0.to_mut()[0] ^= 0x5a;
    let status = match conn.getattr(&GETATTR3args { object: bogus }).await.unwrap() {
        Nfs3Result::Ok(_) => nfsstat3::NFS3_OK,
        Nfs3Result::Err((status, _)) => status,
    };
    assert!(matches!(status, nfsstat3::NFS3ERR_STALE | nfsstat3::NFS3ERR_BADHANDLE), "{status:?}");
}
