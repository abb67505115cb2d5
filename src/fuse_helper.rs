//! `ciofs fuse-helper`: the privileged half of an unprivileged mount, as
//! a Kubernetes pod runs it next to an unprivileged ciofs. It listens on a
//! Unix socket; for each `ciofs mount --fuse-socket` that connects (one at
//! a time) it opens /dev/fuse, mounts it at its mount point for the
//! connecting user, hands the descriptor over (`fuse_handoff`), and
//! unmounts once that connection ends: the ciofs exited, whether it
//! drained or was killed, and a restarted one gets a fresh mount.
//!
//! It reads nothing from the descriptor, talks to no Google service, and
//! takes its few options from the command line only (not from a
//! configuration file the unprivileged side could write): all it trusts
//! from outside is the kernel's word on who connected.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ciofs_frontends::fuse::{FS_NAME, FS_TYPE};
use nix::mount::MsFlags;
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};

use crate::cli::FuseHelperArgs;
use crate::fuse_handoff::{self, Mounted};
use crate::mount_point;
use crate::shutdown::Signals;

/// Serves connections until SIGTERM (or SIGINT, SIGHUP), then unmounts
/// what it mounted and removes its socket.
pub async fn run(args: FuseHelperArgs) -> Result<(), String> {
    let mut signals = Signals::install()?;
    // Checked before it is made canonical, which would follow a symlink.
    if args.mountpoint.is_symlink() {
        return Err(format!("{}: a symlink; give the directory itself", args.mountpoint.display()));
    }
    let mountpoint = mount_point::prepare(&args.mountpoint, args.mkdir)?;
    let listener = listen(&args.socket)?;
    tracing::info!(socket = %args.socket.display(), mountpoint = %mountpoint.display(), "fuse-helper listening");
    let helper = Helper { mountpoint, args: &args };
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, say: not a reason to spin.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = signals.recv() => break,
        };
        if helper.serve(stream, &mut signals).await == Served::Stopped {
            break;
        }
    }
    let _ = std::fs::remove_file(&args.socket);
    tracing::info!("fuse-helper stopped");
    Ok(())
}

/// Binds `socket`, replacing one an earlier helper left (a path that is
/// not a socket is refused).
fn listen(socket: &Path) -> Result<UnixListener, String> {
    use std::os::unix::fs::FileTypeExt;
    let named = |e: io::Error| format!("{}: {e}", socket.display());
    match std::fs::symlink_metadata(socket) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(socket).map_err(named)?,
        Ok(_) => return Err(format!("{}: exists and is not a socket", socket.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(named(e)),
    }
    // Made 0666 as it is bound: a chmod or chown by path afterwards could
    // be sent elsewhere by whoever can write the directory (the sidecar's
    // user). Who is given a mount is the peer's credentials' to decide
    // (`Helper::serve`); nothing else here makes files.
    let umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o111));
    let bound = UnixListener::bind(socket);
    nix::sys::stat::umask(umask);
    bound.map_err(named)
}

#[derive(Debug, PartialEq)]
enum Served {
    /// The connection ended: wait for the next.
    Ended,
    /// A signal came: stop.
    Stopped,
}

struct Helper<'a> {
    mountpoint: PathBuf,
    args: &'a FuseHelperArgs,
}

impl Helper<'_> {
    /// One connection: a mount handed over, held until the peer hangs up.
    async fn serve(&self, stream: UnixStream, signals: &mut Signals) -> Served {
        let peer = match stream.peer_cred() {
            Ok(peer) => peer,
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell who connected");
                return Served::Ended;
            }
        };
        let (uid, gid, pid) = (peer.uid(), peer.gid(), peer.pid());
        if uid != 0 && Some(uid) != self.args.allow_uid {
            tracing::warn!(uid, ?pid, "refused a connection from a user not allowed (--allow-uid)");
            let _ = fuse_handoff::send_refusal(&stream, &format!("uid {uid} may not mount (--allow-uid)")).await;
            return Served::Ended;
        }
        let fuse = match self.mount(uid, gid) {
            Ok(fuse) => fuse,
            Err(e) => {
                let why = format!("cannot mount {}: {e}", self.mountpoint.display());
                tracing::warn!(uid, ?pid, "{why}");
                let _ = fuse_handoff::send_refusal(&stream, &why).await;
                return Served::Ended;
            }
        };
        let mounted = Mounted {
            mountpoint: self.mountpoint.clone(),
            allow_other: self.args.allow_other,
            read_only: self.args.read_only,
        };
        let sent = fuse_handoff::send_mounted(&stream, fuse.as_fd(), &mounted).await;
        // Ours is closed: the peer's copy is now the mount's connection.
        drop(fuse);
        let served = match sent {
            Ok(()) => {
                tracing::info!(uid, ?pid, "handed the mount over");
                wait_for_hangup(stream, signals).await
            }
            Err(e) => {
                tracing::warn!(uid, ?pid, error = %e, "cannot hand the mount over");
                Served::Ended
            }
        };
        self.unmount();
        served
    }

    /// Opens /dev/fuse and mounts it for `uid`:`gid`, after taking down a
    /// mount an earlier ciofs left (its server gone, it would answer
    /// ENOTCONN).
    fn mount(&self, uid: u32, gid: u32) -> io::Result<OwnedFd> {
        self.unmount();
        // Mounted through the directory opened without following a
        // symlink: the consumers may write the mount point's parent, and a
        // symlink put there must not send a root mount elsewhere.
        let dir = open_mount_point(&self.mountpoint)?;
        let fuse =
            std::fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC).open("/dev/fuse")?;
        let mut data =
            format!("fd={},rootmode=40000,user_id={uid},group_id={gid},default_permissions", fuse.as_raw_fd());
        if self.args.allow_other {
            data.push_str(",allow_other");
        }
        let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        if self.args.read_only {
            flags |= MsFlags::MS_RDONLY;
        }
        let target = format!("/proc/self/fd/{}", dir.as_raw_fd());
        nix::mount::mount(Some(FS_NAME), target.as_str(), Some(FS_TYPE), flags, Some(data.as_str()))?;
        tracing::info!(mountpoint = %self.mountpoint.display(), uid, gid, "mounted /dev/fuse");
        Ok(fuse.into())
    }

    /// Detaches the ciofs mount on top of the mount point, if there is
    /// one: never what is under it (a pod's emptyDir is itself a mount),
    /// and never through a symlink.
    fn unmount(&self) {
        if !mount_point::top_mount(&self.mountpoint).is_some_and(|mounted| mounted.is_ciofs()) {
            return;
        }
        match ciofs_frontends::fuse::unmount(&self.mountpoint, true) {
            Ok(()) => tracing::info!(mountpoint = %self.mountpoint.display(), "unmounted"),
            Err(e) => tracing::warn!(mountpoint = %self.mountpoint.display(), error = %e, "cannot unmount"),
        }
    }
}

/// The mount point, opened as a path only, refused if it is a symlink or
/// not a directory.
fn open_mount_point(path: &Path) -> io::Result<OwnedFd> {
    let flags = libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let dir = std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path);
    match dir {
        Ok(dir) => Ok(dir.into()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::ELOOP | libc::ENOTDIR)) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not a directory (a symlink?): refused", path.display()),
        )),
        Err(e) => Err(e),
    }
}

/// Waits for the peer to close its end (it exited); what it sends is
/// ignored.
async fn wait_for_hangup(mut stream: UnixStream, signals: &mut Signals) -> Served {
    let mut ignored = [0u8; 512];
    loop {
        tokio::select! {
            read = stream.read(&mut ignored) => match read {
                Ok(0) | Err(_) => return Served::Ended,
                Ok(_) => {}
            },
            () = signals.recv() => return Served::Stopped,
        }
    }
}
