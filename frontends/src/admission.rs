//! Who gets into nfsserve: only the relay (`rpc_records`), whose
//! connections carry requests already checked. nfsserve listens on a
//! loopback port that every local user could connect to; on Linux a socket
//! filter on that listening socket passes only TCP segments from 127.0.0.1
//! and a source port the relay holds, so a connection from anyone else is
//! never set up (its SYN is dropped). Each relay connection takes a
//! `Ticket`: a socket bound to a port of its own, admitted until dropped.
//!
//! nfsserve does not hand out its listening socket: it is found among the
//! process's descriptors by its address (without opening any: a restart
//! usually follows running out of them) and held as a duplicate descriptor
//! of our own while guarded, so the filter is only ever set on that socket
//! (a bare number could by then name another one). On Linux a socket that
//! cannot be guarded is an error, for the caller to close rather than
//! serve. Where there are no socket filters (not Linux), `guard` says so in
//! the log and the port stays open to local users.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::net::TcpSocket;
use tracing::warn;

/// The relay's ports admitted into nfsserve's guarded listening socket.
#[derive(Default)]
pub struct Admission {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// nfsserve's listening socket (our duplicate of it) while guarded.
    listener: Option<OwnedFd>,
    /// How many times a socket was guarded: names the `Guarded` in force.
    guarded: u64,
    /// The source ports of the relay's live connections.
    ports: Vec<u16>,
}

/// nfsserve's listening socket is guarded while this lives; dropped when
/// that socket is closed or replaced, so the socket is let go.
pub struct Guarded<'a> {
    admission: &'a Admission,
    number: u64,
}

/// A port admitted into nfsserve while this lives.
pub struct Ticket {
    admission: Arc<Admission>,
    port: u16,
}

impl Admission {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Guards the listening socket at `address` (nfsserve's, just made)
    /// until the returned `Guarded` is dropped: from now on only the ports
    /// of live tickets get in. Connections made to it before are closed.
    /// Replaces a socket guarded before. An error leaves the socket
    /// half guarded: close it.
    pub fn guard(&self, address: SocketAddr) -> io::Result<Guarded<'_>> {
        let mut state = self.lock();
        state.guarded += 1;
        state.listener = None;
        if filter::SUPPORTED {
            let listener = filter::listening_socket(address)?;
            filter::admit_only(listener.as_fd(), &state.ports)?;
            filter::close_waiting(listener.as_fd())?;
            state.listener = Some(listener);
        } else {
            warn!(%address, "nfsserve's port stays open to local users: sockets cannot be filtered here");
        }
        Ok(Guarded { admission: self, number: state.guarded })
    }

    /// A socket to connect to nfsserve with, bound to a port of its own
    /// (on every address, so nobody else can take it), admitted until the
    /// ticket is dropped.
    pub fn ticket(self: &Arc<Self>) -> io::Result<(TcpSocket, Ticket)> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::from(([0, 0, 0, 0], 0)))?;
        let port = socket.local_addr()?.port();
        let mut state = self.lock();
        state.ports.push(port);
        if let Some(listener) = &state.listener
            && let Err(e) = filter::admit_only(listener.as_fd(), &state.ports)
        {
            state.ports.pop();
            return Err(e);
        }
        Ok((socket, Ticket { admission: self.clone(), port }))
    }
}

impl Drop for Guarded<'_> {
    fn drop(&mut self) {
        let mut state = self.admission.lock();
        if state.guarded == self.number {
            state.listener = None;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut state = self.admission.lock();
        state.ports.retain(|port| *port != self.port);
        if let Some(listener) = &state.listener
            && let Err(e) = filter::admit_only(listener.as_fd(), &state.ports)
        {
            warn!("cannot update the filter of nfsserve's port: {e}");
        }
    }
}

#[cfg(target_os = "linux")]
mod filter {
    use std::io;
    use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
    use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

    pub const SUPPORTED: bool = true;

    use libc::{
        BPF_ABS, BPF_H, BPF_JEQ, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W, SKF_NET_OFF, SO_ATTACH_FILTER, sock_filter,
        sock_fprog,
    };

    /// Among this process's descriptors, the TCP socket listening on
    /// `address`, duplicated. Each possible descriptor number is tried:
    /// listing /proc/self/fd would need a descriptor of its own.
    pub fn listening_socket(address: SocketAddr) -> io::Result<OwnedFd> {
        let SocketAddr::V4(wanted) = address else {
            return Err(io::Error::other(format!("{address} is not an IPv4 address")));
        };
        let fd = (0..open_files_limit())
            .find(|fd| bound_to(*fd) == Some(wanted) && listening(*fd))
            .ok_or_else(|| io::Error::other(format!("no socket of this process listens on {address}")))?;
        // SAFETY: `fd` is open (nfsserve's listener, which the caller
        // holds) for the duration of this borrow.
        unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned()
    }

    /// How many descriptors the process may have open: numbers are below.
    fn open_files_limit() -> i32 {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct it is given.
        let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
        if known { i32::try_from(limit.rlim_cur).unwrap_or(i32::MAX) } else { i32::MAX }
    }

    fn bound_to(fd: i32) -> Option<SocketAddrV4> {
        // SAFETY: an all-zero sockaddr_in is valid; getsockname writes at
        // most `len` bytes into it and fails on a descriptor that is not a
        // socket.
        let mut address: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let done = unsafe { libc::getsockname(fd, (&raw mut address).cast(), &mut len) };
        if done != 0 || i32::from(address.sin_family) != libc::AF_INET {
            return None;
        }
        let ip = Ipv4Addr::from(u32::from_be(address.sin_addr.s_addr));
        Some(SocketAddrV4::new(ip, u16::from_be(address.sin_port)))
    }

    fn listening(fd: i32) -> bool {
        let (mut value, mut len) = (0i32, std::mem::size_of::<i32>() as libc::socklen_t);
        // SAFETY: SO_ACCEPTCONN writes one int.
        let done =
            unsafe { libc::getsockopt(fd, libc::SOL_SOCKET, libc::SO_ACCEPTCONN, (&raw mut value).cast(), &mut len) };
        done == 0 && value == 1
    }

    fn instruction(code: u32, jt: u8, jf: u8, k: u32) -> sock_filter {
        sock_filter { code: code as u16, jt, jf, k }
    }

    /// The program: a segment from 127.0.0.1 and one of `ports` passes,
    /// any other is dropped. A TCP socket's filter sees the TCP header at
    /// offset 0 (the source port) and the IP header at `SKF_NET_OFF`.
    pub fn program(ports: &[u16]) -> Vec<sock_filter> {
        // The jumps are 8 bits: at most 253 ports fit.
        let ports = &ports[..ports.len().min(253)];
        let n = ports.len() as u8;
        let mut code = vec![
            instruction(BPF_LD | BPF_W | BPF_ABS, 0, 0, (SKF_NET_OFF + 12) as u32),
            instruction(BPF_JMP | BPF_JEQ | BPF_K, 0, n + 1, u32::from(Ipv4Addr::LOCALHOST)),
            instruction(BPF_LD | BPF_H | BPF_ABS, 0, 0, 0),
        ];
        for (i, port) in ports.iter().enumerate() {
            code.push(instruction(BPF_JMP | BPF_JEQ | BPF_K, n - i as u8, 0, u32::from(*port)));
        }
        code.push(instruction(BPF_RET | BPF_K, 0, 0, 0));
        code.push(instruction(BPF_RET | BPF_K, 0, 0, u32::MAX));
        code
    }

    /// Sets `program(ports)` on `socket`, replacing the one it had.
    pub fn admit_only(socket: BorrowedFd, ports: &[u16]) -> io::Result<()> {
        let mut code = program(ports);
        let filter = sock_fprog { len: code.len() as u16, filter: code.as_mut_ptr() };
        let len = std::mem::size_of::<sock_fprog>() as libc::socklen_t;
        // SAFETY: the kernel copies the program `filter` points to, which
        // lives until the call returns.
        let done = unsafe {
            libc::setsockopt(socket.as_raw_fd(), libc::SOL_SOCKET, SO_ATTACH_FILTER, (&raw const filter).cast(), len)
        };
        if done != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Closes the connections waiting on `listener` (made before it was
    /// guarded), without blocking: it is non-blocking. Failing to take
    /// one (no descriptor left, say) is an error: it would be served.
    pub fn close_waiting(listener: BorrowedFd) -> io::Result<()> {
        loop {
            // SAFETY: accept4 on a listening socket we own; the peer's
            // address is not asked for.
            let accepted = unsafe {
                libc::accept4(listener.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_CLOEXEC)
            };
            if accepted >= 0 {
                // SAFETY: accept4 just returned this descriptor to us.
                drop(unsafe { OwnedFd::from_raw_fd(accepted) });
                continue;
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::WouldBlock => return Ok(()),
                io::ErrorKind::Interrupted | io::ErrorKind::ConnectionAborted => {}
                _ => return Err(e),
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod filter {
    use std::io;
    use std::net::SocketAddr;
    use std::os::fd::{BorrowedFd, OwnedFd};

    pub const SUPPORTED: bool = false;

    pub fn listening_socket(_: SocketAddr) -> io::Result<OwnedFd> {
        Err(io::ErrorKind::Unsupported.into())
    }

    pub fn admit_only(_: BorrowedFd, _: &[u16]) -> io::Result<()> {
        Ok(())
    }

    pub fn close_waiting(_: BorrowedFd) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Of two clients of a guarded listener, the one with a ticket gets in
    /// and sends; the other never connects.
    #[tokio::test]
    async fn only_ticket_holders_get_through() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let admission = Admission::new();
        let _guarded = admission.guard(address).unwrap();
        assert!(admission.lock().listener.is_some(), "the listening socket was found");
        let (socket, ticket) = admission.ticket().unwrap();
        let mut admitted = socket.connect(address).await.unwrap();
        let (mut accepted, _) = listener.accept().await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        admitted.write_all(&[7; 100_000]).await.unwrap();
        let mut received = vec![0; 100_000];
        accepted.read_exact(&mut received).await.unwrap();
        assert!(received.iter().all(|b| *b == 7));
        let other = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(address)).await;
        assert!(!matches!(other, Ok(Ok(_))), "a connection without a ticket got through");
        drop(ticket);
        assert!(admission.lock().ports.is_empty());
    }

    /// Once the guarded listener's descriptor number refers to another
    /// socket (the listener closed, the number taken again), tickets leave
    /// that socket alone: anyone still connects to it.
    #[test]
    fn tickets_leave_alone_a_socket_that_took_the_listeners_number() {
        use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
        let guarded = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        guarded.set_nonblocking(true).unwrap();
        let admission = Admission::new();
        let _guarded = admission.guard(guarded.local_addr().unwrap()).unwrap();
        let number = guarded.into_raw_fd();
        let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // The listener's number now names `other` (dup2 closes the
        // listener's descriptor first, atomically).
        // SAFETY: `number` is ours (into_raw_fd); it is closed below.
        assert_eq!(unsafe { libc::dup2(other.as_raw_fd(), number) }, number);
        let _number = unsafe { OwnedFd::from_raw_fd(number) };
        let _ticket = admission.ticket().unwrap();
        let address = other.local_addr().unwrap();
        let connected = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2));
        assert!(connected.is_ok(), "the filter was set on an unrelated socket: {connected:?}");
    }

    /// A ticket whose port cannot be admitted (the listener's filter is
    /// locked) is an error and leaves no port admitted.
    #[test]
    fn a_ticket_that_cannot_be_admitted_leaves_no_port() {
        use std::os::fd::AsRawFd;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let admission = Admission::new();
        let _guarded = admission.guard(listener.local_addr().unwrap()).unwrap();
        let one = 1i32;
        let len = std::mem::size_of::<i32>() as libc::socklen_t;
        // SAFETY: SO_LOCK_FILTER reads one int.
        let locked = unsafe {
            libc::setsockopt(listener.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LOCK_FILTER, (&raw const one).cast(), len)
        };
        assert_eq!(locked, 0);
        assert!(admission.ticket().is_err(), "a locked filter took a port");
        assert_eq!(admission.lock().ports, Vec::<u16>::new());
    }

    #[test]
    fn the_program_passes_listed_ports_from_loopback_only() {
        let code = filter::program(&[1000, 2000]);
        assert_eq!(code.len(), 7);
        // Source address check jumps past the ports to "drop".
        assert_eq!((code[1].jf, code[5].k), (3, 0));
        // Each port jumps to "pass".
        assert_eq!((code[3].jt, code[4].jt, code[6].k), (2, 1, u32::MAX));
        assert_eq!(filter::program(&[]).len(), 5);
    }
}
