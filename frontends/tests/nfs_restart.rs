//! nfsserve's accept loop started anew on a new loopback port after its
//! accept failed: the new port lets nobody but the relay in, even when the
//! process was out of descriptors as it was made, and clients of the relay
//! are served. The accept is made to fail by shutting nfsserve's listening
//! socket down. The tests run one at a time: they tell nfsserve's listening
//! sockets by looking at all of this process's, and one takes all of its
//! descriptors for a while.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use ciofs_frontends::nfs::serve;
use ciofs_frontends::{Attr, DirPage, Fh, FileKind, Ino, ROOT_INO, Vfs, VfsError, VfsResult};
use nfs3_client::Nfs3ConnectionBuilder;
use nfs3_client::nfs3_types::nfs3::GETATTR3args;
use nfs3_client::tokio::TokioConnector;
use tokio::sync::{Mutex, oneshot};

/// One test at a time (see the header).
static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// An empty root directory.
struct Empty;

#[async_trait]
impl Vfs for Empty {
    async fn lookup(&self, _parent: Ino, name: &str) -> VfsResult<Attr> {
        Err(VfsError::not_found(name))
    }

    async fn getattr(&self, ino: Ino) -> VfsResult<Attr> {
        if ino != ROOT_INO {
            return Err(VfsError::not_found(ino));
        }
        Ok(Attr {
            ino,
            kind: FileKind::Directory,
            size: 0,
            mtime: UNIX_EPOCH,
            perm: 0o755,
            nlink: 2,
            uid: 0,
            gid: 0,
            generation: 1,
            cacheable: false,
        })
    }

    fn generation(&self, ino: Ino) -> Option<u64> {
        (ino == ROOT_INO).then_some(1)
    }

    async fn readdir(&self, _dir: Ino, _fh: Option<Fh>, _after: Ino, _max: usize) -> VfsResult<DirPage> {
        Ok(DirPage { entries: Vec::new(), eof: true })
    }

    async fn read(&self, _ino: Ino, _fh: Option<Fh>, _offset: u64, _len: u32) -> VfsResult<(Bytes, bool)> {
        Err(VfsError::new(libc::EISDIR, "a directory"))
    }
}

/// This process's TCP sockets listening on 127.0.0.1 other than on
/// `outer` and on the addresses of `others`, each by one of its
/// descriptors (there may be several).
fn inner_listeners(outer: SocketAddr, others: &[(i32, SocketAddr)]) -> Vec<(i32, SocketAddr)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct it is given.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) }, 0);
    let mut found: Vec<(i32, SocketAddr)> = (0..i32::try_from(limit.rlim_cur).unwrap_or(i32::MAX))
        .filter_map(|fd| Some((fd, bound_to(fd)?)))
        .filter(|(fd, address)| *address != outer && listening(*fd))
        .filter(|(_, address)| others.iter().all(|(_, other)| other != address))
        .collect();
    found.sort_by_key(|(_, address)| *address);
    found.dedup_by_key(|(_, address)| *address);
    found
}

fn bound_to(fd: i32) -> Option<SocketAddr> {
    // SAFETY: getsockname writes at most `len` bytes into the struct.
    let mut address: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    let done = unsafe { libc::getsockname(fd, (&raw mut address).cast(), &mut len) };
    let ip = Ipv4Addr::from(u32::from_be(address.sin_addr.s_addr));
    (done == 0 && i32::from(address.sin_family) == libc::AF_INET && ip.is_loopback())
        .then(|| SocketAddrV4::new(ip, u16::from_be(address.sin_port)).into())
}

fn listening(fd: i32) -> bool {
    let (mut value, mut len) = (0i32, std::mem::size_of::<i32>() as libc::socklen_t);
    // SAFETY: SO_ACCEPTCONN writes one int.
    let done =
        unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN, (&raw mut value).cast(), &mut len) };
    done == 0 && value == 1
}

/// Every descriptor this process may still open, until dropped.
fn take_every_descriptor() -> Vec<OwnedFd> {
    std::iter::from_fn(|| std::fs::File::open("/dev/null").ok().map(OwnedFd::from)).collect()
}

/// Fails nfsserve's accept loop (by shutting its socket down) and waits for
/// the one started anew; `while_restarting` runs meanwhile. Then nobody
/// connects straight to the new port, and a client of the relay is served.
async fn restart(while_restarting: impl AsyncFnOnce()) {
    let _one = ONE_AT_A_TIME.lock().await;
    restart_locked(while_restarting).await;
}

/// `restart`, for a caller that holds `ONE_AT_A_TIME`: every socket this
/// process listens on changes only under that lock, but for a server of an
/// earlier test that is still going away.
async fn restart_locked(while_restarting: impl AsyncFnOnce()) {
    // Another test's server may still listen: its runtime goes only after
    // that test released the lock.
    let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
    let others = inner_listeners(unspecified, &[]);
    let (tx, rx) = oneshot::channel();
    let server = tokio::spawn(serve(Arc::new(Empty), "127.0.0.1:0".parse().unwrap(), Some(tx)));
    let outer = rx.await.unwrap();
    let before = inner_listeners(outer, &others);
    assert_eq!(before.len(), 1, "nfsserve's listening socket: {before:?}");
    // SAFETY: a listening socket of this process; it stays open.
    assert_eq!(unsafe { libc::shutdown(before[0].0, libc::SHUT_RDWR) }, 0);
    while_restarting().await;
    let started_anew = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match inner_listeners(outer, &others).as_slice() {
                [(_, address)] if *address != before[0].1 => return *address,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    let inner = started_anew.await.expect("nfsserve listens anew");
    let straight = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(inner)).await;
    assert!(!matches!(straight, Ok(Ok(_))), "connected straight to nfsserve's new port {inner}");
    let served = tokio::time::timeout(Duration::from_secs(10), async {
        let mut client = Nfs3ConnectionBuilder::new(TokioConnector, outer.ip().to_string(), "/")
            .portmapper_port(outer.port())
            .mount_port(outer.port())
            .nfs3_port(outer.port())
            .connect_from_privileged_port(false)
            .mount()
            .await
            .expect("mount");
        let root = client.root_nfs_fh3();
        client.getattr(&GETATTR3args { object: root }).await.unwrap().unwrap();
    });
    served.await.expect("a client of the relay is served");
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nfsserve_listening_anew_lets_only_the_relay_in() {
    restart(async || {}).await;
}

/// A socket listening in this process that is not nfsserve's (another
/// test's server, still there) is told apart from nfsserve's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_listener_in_the_process_is_not_taken_for_nfsserve_s() {
    let _one = ONE_AT_A_TIME.lock().await;
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    restart_locked(async || {}).await;
    drop(other);
}

/// While nfsserve listens anew, the process has no descriptor to spare
/// (the usual reason its accept failed), then one, then plenty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nfsserve_listening_anew_out_of_descriptors_lets_only_the_relay_in() {
    restart(async || {
        let mut taken = take_every_descriptor();
        tokio::time::sleep(Duration::from_millis(300)).await;
        taken.pop();
        tokio::time::sleep(Duration::from_millis(500)).await;
    })
    .await;
}
