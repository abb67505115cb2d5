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
//! connection to nfsserve, listening on a loopback port of its own. A
//! request is passed on only once its header is checked: a fragment or
//! record longer than `MAX_RECORD` closes that connection, and nothing is
//! allocated for it.
//!
//! Replies pass unchanged but one: nfsserve answers a portmapper GETPORT
//! with the port it listens on, which is the relay's target and not the
//! port clients connect to; the relay writes its own port in that answer.

use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

/// The longest request taken: a WRITE of `MAX_TRANSFER` bytes (FSINFO's
/// wtmax) with its RPC header, credentials and file handle, which take
/// well under a KiB; the rest is margin.
pub const MAX_RECORD: usize = crate::nfs::MAX_TRANSFER as usize + (64 << 10);

/// How much of a message is read before it is passed on.
const PIECE: usize = 256 << 10;

/// An RPC call's first words: xid, message type, RPC version, program,
/// version, procedure.
const CALL_HEAD: usize = 24;
/// The portmapper program and its GETPORT procedure (RFC 1833).
const PORTMAP: u32 = 100_000;
const GETPORT: u32 = 3;
/// nfsserve's GETPORT reply: xid, REPLY, MSG_ACCEPTED, an empty AUTH_NONE
/// verifier (flavor, length), SUCCESS, the port.
const GETPORT_REPLY: usize = 28;

/// Accepts clients on `listener` and relays each to the NFS server at
/// `nfs`, until accepting fails.
pub async fn relay_clients(listener: TcpListener, nfs: SocketAddr) -> io::Result<()> {
    let port = listener.local_addr()?.port();
    loop {
        let (client, peer) = listener.accept().await?;
        tokio::spawn(async move {
            match relay(client, nfs, port).await {
                Ok(()) => debug!(%peer, "NFS connection ended"),
                Err(e) => warn!(%peer, "NFS connection closed: {e}"),
            }
        });
    }
}

/// Relays one client's connection until either side closes it or the
/// client sends a record past `MAX_RECORD`; `port` is the one the client
/// connected to.
async fn relay(client: TcpStream, nfs: SocketAddr, port: u16) -> io::Result<()> {
    let server = TcpStream::connect(nfs).await?;
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

/// Passes on requests from `client` to `server`, each fragment's header
/// checked before anything of it is: an error (the connection is then
/// dropped) for a fragment or record past `MAX_RECORD`. Notes the xid of
/// each portmapper GETPORT call in `getports`. Ends when the client closes
/// between two fragments.
pub async fn forward_requests(
    client: &mut (impl AsyncRead + Unpin),
    server: &mut (impl AsyncWrite + Unpin),
    getports: &Mutex<Vec<u32>>,
) -> io::Result<()> {
    let mut buffer = vec![0u8; PIECE];
    let mut record = 0usize;
    while let Some((last, length)) = read_header(client, &mut buffer).await? {
        let first = record == 0;
        record = record.saturating_add(length);
        if record > MAX_RECORD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a request of {record} bytes or more (at most {MAX_RECORD} are taken)"),
            ));
        }
        let mut ready = 4;
        if first && length >= CALL_HEAD {
            client.read_exact(&mut buffer[4..4 + CALL_HEAD]).await?;
            ready += CALL_HEAD;
            let word = |i: usize| u32::from_be_bytes([buffer[i], buffer[i + 1], buffer[i + 2], buffer[i + 3]]);
            if word(4 + 12) == PORTMAP && word(4 + 20) == GETPORT {
                lock(getports).push(word(4));
            }
        }
        copy_fragment(client, server, &mut buffer, ready, length + 4 - ready).await?;
        if last {
            record = 0;
        }
    }
    Ok(())
}

/// Passes on replies from `server` to `client`, with `port` written in
/// the answer to each GETPORT call `forward_requests` noted. Ends when
/// the server closes between two fragments.
pub async fn forward_replies(
    server: &mut (impl AsyncRead + Unpin),
    client: &mut (impl AsyncWrite + Unpin),
    getports: &Mutex<Vec<u32>>,
    port: u16,
) -> io::Result<()> {
    let mut buffer = vec![0u8; PIECE];
    while let Some((last, length)) = read_header(server, &mut buffer).await? {
        if !(last && length == GETPORT_REPLY) {
            copy_fragment(server, client, &mut buffer, 4, length).await?;
            continue;
        }
        let reply = &mut buffer[4..4 + GETPORT_REPLY];
        server.read_exact(reply).await?;
        let xid = u32::from_be_bytes([reply[0], reply[1], reply[2], reply[3]]);
        if take_noted(getports, xid) {
            reply[GETPORT_REPLY - 4..].copy_from_slice(&u32::from(port).to_be_bytes());
        }
        client.write_all(&buffer[..4 + GETPORT_REPLY]).await?;
    }
    Ok(())
}

fn lock(getports: &Mutex<Vec<u32>>) -> std::sync::MutexGuard<'_, Vec<u32>> {
    getports.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether `xid` was noted as a GETPORT call; it is not any more.
fn take_noted(getports: &Mutex<Vec<u32>>, xid: u32) -> bool {
    let mut noted = lock(getports);
    let at = noted.iter().position(|noted| *noted == xid);
    at.map(|at| noted.swap_remove(at)).is_some()
}

/// Reads a fragment header into `buffer[..4]`: (last fragment, length),
/// or None when the stream ends before it.
async fn read_header(from: &mut (impl AsyncRead + Unpin), buffer: &mut [u8]) -> io::Result<Option<(bool, usize)>> {
    match from.read_exact(&mut buffer[..4]).await {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let word = u32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]);
    Ok(Some((word & 0x8000_0000 != 0, (word & 0x7fff_ffff) as usize)))
}

/// Passes on the `ready` bytes at the start of `buffer` and the next
/// `length` bytes of `from`, in as few writes as `buffer` allows.
async fn copy_fragment(
    from: &mut (impl AsyncRead + Unpin),
    to: &mut (impl AsyncWrite + Unpin),
    buffer: &mut [u8],
    mut ready: usize,
    mut length: usize,
) -> io::Result<()> {
    while length > 0 {
        let want = length.min(buffer.len() - ready);
        let n = from.read(&mut buffer[ready..ready + want]).await?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the stream ended within a message"));
        }
        to.write_all(&buffer[..ready + n]).await?;
        length -= n;
        ready = 0;
    }
    if ready > 0 {
        to.write_all(&buffer[..ready]).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fragment(last: bool, body: &[u8]) -> Vec<u8> {
        let header = body.len() as u32 | if last { 0x8000_0000 } else { 0 };
        [&header.to_be_bytes()[..], body].concat()
    }

    /// An RPC call's first words with `xid`, `program` and `procedure`, and `rest`.
    fn call(xid: u32, program: u32, procedure: u32, rest: &[u8]) -> Vec<u8> {
        let words = [xid, 0, 2, program, 2, procedure];
        let mut body: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        body.extend_from_slice(rest);
        body
    }

    async fn requests(input: &[u8]) -> (io::Result<()>, Vec<u8>, Vec<u32>) {
        let (mut sent, getports) = (Vec::new(), Mutex::new(Vec::new()));
        let outcome = forward_requests(&mut &input[..], &mut sent, &getports).await;
        (outcome, sent, getports.into_inner().unwrap())
    }

    #[tokio::test]
    async fn requests_within_the_bound_pass_unchanged() {
        let big = vec![7u8; MAX_RECORD - CALL_HEAD];
        let mut input = fragment(true, &call(1, 100_003, 7, &big));
        input.extend(fragment(false, &call(2, 100_003, 6, b"ab")));
        input.extend(fragment(true, b"cd"));
        input.extend(fragment(true, b""));
        let (outcome, sent, getports) = requests(&input).await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert!(sent == input, "passed on unchanged");
        assert!(getports.is_empty());
    }

    #[tokio::test]
    async fn a_fragment_or_record_past_the_bound_is_refused_before_it_is_passed_on() {
        for header in [0x7fff_ffffu32, 0xffff_ffff, 0x8000_0000 | (MAX_RECORD as u32 + 1)] {
            let (outcome, sent, _) = requests(&header.to_be_bytes()).await;
            assert!(outcome.is_err(), "{header:#x}");
            assert!(sent.is_empty(), "{header:#x}: nothing passed on");
        }
        let mut endless = Vec::new();
        while endless.len() < 2 * MAX_RECORD {
            endless.extend(fragment(false, &[0; 4096]));
        }
        let (outcome, sent, _) = requests(&endless).await;
        assert!(outcome.is_err());
        assert!(sent.len() <= MAX_RECORD + 4096, "passed on {} bytes", sent.len());
    }

    #[tokio::test]
    async fn a_request_cut_short_is_an_error() {
        let input = fragment(true, &call(1, 100_003, 6, b"abcd"));
        let (outcome, _, _) = requests(&input[..input.len() - 1]).await;
        assert_eq!(outcome.unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    /// nfsserve answers GETPORT with its own port; the client is told the
    /// relay's. Other replies, GETPORT's of the same length included, pass
    /// unchanged.
    #[tokio::test]
    async fn getport_answers_name_the_port_clients_connect_to() {
        let args = [100_005u32, 3, 6, 0].iter().flat_map(|w| w.to_be_bytes()).collect::<Vec<u8>>();
        let (outcome, _, getports) = requests(&fragment(true, &call(9, PORTMAP, GETPORT, &args))).await;
        assert!(outcome.is_ok());
        assert_eq!(getports, [9]);
        let answer = |xid: u32, port: u32| {
            let words = [xid, 1, 0, 0, 0, 0, port];
            fragment(true, &words.iter().flat_map(|w| w.to_be_bytes()).collect::<Vec<u8>>())
        };
        let other = fragment(true, &[1u8; 100]);
        let replies = [answer(9, 40_000), other.clone(), answer(10, 40_000)].concat();
        let (mut sent, noted) = (Vec::new(), Mutex::new(getports));
        forward_replies(&mut &replies[..], &mut sent, &noted, 2049).await.unwrap();
        assert_eq!(sent, [answer(9, 2049), other, answer(10, 40_000)].concat());
        assert!(noted.into_inner().unwrap().is_empty());
    }
}
