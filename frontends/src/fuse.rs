//! The FUSE frontend: each kernel request is handed to the tokio runtime,
//! which runs the `Vfs` call and replies from the task, so a slow call to
//! Google never blocks fuser's session threads. A callback here is a
//! translation and nothing more.

use std::ffi::OsStr;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, SystemTime};

use fuser::{
    BsdFileFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, KernelConfig, LockOwner, MountOption, OpenAccMode, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, SessionACL,
    TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;
use tracing::Instrument;

use crate::metered::{self, OpTimer};
use crate::vfs::{Attr, ClientCache, DirCaching, FileKind, OpenFlags, SetAttr, Vfs, VfsError};

/// How many entries one readdir asks of the Vfs; the reply buffer (4 KiB
/// for plain readdir, more for readdirplus) usually fills before that.
const READDIR_BATCH: usize = 256;

/// The source ciofs's FUSE mounts show in /proc/mounts.
pub const FS_NAME: &str = "ciofs";
/// Their type there, when mounted with the subtype (`fuse-helper`,
/// mount(8)'s helper forms); fuser's own mount shows `fuse`.
pub const FS_TYPE: &str = "fuse.ciofs";

/// How a FUSE mount is set up.
#[derive(Clone, Debug)]
pub struct FuseOptions {
    pub fs_name: String,
    /// How long the kernel may trust attributes and names that change by
    /// themselves (`Attr::cacheable` false).
    pub ttl: Duration,
    /// How long the kernel may trust cacheable attributes and names (the
    /// metadata TTL), and keep the listings of directories the `Vfs` lets
    /// it keep (`Vfs::dir_caching`). Never shorter than `ttl`.
    pub cacheable_ttl: Duration,
    /// Session threads reading from /dev/fuse.
    pub threads: usize,
    /// Let other users than the one mounting see the files.
    pub allow_other: bool,
    pub read_only: bool,
    /// The kernel's read-ahead for the mount, in KiB (root only; the default
    /// of 128 KiB halves sequential throughput; gcsfuse documents the same
    /// tuning).
    pub read_ahead_kb: Option<u32>,
}

impl Default for FuseOptions {
    fn default() -> Self {
        Self {
            fs_name: FS_NAME.to_string(),
            ttl: Duration::from_secs(1),
            cacheable_ttl: Duration::from_secs(1),
            threads: 4,
            allow_other: false,
            read_only: false,
            read_ahead_kb: Some(1024),
        }
    }
}

/// Where a session's connection to the kernel comes from.
pub enum FuseTarget<'a> {
    /// Mounted here (as root, or through fusermount3).
    Path(&'a Path),
    /// A /dev/fuse descriptor that a privileged helper opened and mounted
    /// (`ciofs mount /dev/fd/N`, as libfuse and the gcs-fuse CSI driver
    /// take it): nothing is mounted or unmounted here.
    Descriptor(DevFuse),
}

/// A descriptor known to be /dev/fuse: made only by `DevFuse::check`, so
/// that a caller can refuse a wrong one early (before setting anything up)
/// and `mount` need not check it again.
pub struct DevFuse(OwnedFd);

impl DevFuse {
    /// Refuses a descriptor that is not /dev/fuse (character device
    /// 10:229): served as one, another file would be read as the kernel's
    /// requests.
    pub fn check(fd: OwnedFd) -> io::Result<Self> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let meta = std::fs::File::from(fd.try_clone()?).metadata()?;
        let device = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
        match meta.file_type().is_char_device() && device == (10, 229) {
            true => Ok(DevFuse(fd)),
            false => Err(io::Error::new(io::ErrorKind::InvalidInput, "the descriptor is not /dev/fuse")),
        }
    }
}

/// A mounted filesystem; dropping it unmounts.
pub struct FuseMount {
    session: fuser::BackgroundSession,
    /// Where it is mounted (canonical); None for a descriptor mounted by
    /// someone else, whose mount is theirs to unmount.
    mountpoint: Option<PathBuf>,
}

impl FuseMount {
    /// Where it is mounted, if it is ours to unmount (`unmount`); None for
    /// a passed descriptor: its helper unmounts, and the session ends with
    /// the process, whose exit closes the descriptor.
    pub fn mountpoint(&self) -> Option<&Path> {
        self.mountpoint.as_deref()
    }

    /// Whether the session ended: the kernel ends it once the last copy
    /// of the mount is gone (unmounted here or from outside; a copy in
    /// another mount namespace keeps it serving).
    pub fn is_finished(&self) -> bool {
        self.session.guard.is_finished()
    }

    /// Lets the session go without unmounting or waiting for it, for a
    /// process about to exit: what still holds the mount then sees
    /// ENOTCONN.
    pub fn abandon(self) {
        std::mem::forget(self.session);
    }
}

/// Unmounts the FUSE mount at `mountpoint`: umount2 as root, else
/// `fusermount3 -u` (the setuid helper that mounted it). `lazy` detaches
/// it even while busy (MNT_DETACH, `-z`); otherwise a busy mount fails
/// (EBUSY) and goes on serving.
pub fn unmount(mountpoint: &Path, lazy: bool) -> io::Result<()> {
    use nix::mount::MntFlags;
    if nix::unistd::geteuid().is_root() {
        // Never through a symlink put where the mount point was.
        let flags = if lazy { MntFlags::MNT_DETACH } else { MntFlags::empty() } | MntFlags::UMOUNT_NOFOLLOW;
        return nix::mount::umount2(mountpoint, flags).map_err(io::Error::from);
    }
    let flag = if lazy { "-uz" } else { "-u" };
    let run = |program: &str| std::process::Command::new(program).arg(flag).arg(mountpoint).output();
    // fuse2 systems have only `fusermount`.
    let output = match run("fusermount3") {
        Err(e) if e.kind() == io::ErrorKind::NotFound => run("fusermount")?,
        other => other?,
    };
    match output.status.success() {
        true => Ok(()),
        false => Err(io::Error::other(String::from_utf8_lossy(&output.stderr).trim().to_string())),
    }
}

/// Mounts `vfs` at `target`. Must be called from within a tokio runtime,
/// which runs the requests.
pub fn mount<V: Vfs>(vfs: Arc<V>, target: FuseTarget<'_>, options: &FuseOptions) -> io::Result<FuseMount> {
    let mut mount_options = vec![
        MountOption::FSName(options.fs_name.clone()),
        MountOption::Subtype("ciofs".to_string()),
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::DefaultPermissions,
    ];
    if options.read_only {
        mount_options.push(MountOption::RO);
    }
    let mut config = Config::default();
    config.mount_options = mount_options;
    config.acl = if options.allow_other { SessionACL::All } else { SessionACL::Owner };
    config.n_threads = Some(options.threads.max(1));
    // A cloned descriptor is /dev/fuse opened again, which a process that
    // was passed its descriptor may not be able to (no /dev/fuse in its
    // container, or not its to open): its threads share the one.
    config.clone_fd = options.threads > 1 && matches!(target, FuseTarget::Path(_));
    let watched = vfs.clone();
    let ttls = Ttls { short: options.ttl, cacheable: options.cacheable_ttl.max(options.ttl) };
    let adapter = FuseAdapter { vfs, runtime: Handle::current(), ttls, notifier: Arc::default() };
    let adapter_notifier = adapter.notifier.clone();
    let (session, mountpoint) = match target {
        FuseTarget::Path(mountpoint) => {
            let canonical = mountpoint.canonicalize()?;
            (fuser::Session::new(adapter, mountpoint, &config)?, Some(canonical))
        }
        FuseTarget::Descriptor(DevFuse(fd)) => (fuser::Session::from_fd(adapter, fd, config.acl, config)?, None),
    };
    let notifier = session.notifier();
    let _ = adapter_notifier.set(session.notifier());
    watched.watch_client_cache(Arc::new(KernelCache::new(notifier)?));
    let session = session.spawn()?;
    if let (Some(kb), Some(canonical)) = (options.read_ahead_kb, &mountpoint)
        && let Err(e) = set_read_ahead(canonical, kb)
    {
        tracing::debug!(error = %e, "cannot raise the read-ahead (not root?)");
    }
    Ok(FuseMount { session, mountpoint })
}

/// The kernel's caches of this mount, told what changed (`Vfs::watch_client_cache`).
struct KernelCache {
    notifier: fuser::Notifier,
    /// To the thread that drops pages and entries: the kernel takes the
    /// inode's or directory's lock for them, and waits for requests in
    /// flight on it, which the caller's runtime may be answering.
    dropper: std::sync::mpsc::Sender<Dropped>,
}

/// What the kernel is told to drop, on the dropping thread.
enum Dropped {
    Content(u64),
    Entry(u64, String),
}

impl KernelCache {
    fn new(notifier: fuser::Notifier) -> io::Result<Self> {
        let (dropper, dropped) = std::sync::mpsc::channel();
        let on_thread = notifier.clone();
        // Ends when the sender does (the namespace holding this goes).
        std::thread::Builder::new().name("ciofs-kernel-inval".into()).spawn(move || {
            for what in dropped {
                match what {
                    // Offset 0, length 0: every cached page, and the attributes.
                    Dropped::Content(ino) => ignore_unknown("content", ino, on_thread.inval_inode(INodeNo(ino), 0, 0)),
                    Dropped::Entry(parent, name) => {
                        let result = on_thread.inval_entry(INodeNo(parent), std::ffi::OsStr::new(&name));
                        ignore_unknown("entry", parent, result)
                    }
                }
            }
        })?;
        Ok(Self { notifier, dropper })
    }
}

impl ClientCache for KernelCache {
    fn attributes_changed(&self, ino: u64) {
        invalidate_attributes(&self.notifier, ino);
    }

    fn content_changed(&self, ino: u64) {
        let _ = self.dropper.send(Dropped::Content(ino));
    }

    fn entry_changed(&self, parent: u64, name: &str) {
        let _ = self.dropper.send(Dropped::Entry(parent, name.to_string()));
    }
}

/// Tells the kernel to ask for `ino`'s attributes again rather than use
/// the ones it holds (offset -1: its cached pages stay). Safe from within
/// a request: invalidating attributes takes no lock the kernel holds while
/// it waits for a reply.
fn invalidate_attributes(notifier: &fuser::Notifier, ino: u64) {
    ignore_unknown("attributes", ino, notifier.inval_inode(INodeNo(ino), -1, 0));
}

/// What an invalidation answered: an inode or entry the kernel does not
/// hold has nothing to drop.
fn ignore_unknown(what: &str, ino: u64, result: io::Result<()>) {
    match result {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
        Err(e) => tracing::debug!(ino, what, error = %e, "cannot invalidate the kernel's cache"),
    }
}

/// Writes the read-ahead of the mount at `mountpoint` to its backing device
/// info in sysfs, found by the device number in /proc/self/mountinfo.
fn set_read_ahead(mountpoint: &Path, kb: u32) -> io::Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")?;
    let wanted = mountpoint.to_string_lossy().replace(' ', "\\040");
    // The last line for the path is the mount on top.
    let device = info
        .lines()
        .rev()
        .map(|line| line.split(' ').collect::<Vec<_>>())
        .find(|fields| fields.get(4) == Some(&wanted.as_str()))
        .and_then(|fields| fields.get(2).map(|d| d.to_string()))
        .ok_or_else(|| io::Error::other("mount not found in /proc/self/mountinfo"))?;
    std::fs::write(format!("/sys/class/bdi/{device}/read_ahead_kb"), kb.to_string())
}

struct FuseAdapter<V: Vfs> {
    vfs: Arc<V>,
    runtime: Handle,
    ttls: Ttls,
    /// Set once the session exists (it is made from the adapter).
    notifier: Arc<OnceLock<fuser::Notifier>>,
}

/// The kernel's entry and attribute timeouts.
#[derive(Clone, Copy)]
struct Ttls {
    short: Duration,
    cacheable: Duration,
}

impl Ttls {
    fn of(&self, attr: &Attr) -> Duration {
        if attr.cacheable { self.cacheable } else { self.short }
    }
}

impl<V: Vfs> FuseAdapter<V> {
    /// Runs `call` inside a span named for the operation; the future
    /// replies itself. It is polled once here, on the session thread: most
    /// calls are answered from memory (a cached attribute, bytes already
    /// read ahead), and handing each to a runtime worker costs two thread
    /// switches per request. Only a call that has to wait goes to the
    /// runtime, which polls it again with a real waker.
    fn spawn<F, Fut>(&self, op: &'static str, call: F)
    where
        F: FnOnce(Arc<V>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let span = tracing::debug_span!("fuse", op);
        let timer = OpTimer::start("fuse", op);
        let call = call(self.vfs.clone());
        let mut task = Box::pin(
            async move {
                call.await;
                drop(timer);
            }
            .instrument(span),
        );
        let _context = self.runtime.enter();
        let mut here = Context::from_waker(Waker::noop());
        // A panic must cost this request only (its dropped reply answers
        // EIO), not the session thread: fuser does not catch it, and the
        // mount ends with its first thread.
        match std::panic::catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(&mut here))) {
            Ok(Poll::Pending) => {
                self.runtime.spawn(task);
            }
            Ok(Poll::Ready(())) => {}
            Err(_) => tracing::error!(op, "the request panicked; answered EIO"),
        }
    }
}

/// Logs a failed call at a level that fits and gives the errno to reply.
fn errno(op: &'static str, error: &VfsError) -> Errno {
    metered::op_failed("fuse", op, error.errno());
    if error.is_routine() {
        tracing::debug!(op, errno = error.errno(), "{error}");
    } else {
        tracing::warn!(op, errno = error.errno(), "{error}");
    }
    Errno::from_i32(error.errno())
}

fn file_attr(attr: &Attr) -> FileAttr {
    let kind = match attr.kind {
        FileKind::Directory => FileType::Directory,
        FileKind::File => FileType::RegularFile,
    };
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.size.div_ceil(512),
        atime: attr.mtime,
        mtime: attr.mtime,
        ctime: attr.mtime,
        crtime: attr.mtime,
        kind,
        perm: attr.perm,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: 0,
        blksize: 1 << 20,
        flags: 0,
    }
}

fn open_flags(flags: fuser::OpenFlags) -> OpenFlags {
    OpenFlags {
        write: !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY),
        truncate: flags.0 & libc::O_TRUNC != 0,
        append: flags.0 & libc::O_APPEND != 0,
    }
}

fn fopen_flags(opened: &crate::vfs::Opened) -> FopenFlags {
    let mut flags = FopenFlags::empty();
    if opened.direct_io {
        flags |= FopenFlags::FOPEN_DIRECT_IO;
    }
    if opened.stream {
        // Not FOPEN_NONSEEKABLE: `head` seeks back to the end of what it
        // printed when it is done (nothing to move, as each read is one
        // line) and would complain "Illegal seek" on every use.
        flags |= FopenFlags::FOPEN_DIRECT_IO;
    }
    if opened.keep_cache {
        flags |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    flags
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// A name from the kernel as UTF-8; Cloud Storage names are UTF-8, so any
/// other name cannot exist.
fn utf8(name: &OsStr) -> Result<String, Errno> {
    name.to_str().map(str::to_string).ok_or(Errno::ENOENT)
}

impl<V: Vfs> Filesystem for FuseAdapter<V> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_MAX_PAGES;
        let supported = wanted & config.capabilities();
        if let Err(missing) = config.add_capabilities(supported) {
            tracing::debug!(?missing, "kernel lacks FUSE capabilities");
        }
        let _ = config.set_max_readahead(1 << 20);
        let _ = config.set_max_background(64);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = match utf8(name) {
            Ok(name) => name,
            Err(e) => return reply.error(e),
        };
        let ttls = self.ttls;
        self.spawn("lookup", move |vfs| async move {
            match vfs.lookup(parent.0, &name).await {
                Ok(attr) => reply.entry(&ttls.of(&attr), &file_attr(&attr), Generation(attr.generation)),
                Err(e) => reply.error(errno("lookup", &e)),
            }
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.vfs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let ttls = self.ttls;
        self.spawn("getattr", move |vfs| async move {
            match vfs.getattr(ino.0).await {
                Ok(attr) => reply.attr(&ttls.of(&attr), &file_attr(&attr)),
                Err(e) => reply.error(errno("getattr", &e)),
            }
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let set =
            SetAttr { size, mode, uid, gid, mtime: mtime.map(time), atime: atime.map(time), fh: fh.map(|fh| fh.0) };
        let ttls = self.ttls;
        self.spawn("setattr", move |vfs| async move {
            match vfs.setattr(ino.0, set).await {
                Ok(attr) => reply.attr(&ttls.of(&attr), &file_attr(&attr)),
                Err(e) => reply.error(errno("setattr", &e)),
            }
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: fuser::OpenFlags, reply: ReplyOpen) {
        let flags = open_flags(flags);
        self.spawn("open", move |vfs| async move {
            match vfs.open(ino.0, flags).await {
                Ok(opened) => reply.opened(FileHandle(opened.fh), fopen_flags(&opened)),
                Err(e) => reply.error(errno("open", &e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.spawn("read", move |vfs| async move {
            match vfs.read(ino.0, Some(fh.0), offset, size).await {
                Ok((data, _eof)) => reply.data(&data),
                Err(e) => reply.error(errno("read", &e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let data = data.to_vec();
        self.spawn("write", move |vfs| async move {
            match vfs.write(ino.0, Some(fh.0), offset, &data).await {
                Ok(written) => reply.written(written),
                Err(e) => reply.error(errno("write", &e)),
            }
        });
    }

    fn flush(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        self.spawn("flush", move |vfs| async move {
            match vfs.flush(ino.0, fh.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("flush", &e)),
            }
        });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        flags: fuser::OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // A file written through this handle may look otherwise once it is
        // closed (a document is rendered again from what was applied):
        // the kernel, which may keep its attributes for the metadata TTL,
        // asks again. After the reply, which nothing should delay (at
        // unmount the kernel stops waiting for it).
        let written = open_flags(flags).write.then(|| self.notifier.clone());
        self.spawn("release", move |vfs| async move {
            match vfs.release(ino.0, fh.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("release", &e)),
            }
            if let Some(notifier) = written.as_ref().and_then(|n| n.get()) {
                invalidate_attributes(notifier, ino.0);
            }
        });
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        self.spawn("fsync", move |vfs| async move {
            match vfs.fsync(ino.0, Some(fh.0)).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("fsync", &e)),
            }
        });
    }

    /// A directory the `Vfs` lets the kernel keep the listing of is opened
    /// with FOPEN_CACHE_DIR: the kernel keeps the entries it reads in its
    /// page cache and serves the next listing from them, with
    /// FOPEN_KEEP_CACHE while they are still the directory's. Without it
    /// the kernel drops what it kept and reads the listing again. (The
    /// kernel drops them by itself too when it creates, removes or renames
    /// an entry of the directory.)
    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: fuser::OpenFlags, reply: ReplyOpen) {
        let caching = self.ttls.cacheable > self.ttls.short;
        self.spawn("opendir", move |vfs| async move {
            match vfs.opendir(ino.0).await {
                Ok(fh) => {
                    let mut flags = FopenFlags::empty();
                    let dir = if caching { vfs.dir_caching(ino.0) } else { DirCaching::default() };
                    if dir.cache {
                        flags |= FopenFlags::FOPEN_CACHE_DIR;
                    }
                    if dir.cache && dir.keep {
                        flags |= FopenFlags::FOPEN_KEEP_CACHE;
                    }
                    reply.opened(FileHandle(fh), flags)
                }
                Err(e) => reply.error(errno("opendir", &e)),
            }
        });
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        self.spawn("readdir", move |vfs| async move {
            match vfs.readdir(ino.0, Some(fh.0), offset, READDIR_BATCH).await {
                Ok(page) => {
                    for entry in &page.entries {
                        let kind = file_attr(&entry.attr).kind;
                        // The offset of an entry is its cookie: its inode number.
                        if reply.add(INodeNo(entry.attr.ino), entry.attr.ino, kind, &entry.name) {
                            break;
                        }
                    }
                    reply.ok();
                }
                Err(e) => reply.error(errno("readdir", &e)),
            }
        });
    }

    fn readdirplus(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        let ttls = self.ttls;
        self.spawn("readdirplus", move |vfs| async move {
            match vfs.readdir(ino.0, Some(fh.0), offset, READDIR_BATCH).await {
                Ok(page) => {
                    for entry in &page.entries {
                        let attr = file_attr(&entry.attr);
                        let generation = Generation(entry.attr.generation);
                        let ttl = ttls.of(&entry.attr);
                        if reply.add(INodeNo(entry.attr.ino), entry.attr.ino, &entry.name, &ttl, &attr, generation) {
                            break;
                        }
                        // The kernel takes a reference to every entry in the reply.
                        vfs.count_lookup(entry.attr.ino);
                    }
                    reply.ok();
                }
                Err(e) => reply.error(errno("readdirplus", &e)),
            }
        });
    }

    fn releasedir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _flags: fuser::OpenFlags, reply: ReplyEmpty) {
        self.spawn("releasedir", move |vfs| async move {
            match vfs.releasedir(ino.0, fh.0).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("releasedir", &e)),
            }
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.spawn("statfs", move |vfs| async move {
            match vfs.statfs().await {
                Ok(s) => reply.statfs(
                    s.blocks,
                    s.blocks_free,
                    s.blocks_free,
                    s.files,
                    s.files_free,
                    s.block_size,
                    s.name_max,
                    s.block_size,
                ),
                Err(e) => reply.error(errno("statfs", &e)),
            }
        });
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        let name = match name.to_str() {
            Some(name) => name.to_string(),
            None => return reply.error(Errno::EINVAL),
        };
        let ttls = self.ttls;
        self.spawn("mkdir", move |vfs| async move {
            match vfs.mkdir(parent.0, &name, mode).await {
                Ok(attr) => reply.entry(&ttls.of(&attr), &file_attr(&attr), Generation(attr.generation)),
                Err(e) => reply.error(errno("mkdir", &e)),
            }
        });
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let name = match name.to_str() {
            Some(name) => name.to_string(),
            None => return reply.error(Errno::EINVAL),
        };
        let ttls = self.ttls;
        self.spawn("create", move |vfs| async move {
            match vfs.create(parent.0, &name, mode).await {
                Ok((attr, opened)) => reply.created(
                    &ttls.of(&attr),
                    &file_attr(&attr),
                    Generation(attr.generation),
                    FileHandle(opened.fh),
                    fopen_flags(&opened),
                ),
                Err(e) => reply.error(errno("create", &e)),
            }
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match utf8(name) {
            Ok(name) => name,
            Err(e) => return reply.error(e),
        };
        self.spawn("unlink", move |vfs| async move {
            match vfs.unlink(parent.0, &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("unlink", &e)),
            }
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = match utf8(name) {
            Ok(name) => name,
            Err(e) => return reply.error(e),
        };
        self.spawn("rmdir", move |vfs| async move {
            match vfs.rmdir(parent.0, &name).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("rmdir", &e)),
            }
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = match (utf8(name), newname.to_str()) {
            (Ok(name), Some(newname)) => (name, newname.to_string()),
            (Err(e), _) => return reply.error(e),
            (_, None) => return reply.error(Errno::EINVAL),
        };
        self.spawn("rename", move |vfs| async move {
            match vfs.rename(parent.0, &name, newparent.0, &newname).await {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno("rename", &e)),
            }
        });
    }

    // Extended attributes are not supported. ENOSYS (not ENOTSUP) makes the
    // kernel stop asking, so `ls -l` does not pay a round trip per entry.
    fn getxattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    // Links and device nodes have no Cloud Storage equivalent.
    fn symlink(&self, _req: &Request, _parent: INodeNo, _link_name: &OsStr, _target: &Path, reply: ReplyEntry) {
        reply.error(Errno::EPERM);
    }

    fn link(&self, _req: &Request, _ino: INodeNo, _newparent: INodeNo, _newname: &OsStr, reply: ReplyEntry) {
        reply.error(Errno::EPERM);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EPERM);
    }
}
