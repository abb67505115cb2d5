//! The contract between ciofs's core and its frontends.
//!
//! `Vfs` is inode-based and async. Both frontends (FUSE and NFSv3) translate
//! their protocol's requests into these calls and the answers back; no
//! protocol type appears here, and nothing in the core knows which frontend
//! called it.
//!
//! Inode numbers are stable: the core derives them from resource paths, so
//! an NFS handle stays valid across a restart of the server.

use std::fmt;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

/// An inode number. `ROOT_INO` is the mount root.
pub type Ino = u64;

/// The mount root's inode number (FUSE requires 1).
pub const ROOT_INO: Ino = 1;

/// A handle returned by `open`/`create` and passed back on reads and writes.
/// The NFS frontend, which has no open, passes `None`.
pub type Fh = u64;

/// The one error type of the core: an errno and a message for humans.
#[derive(Clone, PartialEq, Eq)]
pub struct VfsError {
    errno: i32,
    message: String,
}

impl VfsError {
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        Self { errno, message: message.into() }
    }

    pub fn not_found(what: impl fmt::Display) -> Self {
        Self::new(libc::ENOENT, format!("{what}: no such file or directory"))
    }

    pub fn read_only(what: impl fmt::Display) -> Self {
        Self::new(libc::EROFS, format!("{what}: read-only"))
    }

    // Each kind of refusal, by what it means; the errno is chosen here.

    /// EINVAL: what was written or asked is not valid (a document, a name).
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(libc::EINVAL, message)
    }

    /// EISDIR: a file operation on a directory.
    pub fn is_dir(message: impl Into<String>) -> Self {
        Self::new(libc::EISDIR, message)
    }

    /// ENOTDIR: a directory operation on a file.
    pub fn not_dir(message: impl Into<String>) -> Self {
        Self::new(libc::ENOTDIR, message)
    }

    /// EEXIST: the name is taken.
    pub fn exists(message: impl Into<String>) -> Self {
        Self::new(libc::EEXIST, message)
    }

    /// ENOTEMPTY: a directory that still holds something.
    pub fn not_empty(message: impl Into<String>) -> Self {
        Self::new(libc::ENOTEMPTY, message)
    }

    /// EPERM: never possible at this place of the tree, whoever asks.
    pub fn not_permitted(message: impl Into<String>) -> Self {
        Self::new(libc::EPERM, message)
    }

    /// EXDEV: a rename that `mv` should do as a copy and a removal.
    pub fn cross_device(message: impl Into<String>) -> Self {
        Self::new(libc::EXDEV, message)
    }

    /// ESTALE: the inode or handle names something that is gone.
    pub fn stale(message: impl Into<String>) -> Self {
        Self::new(libc::ESTALE, message)
    }

    /// EBADF: the handle is not open for this.
    pub fn bad_handle(message: impl Into<String>) -> Self {
        Self::new(libc::EBADF, message)
    }

    /// EBUSY: another handle holds what this needs; try again later.
    pub fn busy(message: impl Into<String>) -> Self {
        Self::new(libc::EBUSY, message)
    }

    /// EIO: a local failure (the staging disk) or a service that failed.
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(libc::EIO, message)
    }

    pub fn errno(&self) -> i32 {
        self.errno
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether this error is an expected answer (ENOENT on lookup, say) that
    /// should not be logged above debug level.
    pub fn is_routine(&self) -> bool {
        // EINTR: a `_stream` read that had no message within its wait.
        // EROFS: a change refused by `--read-only`, as the user asked.
        matches!(self.errno, libc::ENOENT | libc::EEXIST | libc::ENOTEMPTY | libc::EINTR | libc::EROFS)
    }
}

impl fmt::Debug for VfsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VfsError(errno {}: {})", self.errno, self.message)
    }
}

impl fmt::Display for VfsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for VfsError {}

pub type VfsResult<T> = Result<T, VfsError>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Directory,
    File,
}

/// What stat shows for an inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr {
    pub ino: Ino,
    pub kind: FileKind,
    pub size: u64,
    /// Modification time; ctime is the same (tar compares both).
    pub mtime: SystemTime,
    /// Permission bits (e.g. 0o644), without the file type.
    pub perm: u16,
    /// Links: 1 for a file, 0 for one removed while open, 2 for a directory
    /// (its subdirectories are not counted: that would take a listing).
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    /// The inode's generation: bumped when a path is recreated.
    pub generation: u64,
    /// Changes only through this mount or when Google's copy changes (a
    /// Cloud Storage object, directory or `.meta/` document): a frontend
    /// may keep it, and the name, for the metadata TTL. False for what
    /// changes by itself (`.ciofs/errors`, a table's `_status.json`, a
    /// stream): kept briefly.
    pub cacheable: bool,
}

/// One entry of a directory listing, with its attributes (readdirplus).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub attr: Attr,
}

/// A page of a directory listing. Entries come in a deterministic order; the
/// cookie to continue after an entry is that entry's inode number.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DirPage {
    pub entries: Vec<DirEntry>,
    /// True when no entry follows the last one returned.
    pub eof: bool,
}

/// Which attributes a setattr changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetAttr {
    pub size: Option<u64>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mtime: Option<SystemTime>,
    pub atime: Option<SystemTime>,
    /// The handle it comes through (FUSE's ftruncate, fchmod): a file
    /// removed or replaced while open is still reached by it. None for a
    /// call by path (truncate(2), NFS).
    pub fh: Option<Fh>,
}

/// How a file is opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenFlags {
    pub write: bool,
    pub truncate: bool,
    pub append: bool,
}

/// What an open handle asks of the frontend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Opened {
    pub fh: Fh,
    /// Bypass the kernel's page cache.
    pub direct_io: bool,
    /// A stream (`_stream`): direct I/O; each read is answered with what
    /// comes next, whatever its offset.
    pub stream: bool,
    /// The content is unchanged since the kernel last cached it.
    pub keep_cache: bool,
}

/// How a directory's listing may be kept by a frontend's clients.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DirCaching {
    /// The listing may be kept once read, until the directory changes.
    pub cache: bool,
    /// What was kept from an earlier listing is still the directory's.
    pub keep: bool,
}

/// Numbers for statfs; large and stable, so `df` shows something sensible.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatFs {
    pub block_size: u32,
    pub blocks: u64,
    pub blocks_free: u64,
    pub files: u64,
    pub files_free: u64,
    pub name_max: u32,
}

impl Default for StatFs {
    fn default() -> Self {
        // 1 PiB in 4 KiB blocks, all free; a billion inodes.
        Self {
            block_size: 4096,
            blocks: 1 << 38,
            blocks_free: 1 << 38,
            files: 1 << 30,
            files_free: 1 << 30,
            name_max: 255,
        }
    }
}

/// What a frontend's clients keep of the tree (FUSE: the kernel's
/// attributes, directory entries and pages, each for its TTL), and how the
/// core tells them that something changed outside any request that
/// returned it: an upload gives a file the object's time, another mount
/// replaced an object (`--watch`).
pub trait ClientCache: Send + Sync {
    /// `ino`'s attributes changed; its cached pages are still its content.
    /// Safe from within a request.
    fn attributes_changed(&self, ino: Ino);

    /// `ino`'s content changed: its attributes and its cached pages go,
    /// soon (FUSE: on a thread of its own, as the kernel may hold the
    /// inode's lock while it waits for a request in flight).
    fn content_changed(&self, ino: Ino);

    /// The entry `name` of directory `parent` was made, removed or now
    /// names another file: it is looked up again, soon (FUSE: on a thread
    /// of its own, as the kernel takes the directory's lock).
    fn entry_changed(&self, parent: Ino, name: &str);
}

/// The filesystem as both frontends see it.
///
/// Calls that change nothing in a read-only tree have defaults that answer
/// EROFS; `open`/`release`/`flush` have defaults because NFS has no open or
/// close.
#[async_trait]
pub trait Vfs: Send + Sync + 'static {
    /// Finds `name` in directory `parent`.
    async fn lookup(&self, parent: Ino, name: &str) -> VfsResult<Attr>;

    async fn getattr(&self, ino: Ino) -> VfsResult<Attr>;

    /// The current generation of `ino` if the inode is known, without any
    /// call to Google. NFS handles carry it so that a handle to a path that
    /// was since deleted and recreated is stale, never another file.
    fn generation(&self, ino: Ino) -> Option<u64>;

    /// Lists `dir` after the entry whose inode is `after` (0: from the start),
    /// returning at most `max` entries. `fh` is the handle from `opendir`, if
    /// the frontend has one.
    async fn readdir(&self, dir: Ino, fh: Option<Fh>, after: Ino, max: usize) -> VfsResult<DirPage>;

    async fn read(&self, ino: Ino, fh: Option<Fh>, offset: u64, len: u32) -> VfsResult<(Bytes, bool)>;

    async fn statfs(&self) -> VfsResult<StatFs> {
        Ok(StatFs::default())
    }

    /// Called once by a frontend whose clients cache attributes, entries
    /// or pages and can be told to drop them (FUSE: the kernel, for its
    /// TTL): `cache` is then told of each change made outside a request.
    fn watch_client_cache(&self, _cache: std::sync::Arc<dyn ClientCache>) {}

    /// The kernel was handed `ino` once more without a `lookup` call (an
    /// entry of a FUSE readdirplus reply). `lookup` counts itself.
    fn count_lookup(&self, _ino: Ino) {}

    /// The kernel forgot `count` of its references to `ino` (FUSE forget).
    /// NFS never forgets.
    fn forget(&self, _ino: Ino, _count: u64) {}

    async fn open(&self, _ino: Ino, flags: OpenFlags) -> VfsResult<Opened> {
        if flags.write || flags.truncate {
            return Err(VfsError::read_only("open for write"));
        }
        Ok(Opened::default())
    }

    async fn release(&self, _ino: Ino, _fh: Fh) -> VfsResult<()> {
        Ok(())
    }

    async fn flush(&self, _ino: Ino, _fh: Fh) -> VfsResult<()> {
        Ok(())
    }

    async fn opendir(&self, _ino: Ino) -> VfsResult<Fh> {
        Ok(0)
    }

    /// Whether every change is refused (EROFS): a frontend may then tell its
    /// clients so up front (NFS's ACCESS answers read and lookup only).
    fn read_only(&self) -> bool {
        false
    }

    /// Asked right after `opendir`: whether the frontend's clients may keep
    /// `dir`'s listing once read (FUSE's readdir cache), and whether the
    /// listing they read last is still the directory's. By default neither.
    fn dir_caching(&self, _dir: Ino) -> DirCaching {
        DirCaching::default()
    }

    async fn releasedir(&self, _ino: Ino, _fh: Fh) -> VfsResult<()> {
        Ok(())
    }

    async fn setattr(&self, _ino: Ino, _set: SetAttr) -> VfsResult<Attr> {
        Err(VfsError::read_only("setattr"))
    }

    async fn write(&self, _ino: Ino, _fh: Option<Fh>, _offset: u64, _data: &[u8]) -> VfsResult<u32> {
        Err(VfsError::read_only("write"))
    }

    async fn create(&self, _parent: Ino, _name: &str, _mode: u32) -> VfsResult<(Attr, Opened)> {
        Err(VfsError::read_only("create"))
    }

    async fn mkdir(&self, _parent: Ino, _name: &str, _mode: u32) -> VfsResult<Attr> {
        Err(VfsError::read_only("mkdir"))
    }

    async fn unlink(&self, _parent: Ino, _name: &str) -> VfsResult<()> {
        Err(VfsError::read_only("unlink"))
    }

    async fn rmdir(&self, _parent: Ino, _name: &str) -> VfsResult<()> {
        Err(VfsError::read_only("rmdir"))
    }

    async fn rename(&self, _parent: Ino, _name: &str, _new_parent: Ino, _new_name: &str) -> VfsResult<()> {
        Err(VfsError::read_only("rename"))
    }

    async fn fsync(&self, _ino: Ino, _fh: Option<Fh>) -> VfsResult<()> {
        Ok(())
    }
}
