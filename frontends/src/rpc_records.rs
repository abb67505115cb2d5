//! The TCP front of the NFS server: RPC record marking checked before
//! nfsserve reads it.
//!
//! Over TCP each RPC message is a record of fragments, each behind a 4-byte
//! header: a last-fragment bit and a 31-bit length (RFC 5531, section 11).
//! nfsserve 0.11 allocates the length a header announces before reading it,
//! so one header of 0x7fffffff from any client makes it allocate 2 GiB, and
//! a record of fragments that never ends grows without bound. nfsserve has
//! no entry point for a stream of ours (it serves only the sockets its own
//! listener accepts), so ciofs accepts the clients itself and relays each
//! connection to nfsserve, listening on a loopback port of its own. The
//! relay passes on what it reads as it reads it, in one write per read,
//! following the record marking as it goes (`Records`): a fragment or
//! record longer than `MAX_RECORD` closes the connection before its header
//! is passed on, and nothing is allocated for it.
//!
//! Replies pass unchanged but one: nfsserve answers a portmapper GETPORT
//! with the port it listens on, which is the relay's target and not the
//! port clients connect to; the relay writes its own port in that answer.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tracing::{debug, warn};

use crate::admission::Admission;

/// The longest request taken: a WRITE of `MAX_TRANSFER` bytes (FSINFO's
/// wtmax) with its RPC header, credentials and file handle, which take
/// well under a KiB; the rest is margin.
pub const MAX_RECORD: usize = crate::nfs::MAX_TRANSFER as usize + (64 << 10);

/// The most one read takes (a connection holds two such buffers).
const CHUNK: usize = 256 << 10;

/// An RPC call's first words: xid, message type, RPC version, program,
/// version, procedure.
const CALL_HEAD: usize = 24;
/// The portmapper program and its GETPORT procedure (RFC 1833).
const PORTMAP: u32 = 100_000;
const GETPORT: u32 = 3;
/// nfsserve's GETPORT reply: xid, REPLY, MSG_ACCEPTED, an empty AUTH_NONE
/// verifier (flavor, length), SUCCESS, the port.
const GETPORT_REPLY: usize = 28;

/// The most connections relayed at once. Each holds three descriptors
/// (the client's, the relay's to nfsserve and nfsserve's) and two buffers;
/// a client that opens more gets them closed at once, so that descriptors
/// do not run out (`connection_limit` lowers it under a low limit).
const MAX_CONNECTIONS: usize = 128;
/// Descriptors left for the rest of the process (Google connections,
/// staging files, journals) when `connection_limit` shares them out.
const OTHER_DESCRIPTORS: u64 = 64;
/// How long accepting pauses after it failed (no descriptor left, say).
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// Accepts clients on `listener` and relays each to the NFS server
/// `behind` names (it changes when nfsserve listens anew). Serves until
/// the future is dropped: a failed accept is logged and tried again.
pub async fn relay_clients(listener: TcpListener, behind: watch::Receiver<SocketAddr>, admission: Arc<Admission>) {
    let port = listener.local_addr().map_or(0, |address| address.port());
    let open = Arc::new(Semaphore::new(connection_limit()));
    // Said once per flood, not once per connection refused.
    let mut refusing = false;
    loop {
        let (client, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!("cannot accept an NFS connection: {e}; trying again");
                tokio::time::sleep(ACCEPT_PAUSE).await;
                continue;
            }
        };
        let Ok(slot) = open.clone().try_acquire_owned() else {
            if !refusing {
                warn!(%peer, "NFS connections refused: {} are open already", open_count(&open));
            }
            refusing = true;
            continue;
        };
        refusing = false;
        let (nfs, admission) = (*behind.borrow(), admission.clone());
        tokio::spawn(async move {
            match relay(client, nfs, port, &admission).await {
                Ok(()) => debug!(%peer, "NFS connection ended"),
                Err(e) => warn!(%peer, "NFS connection closed: {e}"),
            }
            drop(slot);
        });
    }
}

fn open_count(open: &Semaphore) -> usize {
    connection_limit().saturating_sub(open.available_permits())
}

/// `MAX_CONNECTIONS`, or fewer when the process may not open enough files
/// for them and the rest.
fn connection_limit() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct it is given.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let files = if known { limit.rlim_cur } else { libc::rlim_t::MAX };
    let shared = files.saturating_sub(OTHER_DESCRIPTORS) / 3;
    usize::try_from(shared).unwrap_or(usize::MAX).clamp(1, MAX_CONNECTIONS)
}

/// Relays one client's connection until either side closes it or the
/// client sends a record past `MAX_RECORD`; `port` is the one the client
/// connected to. The connection to nfsserve is made with a ticket of
/// `admission`, which lets it in.
async fn relay(client: TcpStream, nfs: SocketAddr, port: u16, admission: &Arc<Admission>) -> io::Result<()> {
    let (socket, _admitted) = admission.ticket()?;
    let server = socket.connect(nfs).await?;
    // RPC calls are small and answered one by one: no Nagle delays.
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let getports = Mutex::new(Vec::new());
    let replies = forward_replies(&mut server_read, &mut client_write, &getports, port);
    tokio::pin!(replies);
    tokio::select! {
        requests = forward_requests(&mut client_read, &mut server_write, &getports) => {
            requests?;
            // The client is done sending: the server's answers go on.
            server_write.shutdown().await?;
            replies.await
        }
        replied = &mut replies => replied,
    }
}

/// Where a stream of RPC records stands, as its bytes go by.
#[derive(Default)]
struct Records {
    /// The bytes of a fragment header read so far.
    header: [u8; 4],
    header_len: usize,
    /// What is left of the current fragment's body.
    left: usize,
    /// Whether the current fragment ends its record.
    last: bool,
    /// The bytes of the current record so far.
    record: usize,
    /// The first bytes of the current record's body.
    head: [u8; GETPORT_REPLY],
    head_len: usize,
}

/// What `Records::scan` found in the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// Nothing to act on before the end.
    Nothing,
    /// A record whose first `CALL_HEAD` bytes just ended, `at` bytes in.
    CallHead { at: usize, head: [u8; CALL_HEAD] },
    /// A header just ended `at` bytes in, of a record of `length` bytes in
    /// one fragment.
    WholeRecord { at: usize, length: usize },
}

impl Records {
    /// Follows `bytes`, stopping at the first thing found; a header of a
    /// fragment or record past `limit` is an error.
    fn scan(&mut self, bytes: &[u8], limit: usize) -> io::Result<Found> {
        let mut at = 0;
        while at < bytes.len() {
            if self.left == 0 && self.header_len < 4 {
                let n = (4 - self.header_len).min(bytes.len() - at);
                self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[at..at + n]);
                self.header_len += n;
                at += n;
                if self.header_len < 4 {
                    break;
                }
                if let Some(found) = self.begin_fragment(at, limit)? {
                    return Ok(found);
                }
                continue;
            }
            let n = self.left.min(bytes.len() - at);
            let call_head = self.keep_head(&bytes[at..at + n]);
            self.left -= n;
            at += n;
            if self.left == 0 {
                self.end_fragment();
            }
            if let Some(head) = call_head {
                return Ok(Found::CallHead { at, head });
            }
        }
        Ok(Found::Nothing)
    }

    /// Keeps what `body` adds to the record's first bytes; the call's
    /// first words if they are complete now.
    fn keep_head(&mut self, body: &[u8]) -> Option<[u8; CALL_HEAD]> {
        let before = self.head_len;
        let take = body.len().min(self.head.len() - before);
        self.head[before..before + take].copy_from_slice(&body[..take]);
        self.head_len += take;
        let mut head = [0; CALL_HEAD];
        head.copy_from_slice(&self.head[..CALL_HEAD]);
        (before < CALL_HEAD && self.head_len >= CALL_HEAD).then_some(head)
    }

    /// A header is complete: its fragment starts.
    fn begin_fragment(&mut self, at: usize, limit: usize) -> io::Result<Option<Found>> {
        let word = u32::from_be_bytes(self.header);
        let (last, length) = (word & 0x8000_0000 != 0, (word & 0x7fff_ffff) as usize);
        let first = self.record == 0 && self.head_len == 0;
        self.record = self.record.saturating_add(length);
        if self.record > limit {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a message of {} bytes or more (at most {limit} are taken)", self.record),
            ));
        }
        (self.left, self.last) = (length, last);
        if length == 0 {
            self.end_fragment();
            return Ok(None);
        }
        Ok((first && last).then_some(Found::WholeRecord { at, length }))
    }

    fn end_fragment(&mut self) {
        self.header_len = 0;
        if self.last {
            (self.record, self.head_len) = (0, 0);
        }
    }
}

/// Passes on requests from `client` to `server`, each fragment's header
/// checked before it is: an error (the connection is then dropped) for a
/// fragment or record past `MAX_RECORD`. Notes the xid of each
/// portmapper GETPORT call in `getports`. Ends when the client closes.
pub async fn forward_requests(
    client: &mut (impl AsyncRead + Unpin),
    server: &mut (impl AsyncWrite + Unpin),
    getports: &Mutex<Vec<u32>>,
) -> io::Result<()> {
    let mut buffer = vec![0u8; CHUNK];
    let mut records = Records::default();
    loop {
        let n = client.read(&mut buffer).await?;
        if n == 0 {
            return Ok(());
        }
        // A refused header: nothing of this read is passed on.
        let mut at = 0;
        loop {
            match records.scan(&buffer[at..n], MAX_RECORD)? {
                Found::Nothing => break,
                Found::WholeRecord { at: after, .. } => at += after,
                Found::CallHead { at: after, head } => {
                    at += after;
                    let word = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
                    if word(12) == PORTMAP && word(20) == GETPORT {
                        note(getports, word(0));
                    }
                }
            }
        }
        server.write_all(&buffer[..n]).await?;
    }
}

/// Passes on replies from `server` to `client`, with `port` written in
/// the answer to each GETPORT call `forward_requests` noted. Ends when
/// the server closes.
pub async fn forward_replies(
    server: &mut (impl AsyncRead + Unpin),
    client: &mut (impl AsyncWrite + Unpin),
    getports: &Mutex<Vec<u32>>,
    port: u16,
) -> io::Result<()> {
    let mut buffer = vec![0u8; CHUNK + GETPORT_REPLY];
    let mut records = Records::default();
    loop {
        let mut n = server.read(&mut buffer[..CHUNK]).await?;
        if n == 0 {
            return Ok(());
        }
        let mut at = 0;
        loop {
            match records.scan(&buffer[at..n], usize::MAX)? {
                Found::Nothing => break,
                Found::CallHead { at: after, .. } => at += after,
                Found::WholeRecord { at: after, length } => {
                    at += after;
                    if length != GETPORT_REPLY {
                        continue;
                    }
                    // The whole answer, to read its xid and change its port.
                    if n < at + GETPORT_REPLY {
                        server.read_exact(&mut buffer[n..at + GETPORT_REPLY]).await?;
                        n = at + GETPORT_REPLY;
                    }
                    let reply = &mut buffer[at..at + GETPORT_REPLY];
                    let xid = u32::from_be_bytes([reply[0], reply[1], reply[2], reply[3]]);
                    if take_noted(getports, xid) {
                        reply[GETPORT_REPLY - 4..].copy_from_slice(&u32::from(port).to_be_bytes());
                    }
                }
            }
        }
        client.write_all(&buffer[..n]).await?;
    }
}

fn lock(getports: &Mutex<Vec<u32>>) -> std::sync::MutexGuard<'_, Vec<u32>> {
    getports.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The most GETPORT calls waiting for their answer on one connection: a
/// call nfsserve takes for a retransmission is never answered.
const MAX_GETPORTS: usize = 16;

/// Notes `xid` as a GETPORT call, forgetting the oldest past `MAX_GETPORTS`.
fn note(getports: &Mutex<Vec<u32>>, xid: u32) {
    let mut noted = lock(getports);
    if noted.len() == MAX_GETPORTS {
        noted.remove(0);
    }
    noted.push(xid);
}

/// Whether `xid` was noted as a GETPORT call; it is not any more.
fn take_noted(getports: &Mutex<Vec<u32>>, xid: u32) -> bool {
    let mut noted = lock(getports);
    let at = noted.iter().position(|noted| *noted == xid);
    at.map(|at| noted.remove(at)).is_some()
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use tokio::io::ReadBuf;

    use super::*;

    fn fragment(last: bool, body: &[u8]) -> Vec<u8> {
        let header = body.len() as u32 | if last { 0x8000_0000 } else { 0 };
        [&header.to_be_bytes()[..], body].concat()
    }

    fn words(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|w| w.to_be_bytes()).collect()
    }

    /// An RPC call's first words with `xid`, `program` and `procedure`, and `rest`.
    fn call(xid: u32, program: u32, procedure: u32, rest: &[u8]) -> Vec<u8> {
        [words(&[xid, 0, 2, program, 2, procedure]), rest.to_vec()].concat()
    }

    /// A stream that gives at most `step` bytes a read, as a socket may.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl AsyncRead for Trickle<'_> {
        fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
            let n = self.step.min(self.data.len()).min(out.remaining());
            out.put_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Poll::Ready(Ok(()))
        }
    }

    /// The read sizes each stream is tried with.
    const STEPS: [usize; 7] = [1, 2, 3, 5, 29, 4096, usize::MAX];

    async fn requests(input: &[u8], step: usize) -> (io::Result<()>, Vec<u8>, Vec<u32>) {
        let (mut sent, getports) = (Vec::new(), Mutex::new(Vec::new()));
        let outcome = forward_requests(&mut Trickle { data: input, step }, &mut sent, &getports).await;
        (outcome, sent, getports.into_inner().unwrap())
    }

    #[tokio::test]
    async fn requests_within_the_bound_pass_unchanged_however_they_are_read() {
        let big = vec![7u8; MAX_RECORD - CALL_HEAD];
        let getport = call(9, PORTMAP, GETPORT, &words(&[100_005, 3, 6, 0]));
        let input = [
            fragment(true, &call(1, 100_003, 7, &big)),
            fragment(false, &call(2, 100_003, 6, b"ab")),
            fragment(true, b"cd"),
            fragment(true, b""),
            fragment(true, &getport),
            fragment(false, &getport[..10]),
            fragment(true, &getport[10..]),
        ]
        .concat();
        for step in STEPS {
            let (outcome, sent, getports) = requests(&input, step).await;
            assert!(outcome.is_ok(), "{step}: {outcome:?}");
            assert!(sent == input, "{step}: passed on unchanged");
            assert_eq!(getports, [9, 9], "{step}: both GETPORT calls noted");
        }
    }

    #[tokio::test]
    async fn a_fragment_or_record_past_the_bound_is_refused_before_it_is_passed_on() {
        let before = fragment(true, &call(1, 100_003, 6, b"ok"));
        for header in [0x7fff_ffffu32, 0xffff_ffff, 0x8000_0000 | (MAX_RECORD as u32 + 1)] {
            let input = [before.clone(), header.to_be_bytes().to_vec(), vec![0; 100]].concat();
            for step in STEPS {
                let (outcome, sent, _) = requests(&input, step).await;
                assert_eq!(outcome.map_err(|e| e.kind()), Err(io::ErrorKind::InvalidData), "{header:#x}, {step}");
                assert!(sent.len() < before.len() + 4, "{header:#x}, {step}: the header was passed on");
            }
        }
        let mut endless = Vec::new();
        while endless.len() < 2 * MAX_RECORD {
            endless.extend(fragment(false, &[0; 4096]));
        }
        for step in [4096, usize::MAX] {
            let (outcome, sent, _) = requests(&endless, step).await;
            assert!(outcome.is_err());
            assert!(sent.len() <= MAX_RECORD + 4096, "{step}: passed on {} bytes", sent.len());
        }
    }

    /// Calls that are never answered are not kept without end.
    #[tokio::test]
    async fn getport_calls_kept_are_bounded() {
        let args = words(&[100_005, 3, 6, 0]);
        let input: Vec<u8> = (0..1000).flat_map(|xid| fragment(true, &call(xid, PORTMAP, GETPORT, &args))).collect();
        let (outcome, _, getports) = requests(&input, usize::MAX).await;
        assert!(outcome.is_ok());
        assert!(getports.len() <= 16, "{} calls kept", getports.len());
        assert_eq!(getports.last(), Some(&999));
    }

    /// nfsserve answers GETPORT with its own port; the client is told the
    /// relay's. Other replies, a GETPORT answer not asked for included,
    /// pass unchanged.
    #[tokio::test]
    async fn getport_answers_name_the_port_clients_connect_to() {
        let answer = |xid: u32, port: u32| fragment(true, &words(&[xid, 1, 0, 0, 0, 0, port]));
        let other = fragment(true, &[1u8; 100]);
        let replies = [answer(9, 40_000), other.clone(), answer(10, 40_000), answer(11, 40_000)].concat();
        let wanted = [answer(9, 2049), other, answer(10, 40_000), answer(11, 2049)].concat();
        for step in STEPS {
            let (mut sent, noted) = (Vec::new(), Mutex::new(vec![9, 11]));
            let mut server = Trickle { data: &replies, step };
            forward_replies(&mut server, &mut sent, &noted, 2049).await.unwrap();
            assert!(sent == wanted, "{step}");
            assert!(noted.into_inner().unwrap().is_empty(), "{step}");
        }
    }
}
