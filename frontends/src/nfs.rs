//! The NFSv3 frontend: nfsserve's `NFSFileSystem` on top of a `Vfs`.
//!
//! Every call is a translation: decode the arguments, call the `Vfs`,
//! convert the answer with `attr_to_fattr3` or the error with
//! `errno_to_nfsstat3`. What nfsserve lacks or gets wrong is worked around
//! here in a few lines, never by forking it:
//!
//! - Handles are `ino ‖ generation ‖ magic`, so a handle survives a restart
//!   of the server (nfsserve's default embeds the start time) and a handle to
//!   a path that was deleted and recreated is STALE, never another file.
//! - nfsserve routes RMDIR to `remove`; we look the name up to pick
//!   `unlink` or `rmdir`.
//! - nfsserve's plain READDIR drops the client's cookie (it always lists
//!   from the start; huggingface/nfsserve#50); only READDIRPLUS pages
//!   correctly. Nothing in this trait can fix that.
//! - NFS has no open or close: reads and writes pass no handle, and the
//!   handle `create` returns is released at once.
//! - nfsserve allocates whatever length an RPC fragment header announces
//!   (up to 2 GiB): clients reach it through `rpc_records`, which refuses a
//!   request longer than the largest READ or WRITE needs.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use nfsserve::nfs::{
    fattr3, fileid3, filename3, fsinfo3, nfs_fh3, nfspath3, nfsstat3, nfstime3, post_op_attr, sattr3, set_atime,
    set_gid3, set_mode3, set_mtime, set_size3, set_uid3, specdata3,
};
use nfsserve::tcp::{NFSTcp, NFSTcpListener};
use nfsserve::vfs::{DirEntry as NfsDirEntry, NFSFileSystem, ReadDirResult, VFSCapabilities};
use tokio::sync::{oneshot, watch};
use tracing::{debug, instrument, warn};

use crate::admission::{Admission, Guarded};
use crate::metered::{self, OpTimer};
use crate::rpc_records::MAX_TRANSFER;
use crate::vfs::{Attr, FileKind, Ino, ROOT_INO, SetAttr, Vfs, VfsError};

/// Ends every file handle; a handle without it is not ours (BADHANDLE).
const FH_MAGIC: [u8; 4] = *b"cio1";
const FH_LEN: usize = 8 + 8 + FH_MAGIC.len();

/// Constant, so clients' readdir cookie verifiers survive a restart. nfsserve
/// also sends it as the write verifier, which is harmless: it answers every
/// WRITE as FILE_SYNC, so clients never COMMIT.
const SERVER_ID: [u8; 8] = *b"ciofs-v1";

/// Reported as every file's `fsid`: one mount, one filesystem.
const FSID: u64 = 0x63_696f_6673;

const DEFAULT_FILE_MODE: u32 = 0o644;
const DEFAULT_DIR_MODE: u32 = 0o755;

/// nfsserve's `NFSFileSystem` over a `Vfs`.
pub struct NfsAdapter<V: Vfs> {
    vfs: Arc<V>,
}

impl<V: Vfs> NfsAdapter<V> {
    pub fn new(vfs: Arc<V>) -> Self {
        Self { vfs }
    }
}

/// Serves `vfs` over NFSv3 on `listen` (127.0.0.1:2049; port 0 picks
/// one); whether that address may be reached from other hosts is the
/// caller's decision. The portmapper, mount and NFS programs all answer on
/// that one port. Clients are accepted here and relayed to nfsserve on a
/// loopback port of its own that only they get into (`admission`), each
/// request's size checked first (`rpc_records`). The bound address is sent on `ready` once clients can
/// connect. Runs until the future is dropped (a failed accept is tried
/// again); dropping it stops accepting, but connections are spawned, so
/// accepted ones live on until their client hangs up.
pub async fn serve<V: Vfs>(
    vfs: Arc<V>,
    listen: SocketAddr,
    ready: Option<oneshot::Sender<SocketAddr>>,
) -> io::Result<()> {
    let admission = Admission::new();
    let nfsserve = listen_guarded(&vfs, &admission).await?;
    let (behind, relayed_to) = watch::channel(nfsserve_address(&nfsserve.0));
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(%addr, "NFSv3 server listening");
    if let Some(ready) = ready {
        let _ = ready.send(addr);
    }
    tokio::select! {
        () = serve_behind(vfs, nfsserve, behind, &admission) => Ok(()),
        () = crate::rpc_records::relay_clients(listener, relayed_to, admission.clone()) => Ok(()),
    }
}

/// nfsserve listening on a loopback port of its own, guarded by `admission`
/// while the pair lives.
type Behind<'a, V> = (NFSTcpListener<NfsAdapter<V>>, Guarded<'a>);

/// nfsserve on a loopback port of its own that only the relay gets into;
/// a port that cannot be guarded is closed, never served.
async fn listen_guarded<'a, V: Vfs>(vfs: &Arc<V>, admission: &'a Admission) -> io::Result<Behind<'a, V>> {
    let nfsserve = NFSTcpListener::bind("127.0.0.1:0", NfsAdapter::new(vfs.clone())).await?;
    let guarded = admission.guard(nfsserve_address(&nfsserve))?;
    Ok((nfsserve, guarded))
}

fn nfsserve_address<V: Vfs>(nfsserve: &NFSTcpListener<NfsAdapter<V>>) -> SocketAddr {
    SocketAddr::new(nfsserve.get_listen_ip(), nfsserve.get_listen_port())
}

/// Runs nfsserve's accept loop, and a new one when it ends: it ends at the
/// first failed accept (no descriptor left, say), which would stop
/// serving for good. `behind` tells the relay where it listens; each new
/// listening socket is guarded by `admission` before it is used (if it
/// cannot be, it is closed and listening tried again), and the old one let
/// go first.
async fn serve_behind<V: Vfs>(
    vfs: Arc<V>,
    mut nfsserve: Behind<'_, V>,
    behind: watch::Sender<SocketAddr>,
    admission: &Admission,
) {
    loop {
        if let Err(e) = nfsserve.0.handle_forever().await {
            warn!("nfsserve stopped accepting: {e}; listening anew");
        }
        drop(nfsserve);
        nfsserve = loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            match listen_guarded(&vfs, admission).await {
                Ok(listener) => break listener,
                Err(e) => warn!("nfsserve cannot listen: {e}; trying again"),
            }
        };
        behind.send_replace(nfsserve_address(&nfsserve.0));
    }
}

/// What NFS shows for an `Attr`. ctime and atime equal mtime (tar compares
/// ctime; Google keeps no access time).
pub fn attr_to_fattr3(attr: &Attr) -> fattr3 {
    let ftype = match attr.kind {
        FileKind::Directory => nfsserve::nfs::ftype3::NF3DIR,
        FileKind::File => nfsserve::nfs::ftype3::NF3REG,
    };
    let time = to_nfstime(attr.mtime);
    fattr3 {
        ftype,
        mode: u32::from(attr.perm) & 0o7777,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        size: attr.size,
        used: attr.size,
        rdev: specdata3::default(),
        fsid: FSID,
        fileid: attr.ino,
        atime: time,
        mtime: time,
        ctime: time,
    }
}

/// The NFS status for an errno. Anything without an NFSv3 equivalent is IO.
pub fn errno_to_nfsstat3(errno: i32) -> nfsstat3 {
    use nfsstat3::*;
    match errno {
        0 => NFS3_OK,
        libc::EPERM => NFS3ERR_PERM,
        libc::ENOENT => NFS3ERR_NOENT,
        libc::ENXIO => NFS3ERR_NXIO,
        libc::EACCES => NFS3ERR_ACCES,
        libc::EEXIST => NFS3ERR_EXIST,
        libc::EXDEV => NFS3ERR_XDEV,
        libc::ENODEV => NFS3ERR_NODEV,
        libc::ENOTDIR => NFS3ERR_NOTDIR,
        libc::EISDIR => NFS3ERR_ISDIR,
        libc::EINVAL => NFS3ERR_INVAL,
        libc::EFBIG => NFS3ERR_FBIG,
        libc::ENOSPC => NFS3ERR_NOSPC,
        libc::EROFS => NFS3ERR_ROFS,
        libc::EMLINK => NFS3ERR_MLINK,
        libc::ENAMETOOLONG => NFS3ERR_NAMETOOLONG,
        libc::ENOTEMPTY => NFS3ERR_NOTEMPTY,
        libc::EDQUOT => NFS3ERR_DQUOT,
        libc::ESTALE => NFS3ERR_STALE,
        libc::ENOSYS | libc::EOPNOTSUPP => NFS3ERR_NOTSUPP,
        // The core's "write to a read-only special file" (`_stream`). NFS has
        // no descriptors; knfsd's STALE would make the client drop the handle.
        libc::EBADF => NFS3ERR_ACCES,
        // "Not now": JUKEBOX makes the client retry after a delay.
        libc::EAGAIN | libc::EBUSY => NFS3ERR_JUKEBOX,
        _ => NFS3ERR_IO,
    }
}

/// Answers NFS operation `op` with what `call` gives, timed and counted:
/// the one place an operation's failure is counted, logged and converted,
/// whatever step of it failed.
async fn nfs_op<T>(op: &'static str, call: impl Future<Output = Result<T, VfsError>>) -> Result<T, nfsstat3> {
    let _timer = OpTimer::start("nfs", op);
    call.await.map_err(|err| failed(op, err))
}

/// Operation `op` failed with `err`: counted, logged and converted.
fn failed(op: &'static str, err: VfsError) -> nfsstat3 {
    metered::op_failed("nfs", op, err.errno());
    if err.is_routine() {
        debug!(errno = err.errno(), "{err}");
    } else {
        warn!(errno = err.errno(), "{err}");
    }
    errno_to_nfsstat3(err.errno())
}

/// A name from the wire; `None` if it is not UTF-8 (no `Vfs` name can match).
fn utf8(name: &filename3) -> Option<&str> {
    std::str::from_utf8(name).ok()
}

/// An existing name: one that is not UTF-8 does not exist.
fn existing(name: &filename3) -> Result<&str, VfsError> {
    utf8(name).ok_or_else(|| VfsError::not_found("a name that is not UTF-8"))
}

/// A name to create: one that is not UTF-8 cannot be created.
fn new_name(name: &filename3) -> Result<&str, VfsError> {
    utf8(name).ok_or_else(|| VfsError::invalid("a name that is not UTF-8"))
}

fn encode_fh(ino: Ino, generation: u64) -> Vec<u8> {
    let mut fh = Vec::with_capacity(FH_LEN);
    fh.extend_from_slice(&ino.to_le_bytes());
    fh.extend_from_slice(&generation.to_le_bytes());
    fh.extend_from_slice(&FH_MAGIC);
    fh
}

/// `(ino, generation)` from a handle, or BADHANDLE if it is not one of ours.
fn decode_fh(fh: &[u8]) -> Result<(Ino, u64), nfsstat3> {
    if fh.len() != FH_LEN || fh[16..] != FH_MAGIC {
        return Err(nfsstat3::NFS3ERR_BADHANDLE);
    }
    let ino = u64::from_le_bytes(fh[0..8].try_into().unwrap());
    let generation = u64::from_le_bytes(fh[8..16].try_into().unwrap());
    Ok((ino, generation))
}

fn to_nfstime(time: SystemTime) -> nfstime3 {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    nfstime3 { seconds: u32::try_from(since.as_secs()).unwrap_or(u32::MAX), nseconds: since.subsec_nanos() }
}

fn from_nfstime(time: nfstime3) -> SystemTime {
    UNIX_EPOCH + Duration::new(time.seconds.into(), time.nseconds)
}

/// The `Vfs` form of a SETATTR (or CREATE's attributes).
fn sattr_to_setattr(sattr: &sattr3) -> SetAttr {
    SetAttr {
        size: match sattr.size {
            set_size3::size(size) => Some(size),
            set_size3::Void => None,
        },
        mode: match sattr.mode {
            set_mode3::mode(mode) => Some(mode),
            set_mode3::Void => None,
        },
        uid: match sattr.uid {
            set_uid3::uid(uid) => Some(uid),
            set_uid3::Void => None,
        },
        gid: match sattr.gid {
            set_gid3::gid(gid) => Some(gid),
            set_gid3::Void => None,
        },
        atime: match sattr.atime {
            set_atime::SET_TO_CLIENT_TIME(t) => Some(from_nfstime(t)),
            set_atime::SET_TO_SERVER_TIME => Some(SystemTime::now()),
            set_atime::DONT_CHANGE => None,
        },
        mtime: match sattr.mtime {
            set_mtime::SET_TO_CLIENT_TIME(t) => Some(from_nfstime(t)),
            set_mtime::SET_TO_SERVER_TIME => Some(SystemTime::now()),
            set_mtime::DONT_CHANGE => None,
        },
        // NFS has no open: a SETATTR names the file.
        fh: None,
    }
}

impl<V: Vfs> NfsAdapter<V> {
    /// Creates a file, NFS-style: there is no open, so the handle is released
    /// at once (without a flush: an empty editable file is not a commit).
    /// NFS has no open or close: a created file is flushed (made to exist)
    /// and released at once; later WRITEs come without a handle.
    async fn create_file(&self, dir: Ino, name: &str, mode: u32) -> Result<Attr, VfsError> {
        let (attr, opened) = self.vfs.create(dir, name, mode).await?;
        let flushed = self.vfs.flush(attr.ino, opened.fh).await;
        let released = self.vfs.release(attr.ino, opened.fh).await;
        flushed?;
        released?;
        Ok(attr)
    }
}

#[async_trait]
impl<V: Vfs> NFSFileSystem for NfsAdapter<V> {
    fn capabilities(&self) -> VFSCapabilities {
        // Otherwise the Vfs answers EROFS where the tree is read-only.
        if self.vfs.read_only() { VFSCapabilities::ReadOnly } else { VFSCapabilities::ReadWrite }
    }

    fn root_dir(&self) -> fileid3 {
        ROOT_INO
    }

    #[instrument(level = "debug", skip(self))]
    async fn lookup(&self, dir: fileid3, name: &filename3) -> Result<fileid3, nfsstat3> {
        nfs_op("lookup", async { Ok(self.vfs.lookup(dir, existing(name)?).await?.ino) }).await
    }

    #[instrument(level = "debug", skip(self))]
    async fn getattr(&self, ino: fileid3) -> Result<fattr3, nfsstat3> {
        nfs_op("getattr", async { Ok(attr_to_fattr3(&self.vfs.getattr(ino).await?)) }).await
    }

    #[instrument(level = "debug", skip(self))]
    async fn setattr(&self, ino: fileid3, sattr: sattr3) -> Result<fattr3, nfsstat3> {
        nfs_op("setattr", async { Ok(attr_to_fattr3(&self.vfs.setattr(ino, sattr_to_setattr(&sattr)).await?)) }).await
    }

    #[instrument(level = "debug", skip(self))]
    async fn read(&self, ino: fileid3, offset: u64, count: u32) -> Result<(Vec<u8>, bool), nfsstat3> {
        nfs_op("read", async {
            let (data, eof) = self.vfs.read(ino, None, offset, count).await?;
            Ok((data.into(), eof))
        })
        .await
    }

    #[instrument(level = "debug", skip(self, data), fields(len = data.len()))]
    async fn write(&self, ino: fileid3, offset: u64, data: &[u8]) -> Result<fattr3, nfsstat3> {
        nfs_op("write", async {
            // nfsserve acknowledges the whole request, so a short write continues.
            let mut done = 0;
            while done < data.len() {
                let n = self.vfs.write(ino, None, offset + done as u64, &data[done..]).await?;
                if n == 0 {
                    return Err(VfsError::io(format!("inode {ino}: a write made no progress")));
                }
                done += n as usize;
            }
            Ok(attr_to_fattr3(&self.vfs.getattr(ino).await?))
        })
        .await
    }

    #[instrument(level = "debug", skip(self))]
    async fn create(&self, dir: fileid3, name: &filename3, sattr: sattr3) -> Result<(fileid3, fattr3), nfsstat3> {
        nfs_op("create", async {
            let name = new_name(name)?;
            let mut set = sattr_to_setattr(&sattr);
            let mode = set.mode.take().unwrap_or(DEFAULT_FILE_MODE);
            let mut attr = match self.create_file(dir, name, mode).await {
                Ok(attr) => attr,
                // UNCHECKED create of an existing file opens it (RFC 1813 3.3.8);
                // nfsserve answers GUARDED's EXIST itself before calling us.
                Err(err) if err.errno() == libc::EEXIST => self.vfs.lookup(dir, name).await?,
                Err(err) => return Err(err),
            };
            // The rest (size 0 for O_TRUNC, times) applies as a setattr would.
            if set != SetAttr::default() {
                attr = self.vfs.setattr(attr.ino, set).await?;
            }
            Ok((attr.ino, attr_to_fattr3(&attr)))
        })
        .await
    }

    #[instrument(level = "debug", skip(self))]
    async fn create_exclusive(&self, dir: fileid3, name: &filename3) -> Result<fileid3, nfsstat3> {
        // nfsserve does not pass the create verifier, so a retransmitted
        // exclusive create cannot be recognised: an existing name is EXIST
        // (what tar's O_EXCL expects; it then unlinks and creates again).
        nfs_op("create_exclusive", async { Ok(self.create_file(dir, new_name(name)?, DEFAULT_FILE_MODE).await?.ino) })
            .await
    }

    #[instrument(level = "debug", skip(self))]
    async fn mkdir(&self, dir: fileid3, name: &filename3) -> Result<(fileid3, fattr3), nfsstat3> {
        nfs_op("mkdir", async {
            // nfsserve does not pass MKDIR's attributes.
            let attr = self.vfs.mkdir(dir, new_name(name)?, DEFAULT_DIR_MODE).await?;
            Ok((attr.ino, attr_to_fattr3(&attr)))
        })
        .await
    }

    #[instrument(level = "debug", skip(self))]
    async fn remove(&self, dir: fileid3, name: &filename3) -> Result<(), nfsstat3> {
        nfs_op("remove", async {
            // nfsserve sends both REMOVE and RMDIR here: the kind decides.
            let name = existing(name)?;
            match self.vfs.lookup(dir, name).await?.kind {
                FileKind::Directory => self.vfs.rmdir(dir, name).await,
                FileKind::File => self.vfs.unlink(dir, name).await,
            }
        })
        .await
    }

    #[instrument(level = "debug", skip(self))]
    async fn rename(
        &self,
        from_dir: fileid3,
        from: &filename3,
        to_dir: fileid3,
        to: &filename3,
    ) -> Result<(), nfsstat3> {
        nfs_op("rename", async {
            let (from, to) = (existing(from)?, new_name(to)?);
            self.vfs.rename(from_dir, from, to_dir, to).await
        })
        .await
    }

    #[instrument(level = "debug", skip(self))]
    async fn readdir(&self, dir: fileid3, after: fileid3, max: usize) -> Result<ReadDirResult, nfsstat3> {
        // The cookie is the previous entry's inode; nfsserve sends back the
        // last entry it fitted into the reply. At least one entry, so a tiny
        // client buffer still makes progress.
        let page = nfs_op("readdir", self.vfs.readdir(dir, None, after, max.max(1))).await?;
        let entries = page
            .entries
            .into_iter()
            .map(|e| NfsDirEntry {
                fileid: e.attr.ino,
                name: e.name.into_bytes().into(),
                attr: attr_to_fattr3(&e.attr),
            })
            .collect();
        Ok(ReadDirResult { entries, end: page.eof })
    }

    // `readdir_simple` keeps its default (list from the start): nfsserve does
    // not pass it the READDIR cookie, so nothing better is possible here.

    async fn symlink(
        &self,
        _dir: fileid3,
        _name: &filename3,
        _target: &nfspath3,
        _attr: &sattr3,
    ) -> Result<(fileid3, fattr3), nfsstat3> {
        // As through FUSE: symlinks are not supported (DESIGN, "Small things").
        Err(nfsstat3::NFS3ERR_PERM)
    }

    async fn readlink(&self, _ino: fileid3) -> Result<nfspath3, nfsstat3> {
        // No inode is a symlink; nfsserve has already answered for unknown ones.
        Err(nfsstat3::NFS3ERR_INVAL)
    }

    async fn fsinfo(&self, root: fileid3) -> Result<fsinfo3, nfsstat3> {
        const MIB: u32 = 1024 * 1024;
        // Not `self.getattr`: that would count as a GETATTR.
        let obj_attributes = match self.vfs.getattr(root).await {
            Ok(attr) => post_op_attr::attributes(attr_to_fattr3(&attr)),
            Err(_) => post_op_attr::Void,
        };
        // nfsserve's defaults, except: a 1 MiB preferred read size (Linux
        // takes rsize from rtpref, 124 KiB in nfsserve), Cloud Storage's
        // 5 TiB object limit, and no symlink support.
        Ok(fsinfo3 {
            obj_attributes,
            rtmax: MAX_TRANSFER,
            rtpref: MAX_TRANSFER,
            rtmult: MIB,
            wtmax: MAX_TRANSFER,
            wtpref: MAX_TRANSFER,
            wtmult: MIB,
            dtpref: MIB,
            maxfilesize: 5 << 40,
            time_delta: nfstime3 { seconds: 0, nseconds: 1_000_000 },
            properties: nfsserve::nfs::FSF_HOMOGENEOUS | nfsserve::nfs::FSF_CANSETTIME,
        })
    }

    fn id_to_fh(&self, ino: fileid3) -> nfs_fh3 {
        // An inode the Vfs does not know gets generation 0: STALE on use.
        let generation = self.vfs.generation(ino).unwrap_or(0);
        nfs_fh3 { data: encode_fh(ino, generation) }
    }

    fn fh_to_id(&self, fh: &nfs_fh3) -> Result<fileid3, nfsstat3> {
        let (ino, generation) = decode_fh(&fh.data)?;
        match self.vfs.generation(ino) {
            Some(current) if current == generation => Ok(ino),
            _ => Err(nfsstat3::NFS3ERR_STALE),
        }
    }

    fn serverid(&self) -> [u8; 8] {
        SERVER_ID
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: FileKind, mtime: SystemTime) -> Attr {
        let nlink = if kind == FileKind::Directory { 2 } else { 1 };
        Attr {
            ino: 42,
            kind,
            size: 1234,
            mtime,
            perm: 0o640,
            nlink,
            uid: 1000,
            gid: 100,
            generation: 7,
            cacheable: false,
        }
    }

    #[test]
    fn errno_table() {
        use nfsstat3::*;
        let table = [
            (libc::ENOENT, NFS3ERR_NOENT),
            (libc::EPERM, NFS3ERR_PERM),
            (libc::EACCES, NFS3ERR_ACCES),
            (libc::EEXIST, NFS3ERR_EXIST),
            (libc::ENOTDIR, NFS3ERR_NOTDIR),
            (libc::EISDIR, NFS3ERR_ISDIR),
            (libc::EINVAL, NFS3ERR_INVAL),
            (libc::ENOSPC, NFS3ERR_NOSPC),
            (libc::EDQUOT, NFS3ERR_DQUOT),
            (libc::EROFS, NFS3ERR_ROFS),
            (libc::ENAMETOOLONG, NFS3ERR_NAMETOOLONG),
            (libc::ENOTEMPTY, NFS3ERR_NOTEMPTY),
            (libc::ESTALE, NFS3ERR_STALE),
            (libc::EFBIG, NFS3ERR_FBIG),
            (libc::EXDEV, NFS3ERR_XDEV),
            (libc::ENOSYS, NFS3ERR_NOTSUPP),
            (libc::EOPNOTSUPP, NFS3ERR_NOTSUPP),
            (libc::EBADF, NFS3ERR_ACCES),
            (libc::EAGAIN, NFS3ERR_JUKEBOX),
            (libc::EBUSY, NFS3ERR_JUKEBOX),
            (libc::EIO, NFS3ERR_IO),
            (libc::ETIMEDOUT, NFS3ERR_IO),
            (libc::ECONNRESET, NFS3ERR_IO),
        ];
        for (errno, want) in table {
            let got = errno_to_nfsstat3(errno);
            assert_eq!(got as u32, want as u32, "errno {errno}: got {got:?}, want {want:?}");
        }
    }

    #[test]
    fn fattr_of_file_and_dir() {
        let mtime = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        let f = attr_to_fattr3(&attr(FileKind::File, mtime));
        assert!(matches!(f.ftype, nfsserve::nfs::ftype3::NF3REG));
        assert_eq!((f.mode, f.nlink, f.uid, f.gid), (0o640, 1, 1000, 100));
        assert_eq!((f.size, f.fileid, f.fsid), (1234, 42, FSID));
        for t in [f.atime, f.mtime, f.ctime] {
            assert_eq!((t.seconds, t.nseconds), (1_700_000_000, 123_456_789));
        }
        let d = attr_to_fattr3(&attr(FileKind::Directory, mtime));
        assert!(matches!(d.ftype, nfsserve::nfs::ftype3::NF3DIR));
        assert_eq!(d.nlink, 2);
        let removed = attr_to_fattr3(&Attr { nlink: 0, ..attr(FileKind::File, mtime) });
        assert_eq!(removed.nlink, 0);
    }

    #[test]
    fn times_out_of_range_are_clamped() {
        let before_epoch = UNIX_EPOCH - Duration::from_secs(10);
        assert_eq!(to_nfstime(before_epoch).seconds, 0);
        let after_2106 = UNIX_EPOCH + Duration::from_secs(1 << 33);
        assert_eq!(to_nfstime(after_2106).seconds, u32::MAX);
        let t = nfstime3 { seconds: 5, nseconds: 6 };
        assert_eq!(from_nfstime(t), UNIX_EPOCH + Duration::new(5, 6));
    }

    #[test]
    fn file_handles_round_trip_and_reject_foreign_ones() {
        let fh = encode_fh(0x0102_0304_0506_0708, 9);
        assert_eq!(fh.len(), FH_LEN);
        assert_eq!(decode_fh(&fh).unwrap(), (0x0102_0304_0506_0708, 9));

        let mut wrong_magic = fh.clone();
        *wrong_magic.last_mut().unwrap() ^= 1;
        for bad in [&fh[..16], &wrong_magic[..], &[][..], &[0; 32][..]] {
            assert!(matches!(decode_fh(bad), Err(nfsstat3::NFS3ERR_BADHANDLE)));
        }
    }

    #[test]
    fn sattr_conversion() {
        let sattr = sattr3 {
            mode: set_mode3::mode(0o600),
            uid: set_uid3::Void,
            gid: set_gid3::gid(5),
            size: set_size3::size(0),
            atime: set_atime::DONT_CHANGE,
            mtime: set_mtime::SET_TO_CLIENT_TIME(nfstime3 { seconds: 10, nseconds: 0 }),
        };
        let set = sattr_to_setattr(&sattr);
        assert_eq!(
            set,
            SetAttr {
                size: Some(0),
                mode: Some(0o600),
                uid: None,
                gid: Some(5),
                mtime: Some(UNIX_EPOCH + Duration::from_secs(10)),
                atime: None,
                fh: None,
            }
        );
        assert_eq!(sattr_to_setattr(&sattr3::default()), SetAttr::default());
    }

    #[test]
    fn non_utf8_names() {
        let bad: filename3 = vec![0xff, 0xfe].into();
        let status = |name: Result<&str, VfsError>| name.err().map(|e| errno_to_nfsstat3(e.errno()));
        assert!(matches!(status(existing(&bad)), Some(nfsstat3::NFS3ERR_NOENT)));
        assert!(matches!(status(new_name(&bad)), Some(nfsstat3::NFS3ERR_INVAL)));
        let good: filename3 = b"a.txt"[..].into();
        assert_eq!(existing(&good).unwrap(), "a.txt");
    }
}
