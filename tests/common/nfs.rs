//! A userspace NFSv3 client's calls, for the tests of `ciofs serve-nfs`, the
//! NFS adapter's tests (frontends/tests) and examples/nfs_throughput.rs
//! (this kernel has no NFS client).

use nfs3_client::nfs3_types::nfs3::{
    LOOKUP3args, Nfs3Option, Nfs3Result, READ3args, READDIRPLUS3args, WRITE3args, diropargs3, nfs_fh3, nfsstat3,
    stable_how,
};
use nfs3_client::tokio::{TokioConnector, TokioIo};
use nfs3_client::{Nfs3Connection, Nfs3ConnectionBuilder};
use tokio::net::TcpStream;

pub type Conn = Nfs3Connection<TokioIo<TcpStream>>;

pub async fn connect(port: u16) -> Conn {
    connect_to("127.0.0.1", port).await
}

/// Mounts the export of the server at `host` (an address), all of whose
/// services answer on `port`.
pub async fn connect_to(host: &str, port: u16) -> Conn {
    Nfs3ConnectionBuilder::new(TokioConnector, host, "/")
        .portmapper_port(port)
        .mount_port(port)
        .nfs3_port(port)
        .connect_from_privileged_port(false)
        .mount()
        .await
        .expect("NFS mount")
}

pub async fn lookup(conn: &mut Conn, dir: &nfs_fh3, name: &str) -> Result<nfs_fh3, nfsstat3> {
    let args = LOOKUP3args { what: diropargs3 { dir: dir.clone(), name: name.as_bytes().into() } };
    match conn.lookup(&args).await.expect("lookup call") {
        Nfs3Result::Ok(ok) => Ok(ok.object),
        Nfs3Result::Err((status, _)) => Err(status),
    }
}

pub async fn walk(conn: &mut Conn, path: &str) -> nfs_fh3 {
    let mut fh = conn.root_nfs_fh3();
    for part in path.split('/') {
        fh = lookup(conn, &fh, part).await.unwrap_or_else(|e| panic!("lookup {part} of {path}: {e:?}"));
    }
    fh
}

pub async fn read(conn: &mut Conn, fh: &nfs_fh3, offset: u64, count: u32) -> (Vec<u8>, bool) {
    let ok = conn.read(&READ3args { file: fh.clone(), offset, count }).await.expect("read call").unwrap();
    (ok.data.to_vec(), ok.eof)
}

/// Every name in a directory, through READDIRPLUS pages of about `maxcount` bytes.
pub async fn list(conn: &mut Conn, dir: &nfs_fh3, maxcount: u32) -> (Vec<String>, usize) {
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

pub fn dirop<'a>(dir: &nfs_fh3, name: &'a str) -> diropargs3<'a> {
    diropargs3 { dir: dir.clone(), name: name.as_bytes().into() }
}

pub async fn write(conn: &mut Conn, fh: &nfs_fh3, offset: u64, data: &[u8]) {
    let args = WRITE3args {
        file: fh.clone(),
        offset,
        count: data.len() as u32,
        stable: stable_how::FILE_SYNC,
        data: data.into(),
    };
    let ok = conn.write(&args).await.expect("write call").unwrap();
    assert_eq!(ok.count as usize, data.len());
}
