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
//!
//! nfsserve answers each call in a task of its own and queues the answers
//! without bound, so a client that pipelines calls and never reads their
//! answers would have it hold them all (1,000 READs of 1 MiB: 1 GiB). The
//! relay notes the xid of each call it passes on (`Calls`) and, with
//! `MAX_IN_FLIGHT` unanswered, stops reading the client until an answer
//! has been passed back; it holds at most one read in each direction.
//!
//! At most `connection_limit` connections are relayed at once. NFS clients
//! keep a connection per mount, idle or not, and connect again when it is
//! closed: at the limit a new connection closes the one idle longest (no
//! call in flight and nothing from its client for `IDLE_AFTER`, or nothing
//! from its client for `STALLED_AFTER`), and is refused only when none is.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::admission::Admission;

/// The most a READ or WRITE moves (the NFS adapter's FSINFO rtmax and
/// wtmax), which bounds the longest request a client sends.
pub const MAX_TRANSFER: u32 = 1 << 20;

/// The longest request taken: a WRITE of `MAX_TRANSFER` bytes (FSINFO's
/// wtmax) with its RPC header, credentials and file handle, which take
/// well under a KiB; the rest is margin.
pub const MAX_RECORD: usize = MAX_TRANSFER as usize + (64 << 10);

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

/// The most calls of one connection passed on and not answered yet.
/// nfsserve holds each answer (up to 1 MiB) until the relay reads it.
const MAX_IN_FLIGHT: usize = 16;

/// The most connections relayed at once. Each holds three descriptors
/// (the client's, the relay's to nfsserve and nfsserve's) and two buffers;
/// past it, a new connection closes an idle one or is closed at once, so
/// that descriptors do not run out (`connection_limit` lowers it under a
/// low limit).
const MAX_CONNECTIONS: usize = 128;
/// A connection with no call in flight whose client sent nothing for
/// this long is idle: a new connection may close it.
const IDLE_AFTER: Duration = Duration::from_secs(5);
/// One whose client sent nothing for this long may be closed whatever is
/// in flight: nfsserve never answers a call it takes for a retransmission,
/// and a client may not read its answers.
const STALLED_AFTER: Duration = Duration::from_secs(120);
/// How long the connection to nfsserve may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
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
    let limit = connection_limit();
    let mut open: Vec<Open> = Vec::new();
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
        open.retain(|connection| !connection.task.is_finished());
        if open.len() >= limit && !close_idlest(&mut open).await {
            if !refusing {
                warn!(%peer, "NFS connections refused: {} are open already, none idle", open.len());
            }
            refusing = true;
            continue;
        }
        refusing = false;
        let (nfs, admission, calls) = (*behind.borrow(), admission.clone(), Arc::new(Calls::new()));
        let task = tokio::spawn({
            let calls = calls.clone();
            async move {
                match relay(client, nfs, port, &admission, &calls).await {
                    Ok(()) => debug!(%peer, "NFS connection ended"),
                    Err(e) => warn!(%peer, "NFS connection closed: {e}"),
                }
            }
        });
        open.push(Open { peer, calls, task });
    }
}

/// A connection being relayed.
struct Open {
    peer: SocketAddr,
    calls: Arc<Calls>,
    task: JoinHandle<()>,
}

/// Closes the connection of `open` idle longest, if one is idle; whether
/// one was. Its descriptors are closed on return.
async fn close_idlest(open: &mut Vec<Open>) -> bool {
    let now = Instant::now();
    let idle = open.iter().enumerate().filter_map(|(at, connection)| Some((connection.calls.idle_since(now)?, at)));
    let Some((_, at)) = idle.min() else { return false };
    let closed = open.swap_remove(at);
    closed.task.abort();
    // Dropping the task's future closes its sockets.
    let _ = closed.task.await;
    debug!(peer = %closed.peer, "idle NFS connection closed for a new one");
    true
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
async fn relay(
    client: TcpStream,
    nfs: SocketAddr,
    port: u16,
    admission: &Arc<Admission>,
    calls: &Calls,
) -> io::Result<()> {
    let (socket, _admitted) = admission.ticket()?;
    let connecting = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(nfs));
    let server = connecting.await.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "nfsserve did not answer"))??;
    // RPC calls are small and answered one by one: no Nagle delays.
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let replies = forward_replies(&mut server_read, &mut client_write, calls, port);
    tokio::pin!(replies);
    tokio::select! {
        requests = forward_requests(&mut client_read, &mut server_write, calls) => {
            requests?;
            // The client is done sending: the server's answers go on.
            server_write.shutdown().await?;
            replies.await
        }
        replied = &mut replies => replied,
    }
}

/// Where a stream of RPC records stands, as its bytes go by.
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
    /// How many of them `Found::Head` waits for.
    wanted: usize,
}

/// What `Records::scan` found in the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// Nothing to act on before the end.
    Nothing,
    /// A record whose first `wanted` bytes (at most `CALL_HEAD`) just
    /// ended, `at` bytes in.
    Head { at: usize, head: [u8; CALL_HEAD] },
    /// A header just ended `at` bytes in, of a record of `length` bytes in
    /// one fragment.
    WholeRecord { at: usize, length: usize },
}

impl Records {
    /// A stream whose records' first `wanted` bytes are told.
    fn new(wanted: usize) -> Self {
        let (header, head) = ([0; 4], [0; GETPORT_REPLY]);
        Records { header, header_len: 0, left: 0, last: false, record: 0, head, head_len: 0, wanted }
    }

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
            let mut n = self.left.min(bytes.len() - at);
            if self.head_len < self.wanted {
                // Stop where the head ends, for it to be acted on there.
                n = n.min(self.wanted - self.head_len);
            }
            let head = self.keep_head(&bytes[at..at + n]);
            self.left -= n;
            at += n;
            if self.left == 0 {
                self.end_fragment();
            }
            if let Some(head) = head {
                return Ok(Found::Head { at, head });
            }
        }
        Ok(Found::Nothing)
    }

    /// Keeps what `body` adds to the record's first bytes; the first
    /// `CALL_HEAD` of them if the `wanted` ones are complete now.
    fn keep_head(&mut self, body: &[u8]) -> Option<[u8; CALL_HEAD]> {
        let before = self.head_len;
        let take = body.len().min(self.head.len() - before);
        self.head[before..before + take].copy_from_slice(&body[..take]);
        self.head_len += take;
        let mut head = [0; CALL_HEAD];
        head.copy_from_slice(&self.head[..CALL_HEAD]);
        (before < self.wanted && self.head_len >= self.wanted).then_some(head)
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
/// fragment or record past `MAX_RECORD`. Notes each call in `calls`, and
/// with `MAX_IN_FLIGHT` in flight waits for an answer before passing on
/// another. Ends when the client closes.
async fn forward_requests(
    client: &mut (impl AsyncRead + Unpin),
    server: &mut (impl AsyncWrite + Unpin),
    calls: &Calls,
) -> io::Result<()> {
    let mut buffer = vec![0u8; CHUNK];
    let mut records = Records::new(CALL_HEAD);
    loop {
        let n = client.read(&mut buffer).await?;
        if n == 0 {
            return Ok(());
        }
        calls.heard();
        // A refused header: nothing more of this read is passed on.
        let (mut at, mut sent) = (0, 0);
        loop {
            match records.scan(&buffer[at..n], MAX_RECORD)? {
                Found::Nothing => break,
                Found::WholeRecord { at: after, .. } => at += after,
                Found::Head { at: after, head } => {
                    at += after;
                    let word = |i: usize| u32::from_be_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
                    let getport = word(12) == PORTMAP && word(20) == GETPORT;
                    while !calls.passing_on(word(0), getport) {
                        server.write_all(&buffer[sent..at]).await?;
                        sent = at;
                        calls.answered.notified().await;
                    }
                }
            }
        }
        server.write_all(&buffer[sent..n]).await?;
    }
}

/// Passes on replies from `server` to `client`, with `port` written in
/// the answer to each GETPORT call of `calls`; a call is answered once
/// the start of its answer went to the client. Ends when the server
/// closes.
async fn forward_replies(
    server: &mut (impl AsyncRead + Unpin),
    client: &mut (impl AsyncWrite + Unpin),
    calls: &Calls,
    port: u16,
) -> io::Result<()> {
    let mut buffer = vec![0u8; CHUNK + GETPORT_REPLY];
    // The xid is a reply's first word.
    let mut records = Records::new(4);
    let mut answered = Vec::new();
    loop {
        let mut n = server.read(&mut buffer[..CHUNK]).await?;
        if n == 0 {
            return Ok(());
        }
        let mut at = 0;
        loop {
            match records.scan(&buffer[at..n], usize::MAX)? {
                Found::Nothing => break,
                Found::Head { at: after, head } => {
                    at += after;
                    answered.push(u32::from_be_bytes([head[0], head[1], head[2], head[3]]));
                }
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
                    if calls.is_getport(xid) {
                        reply[GETPORT_REPLY - 4..].copy_from_slice(&u32::from(port).to_be_bytes());
                    }
                }
            }
        }
        client.write_all(&buffer[..n]).await?;
        calls.answer(answered.drain(..));
    }
}

/// What a connection's two directions share: the calls passed on and
/// not answered yet, and when the client last sent anything.
struct Calls {
    state: Mutex<CallState>,
    /// Told when an answer was passed back.
    answered: Notify,
}

struct CallState {
    /// Each call's xid, and whether it is a portmapper GETPORT.
    in_flight: Vec<(u32, bool)>,
    heard: Instant,
}

impl Calls {
    fn new() -> Self {
        let state = CallState { in_flight: Vec::new(), heard: Instant::now() };
        Calls { state: Mutex::new(state), answered: Notify::new() }
    }

    fn lock(&self) -> MutexGuard<'_, CallState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn heard(&self) {
        self.lock().heard = Instant::now();
    }

    /// Notes call `xid` as passed on, unless `MAX_IN_FLIGHT` are; whether
    /// it may be. A retransmission of a call in flight counts once.
    fn passing_on(&self, xid: u32, getport: bool) -> bool {
        let mut state = self.lock();
        if state.in_flight.iter().any(|(noted, _)| *noted == xid) {
            return true;
        }
        let room = state.in_flight.len() < MAX_IN_FLIGHT;
        if room {
            state.in_flight.push((xid, getport));
        }
        room
    }

    fn is_getport(&self, xid: u32) -> bool {
        self.lock().in_flight.contains(&(xid, true))
    }

    /// The calls `xids` were answered.
    fn answer(&self, xids: impl Iterator<Item = u32>) {
        let mut state = self.lock();
        let before = state.in_flight.len();
        for xid in xids {
            state.in_flight.retain(|(noted, _)| *noted != xid);
        }
        if state.in_flight.len() < before {
            // A permit is kept if `forward_requests` is not waiting yet.
            self.answered.notify_one();
        }
    }

    /// Since when the connection is idle at `now`, if it is.
    fn idle_since(&self, now: Instant) -> Option<Instant> {
        let state = self.lock();
        let quiet = now.saturating_duration_since(state.heard);
        let idle = (state.in_flight.is_empty() && quiet >= IDLE_AFTER) || quiet >= STALLED_AFTER;
        idle.then_some(state.heard)
    }
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

    /// What `forward_requests` made of `input`, and the calls left in flight.
    async fn requests(input: &[u8], step: usize) -> (io::Result<()>, Vec<u8>, Vec<(u32, bool)>) {
        let (mut sent, calls) = (Vec::new(), Calls::new());
        let outcome = forward_requests(&mut Trickle { data: input, step }, &mut sent, &calls).await;
        (outcome, sent, calls.lock().in_flight.clone())
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
            let (outcome, sent, in_flight) = requests(&input, step).await;
            assert!(outcome.is_ok(), "{step}: {outcome:?}");
            assert!(sent == input, "{step}: passed on unchanged");
            assert_eq!(in_flight, [(1, false), (2, false), (9, true)], "{step}: a retransmission counts once");
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

    /// With `MAX_IN_FLIGHT` calls unanswered no more is passed on, nor
    /// read, until one is answered.
    #[tokio::test]
    async fn calls_past_the_bound_wait_for_an_answer() {
        let one = |xid| fragment(true, &call(xid, 100_003, 6, &[0; 40]));
        let input: Vec<u8> = (0..100).flat_map(one).collect();
        let calls = Calls::new();
        let (mut to_server, mut server) = tokio::io::duplex(1 << 20);
        let mut client = Trickle { data: &input, step: usize::MAX };
        let forwarding = forward_requests(&mut client, &mut to_server, &calls);
        tokio::pin!(forwarding);
        let passed = |calls: usize| calls * one(0).len() + 4 + CALL_HEAD;
        let mut sent = vec![0; passed(MAX_IN_FLIGHT)];
        tokio::select! {
            _ = &mut forwarding => panic!("every call passed on"),
            read = server.read_exact(&mut sent) => { read.unwrap(); }
        }
        let more = tokio::time::timeout(Duration::from_millis(100), async {
            tokio::select! { _ = &mut forwarding => (), _ = server.read_u8() => () }
        });
        assert!(more.await.is_err(), "more than {MAX_IN_FLIGHT} calls passed on");
        calls.answer([3].into_iter());
        let mut next = vec![0; one(0).len()];
        tokio::select! {
            _ = &mut forwarding => panic!("every call passed on"),
            read = server.read_exact(&mut next) => { read.unwrap(); }
        }
        assert_eq!(calls.lock().in_flight.len(), MAX_IN_FLIGHT);
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
            let (mut sent, calls) = (Vec::new(), Calls::new());
            calls.lock().in_flight = vec![(9, true), (11, true), (12, false)];
            let mut server = Trickle { data: &replies, step };
            forward_replies(&mut server, &mut sent, &calls, 2049).await.unwrap();
            assert!(sent == wanted, "{step}");
            assert_eq!(calls.lock().in_flight, [(12, false)], "{step}: the calls answered");
        }
    }
}
