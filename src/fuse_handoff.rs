//! The hand-over of a FUSE mount from `ciofs fuse-helper` to `ciofs mount
//! --fuse-socket` over a Unix socket: the helper (privileged) opens
//! /dev/fuse, mounts it, and sends the descriptor (SCM_RIGHTS) with one
//! JSON line saying what it mounted; the mount (unprivileged) serves that
//! descriptor. The connection stays open while the mount serves: its end
//! (the process exited, however) tells the helper to unmount.
//!
//! This module owns the wire format and both ends of one exchange; the
//! helper's loop is `fuse_helper`'s.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, Interest};
use tokio::net::UnixStream;

/// An answer is one JSON line; a longer one is not from a helper.
const MAX_ANSWER: usize = 64 * 1024;

/// What the helper mounted, sent with the descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mounted {
    /// Where, in the helper's view of the filesystem.
    pub mountpoint: PathBuf,
    /// Mounted with `allow_other`: the server must then answer every user.
    pub allow_other: bool,
    /// Mounted read-only.
    pub read_only: bool,
}

/// The helper's one line: a mount (with a descriptor) or why not.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Answer {
    Mounted(Mounted),
    Refused(String),
}

/// Sends the mounted descriptor and what it is.
pub async fn send_mounted(stream: &UnixStream, fuse: BorrowedFd<'_>, mounted: &Mounted) -> io::Result<()> {
    send(stream, &Answer::Mounted(mounted.clone()), Some(fuse.as_raw_fd())).await
}

/// Tells the connecting side why it gets no mount.
pub async fn send_refusal(stream: &UnixStream, why: &str) -> io::Result<()> {
    send(stream, &Answer::Refused(why.to_string()), None).await
}

async fn send(stream: &UnixStream, answer: &Answer, fd: Option<RawFd>) -> io::Result<()> {
    let mut line = serde_json::to_vec(answer).map_err(io::Error::other)?;
    line.push(b'\n');
    let fds: Vec<RawFd> = fd.into_iter().collect();
    let mut sent = 0;
    while sent < line.len() {
        let iov = [io::IoSlice::new(&line[sent..])];
        // The descriptor rides on the first byte only.
        let rights = [ControlMessage::ScmRights(&fds)];
        let cmsgs: &[ControlMessage] = if sent == 0 && !fds.is_empty() { &rights } else { &[] };
        let raw = stream.as_raw_fd();
        sent += stream
            .async_io(Interest::WRITABLE, || {
                sendmsg::<()>(raw, &iov, cmsgs, MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT, None)
                    .map_err(io::Error::from)
            })
            .await?;
    }
    Ok(())
}

/// Connects to the helper at `socket`, waiting up to `wait` for it to
/// listen (its container may start after ours), and takes the mount it
/// hands over. The stream returned must be kept open while the mount
/// serves.
pub async fn receive(socket: &Path, wait: Duration) -> Result<(UnixStream, OwnedFd, Mounted), String> {
    let stream = connect(socket, wait).await?;
    tracing::info!(socket = %socket.display(), "connected to the fuse-helper; waiting for its mount");
    // A helper busy with another ciofs answers once that one is gone.
    tokio::time::timeout(wait, answer(stream, socket))
        .await
        .map_err(|_| format!("{}: the fuse-helper did not answer within {wait:?}", socket.display()))?
}

/// The helper's answer on `stream`.
async fn answer(stream: UnixStream, socket: &Path) -> Result<(UnixStream, OwnedFd, Mounted), String> {
    let named = |e: io::Error| format!("{}: {e}", socket.display());
    let (fd, mut line) = receive_first(&stream).await.map_err(named)?;
    let mut stream = stream;
    while !line.contains(&b'\n') {
        if line.len() > MAX_ANSWER {
            return Err(format!("{}: the helper's answer is too long", socket.display()));
        }
        let mut more = [0u8; 4096];
        match stream.read(&mut more).await.map_err(named)? {
            0 => return Err(format!("{}: the helper hung up mid-answer", socket.display())),
            n => line.extend_from_slice(&more[..n]),
        }
    }
    let answer: Answer =
        serde_json::from_slice(&line).map_err(|e| format!("{}: not a fuse-helper's answer ({e})", socket.display()))?;
    match (answer, fd) {
        (Answer::Mounted(mounted), Some(fd)) => Ok((stream, fd, mounted)),
        (Answer::Mounted(_), None) => Err(format!("{}: the helper sent no descriptor", socket.display())),
        (Answer::Refused(why), _) => Err(format!("fuse-helper at {} refused: {why}", socket.display())),
    }
}

async fn connect(socket: &Path, wait: Duration) -> Result<UnixStream, String> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut said = false;
    loop {
        match UnixStream::connect(socket).await {
            Ok(stream) => return Ok(stream),
            // Not there yet, or left by a helper that is starting again.
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused) => {
                if !said {
                    tracing::info!(socket = %socket.display(), "waiting for the fuse-helper to listen");
                    said = true;
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(format!("{}: no fuse-helper listening after {wait:?} ({e})", socket.display()));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(format!("{}: {e}", socket.display())),
        }
    }
}

/// The first piece of the answer, with the descriptor if one came.
async fn receive_first(stream: &UnixStream) -> io::Result<(Option<OwnedFd>, Vec<u8>)> {
    let raw = stream.as_raw_fd();
    let (mut fds, bytes) = stream.async_io(Interest::READABLE, || receive_message(raw)).await?;
    if bytes.is_empty() && fds.is_empty() {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the helper hung up without an answer"));
    }
    if fds.len() > 1 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "the helper sent more than one descriptor"));
    }
    Ok((fds.pop(), bytes))
}

/// One recvmsg without blocking (EAGAIN comes back as WouldBlock, which
/// `async_io` waits on): the bytes and the descriptors that came with them.
fn receive_message(raw: RawFd) -> io::Result<(Vec<OwnedFd>, Vec<u8>)> {
    let mut buffer = [0u8; 4096];
    let mut cmsg = nix::cmsg_space!([RawFd; 4]);
    let mut iov = [io::IoSliceMut::new(&mut buffer)];
    let flags = MsgFlags::MSG_CMSG_CLOEXEC | MsgFlags::MSG_DONTWAIT;
    let received = recvmsg::<()>(raw, &mut iov, Some(&mut cmsg), flags)?;
    if received.flags.contains(MsgFlags::MSG_CTRUNC) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "more descriptors came than a helper sends"));
    }
    let mut fds = Vec::new();
    for message in received.cmsgs()? {
        if let ControlMessageOwned::ScmRights(raw_fds) = message {
            // SAFETY: the kernel just installed these descriptors in this
            // process for us: nothing else owns them.
            fds.extend(raw_fds.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    let bytes = received.bytes;
    Ok((fds, buffer[..bytes].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_descriptor_and_its_line_arrive_together() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("fuse.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let file = std::fs::File::create(dir.path().join("plain")).unwrap();
        let mounted = Mounted { mountpoint: "/data".into(), allow_other: true, read_only: false };
        let sent = mounted.clone();
        let helper = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            send_mounted(&stream, std::os::fd::AsFd::as_fd(&file), &sent).await.unwrap();
            stream
        });
        let (_stream, fd, got) = receive(&socket, Duration::from_secs(5)).await.unwrap();
        assert_eq!(got, mounted);
        let meta = std::fs::File::from(fd).metadata().unwrap();
        assert!(meta.is_file(), "the file sent is the one received");
        drop(helper.await.unwrap());
    }

    #[tokio::test]
    async fn a_refusal_is_told_and_a_missing_helper_is_waited_for_then_named() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("fuse.sock");
        let error = receive(&socket, Duration::from_millis(300)).await.unwrap_err();
        assert!(error.contains("no fuse-helper listening"), "{error}");

        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            send_refusal(&stream, "uid 7 may not mount").await.unwrap();
        });
        let error = receive(&socket, Duration::from_secs(5)).await.unwrap_err();
        assert!(error.contains("refused: uid 7 may not mount"), "{error}");
    }

    #[tokio::test]
    async fn garbage_from_the_socket_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("fuse.sock");
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut stream, b"HTTP/1.1 400\r\n\n").await.unwrap();
        });
        let error = receive(&socket, Duration::from_secs(5)).await.unwrap_err();
        assert!(error.contains("not a fuse-helper's answer"), "{error}");
    }
}
