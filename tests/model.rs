//! A model-based test of the write paths: generated sequences of file
//! operations run through the public `Vfs` of a `Namespace` on an in-memory
//! Cloud Storage wrapped by `Faulty`, and after every operation what the
//! store holds is compared with what a small reference model allows.
//!
//! The model is a map of object name to bytes (the store as last observed)
//! plus the files' writers and the open handles (FUSE) or the acknowledged
//! writes not yet known to be uploaded (NFS). For each operation it says,
//! per object, which contents may follow: one when the outcome is known,
//! several when a call failed and its outcome is not (an answer lost: the
//! upload may have landed). What is observed must be one of them; the
//! model then takes the observed store as the truth, so an ambiguity never
//! outlives the step that made it, and a writer's bytes that appear later
//! with no operation to put them there are a divergence.
//!
//! The promise checked (docs/SEMANTICS.md, "Writes (FUSE)" and "NFS"):
//! - FUSE: one writer per file: every write handle of a file writes the
//!   same bytes, and an ftruncate, rm or mv acts on them; another open for
//!   write while it has unflushed data is EBUSY. A close uploads what was
//!   written, and a new file only created; an existing file only emptied
//!   goes up at its last release. A close or fsync that returns Ok leaves
//!   Cloud Storage holding exactly the writer's bytes; one that fails
//!   leaves the previous object or those bytes, and then a close with
//!   nothing written since fails again without trying (an fsync tries).
//!   An upload only replaces the generation its writer started from (else
//!   ESTALE, the other version stays), unless the object holds exactly its
//!   bytes already (an earlier answer lost: Ok). A removed file, or one a
//!   rename replaced, uploads nothing; a read-only handle's close nothing.
//! - NFS: a WRITE that returned Ok is acknowledged: once writes stop and an
//!   idle commit runs with no fault (or a restart, or a crash and the
//!   replay of the journal, which takes the writers back), Cloud Storage
//!   holds those bytes, unless another client changed the object: then
//!   they are kept in `conflicts/`. A WRITE through a removed file's inode
//!   is ESTALE; a WRITE that failed uploads nothing.
//! - rename, unlink, mkdir and rmdir act on Cloud Storage when they return Ok.
//!
//! Each sequence ends with the faults disarmed, every handle closed,
//! `settle` and an idle commit; then the mount is walked (readdir, read) and
//! compared with the store. A failing sequence is shrunk by proptest to a
//! short one, printed as Rust, to be pinned below as a named regression.
//!
//! `model_fixed_seeds` runs in CI (a fixed seed set, a few seconds);
//! `stress` (ignored; `scripts/stress`) runs `CIOFS_MODEL_CASES` sequences
//! from `CIOFS_MODEL_SEED` and prints how many ran and how many failed.
//! `CIOFS_MODEL_TRACE=1` prints each step of a pinned sequence as it is
//! checked.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ciofs::core::context::{CacheOptions, DiskTier};
use ciofs::namespace::{Namespace, Options, Services};
use ciofs_backends::ErrorKind;
use ciofs_backends::fault::{Call, Fault, Faulty};
use ciofs_backends::memory::{MemoryBigQuery, MemoryGcs, MemoryPubSub, Op as GcsOp};
use ciofs_frontends::{Fh, Ino, OpenFlags, ROOT_INO, SetAttr, Vfs};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

const PROJECT: &str = "p";
const BUCKET: &str = "b";
/// The files a sequence works on: two at the bucket's root, one in each of
/// the two directories (which come and go with mkdir, rmdir and renames).
const FILES: [&str; 4] = ["x", "y", "d/z", "e/z"];
const DIRS: [&str; 2] = ["d", "e"];
const READ_ALL: u32 = 1 << 16;

// ---------------------------------------------------------------- the ops

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frontend {
    Fuse,
    Nfs,
}

/// A call kind a fault can be armed for.
#[derive(Clone, Copy, Debug)]
enum Target {
    Upload,
    GetObject,
    ReadObject,
    ListObjects,
    DeleteObject,
    CopyObject,
}

/// A fault that changes an answer.
#[derive(Clone, Copy, Debug)]
enum Injected {
    Unavailable,
    Denied,
    /// The call takes effect; its answer is lost.
    ApplyThenFail,
    /// The call fails as a stalled transfer does (transient).
    Stalled,
}

/// What holds the first op of a race while the second runs.
#[derive(Clone, Copy, Debug)]
enum Hold {
    /// Its upload stalls until the second op is done (or 30 s).
    StallUpload,
    /// Its upload starts 5 s late.
    DelayUpload,
    /// Its upload reads the staging file in 2-byte pieces, 1 s apart.
    SlowUpload,
    /// Its `nth` metadata get (its lookup's, or the one after) is 5 s late.
    DelayGet { nth: u8 },
}

#[derive(Clone, Debug)]
enum Op {
    /// FUSE: open for write (create when the lookup finds nothing), with
    /// O_TRUNC or not.
    Open {
        file: usize,
        truncate: bool,
    },
    /// FUSE: open read-only.
    OpenRead {
        file: usize,
    },
    /// FUSE: write through an open write handle (an index into them).
    Write {
        handle: usize,
        offset: u8,
        len: u8,
    },
    /// FUSE: read a handle whole.
    Read {
        handle: usize,
    },
    /// FUSE: ftruncate through a write handle.
    TruncateHandle {
        handle: usize,
        size: u8,
    },
    /// `truncate -s` of a path (FUSE: only of a file no handle has open);
    /// NFS: SETATTR size.
    Truncate {
        file: usize,
        size: u8,
    },
    Fsync {
        handle: usize,
    },
    /// flush then release, as the kernel sends them for close().
    Close {
        handle: usize,
    },
    /// NFS CREATE of a file that does not exist (create, flush, release).
    NfsCreate {
        file: usize,
    },
    /// NFS WRITE (no handle, no close).
    NfsWrite {
        file: usize,
        offset: u8,
        len: u8,
    },
    NfsRead {
        file: usize,
    },
    Unlink {
        file: usize,
    },
    Rename {
        from: usize,
        to: usize,
    },
    RenameDir {
        from: usize,
        to: usize,
    },
    Mkdir {
        dir: usize,
    },
    Rmdir {
        dir: usize,
    },
    /// `commit_idle(ZERO)`.
    CommitIdle,
    /// NFS server stop (settle) and start on the same state directory
    /// (journal replay).
    Restart,
    /// The NFS server killed (no settle) and started again.
    Crash,
    /// Killed while an idle commit's upload is in flight: made (`applied`)
    /// or not, its answer never seen.
    CrashDuringUpload {
        applied: bool,
    },
    /// Another client writes the object.
    PutBehind {
        file: usize,
        len: u8,
    },
    /// Another client deletes the object.
    DeleteBehind {
        file: usize,
    },
    /// The `nth` next call of a kind fails.
    Arm {
        target: Target,
        nth: u8,
        fault: Injected,
    },
    /// NFS: the file's journal record cannot be written (a directory stands
    /// at its path): a local disk fault for its next WRITEs.
    BreakJournal {
        file: usize,
    },
    /// `first` is held by `hold` while `second` runs (other faults are
    /// disarmed first).
    Race {
        first: Box<Op>,
        second: Box<Op>,
        hold: Hold,
    },
}

fn file() -> impl Strategy<Value = usize> {
    0..FILES.len()
}

fn dir() -> impl Strategy<Value = usize> {
    0..DIRS.len()
}

fn handle() -> impl Strategy<Value = usize> {
    0..4usize
}

fn arm() -> impl Strategy<Value = Op> {
    let target = prop_oneof![
        4 => Just(Target::Upload),
        2 => Just(Target::GetObject),
        2 => Just(Target::ReadObject),
        1 => Just(Target::ListObjects),
        2 => Just(Target::DeleteObject),
        2 => Just(Target::CopyObject),
    ];
    let fault = prop_oneof![
        2 => Just(Injected::Unavailable),
        1 => Just(Injected::Stalled),
        1 => Just(Injected::Denied),
        3 => Just(Injected::ApplyThenFail),
    ];
    (target, 1..4u8, fault).prop_map(|(target, nth, fault)| Op::Arm { target, nth, fault })
}

fn hold() -> impl Strategy<Value = Hold> {
    prop_oneof![
        Just(Hold::StallUpload),
        Just(Hold::DelayUpload),
        Just(Hold::SlowUpload),
        (1..3u8).prop_map(|nth| Hold::DelayGet { nth }),
    ]
}

fn shared_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => file().prop_map(|file| Op::Unlink { file }),
        2 => (file(), file()).prop_map(|(from, to)| Op::Rename { from, to }),
        1 => (dir(), dir()).prop_map(|(from, to)| Op::RenameDir { from, to }),
        1 => dir().prop_map(|dir| Op::Mkdir { dir }),
        1 => dir().prop_map(|dir| Op::Rmdir { dir }),
        1 => (file(), 0..8u8).prop_map(|(file, len)| Op::PutBehind { file, len }),
        1 => file().prop_map(|file| Op::DeleteBehind { file }),
        1 => Just(Op::CommitIdle),
        3 => arm(),
    ]
}

fn fuse_op() -> impl Strategy<Value = Op> {
    let race_first = prop_oneof![
        1 => Just(Op::CommitIdle),
        2 => handle().prop_map(|handle| Op::Fsync { handle }),
        2 => handle().prop_map(|handle| Op::Close { handle }),
    ];
    let race_second = prop_oneof![
        3 => (handle(), 0..16u8, 1..8u8).prop_map(|(handle, offset, len)| Op::Write { handle, offset, len }),
        1 => handle().prop_map(|handle| Op::Read { handle }),
        2 => (file(), any::<bool>()).prop_map(|(file, truncate)| Op::Open { file, truncate }),
        1 => file().prop_map(|file| Op::OpenRead { file }),
        1 => file().prop_map(|file| Op::Unlink { file }),
    ];
    prop_oneof![
        4 => (file(), any::<bool>()).prop_map(|(file, truncate)| Op::Open { file, truncate }),
        1 => file().prop_map(|file| Op::OpenRead { file }),
        6 => (handle(), 0..16u8, 1..8u8).prop_map(|(handle, offset, len)| Op::Write { handle, offset, len }),
        1 => handle().prop_map(|handle| Op::Read { handle }),
        1 => (handle(), 0..16u8).prop_map(|(handle, size)| Op::TruncateHandle { handle, size }),
        1 => (file(), 0..16u8).prop_map(|(file, size)| Op::Truncate { file, size }),
        2 => handle().prop_map(|handle| Op::Fsync { handle }),
        4 => handle().prop_map(|handle| Op::Close { handle }),
        8 => shared_op(),
        2 => (race_first, race_second, hold())
            .prop_map(|(first, second, hold)| Op::Race { first: Box::new(first), second: Box::new(second), hold }),
    ]
}

fn nfs_op() -> impl Strategy<Value = Op> {
    let nfs_write = || (file(), 0..16u8, 1..8u8).prop_map(|(file, offset, len)| Op::NfsWrite { file, offset, len });
    let race_first = prop_oneof![2 => Just(Op::CommitIdle), 1 => nfs_write()];
    let race_second = prop_oneof![
        3 => nfs_write(),
        1 => file().prop_map(|file| Op::NfsRead { file }),
        1 => (file(), 0..16u8).prop_map(|(file, size)| Op::Truncate { file, size }),
        1 => file().prop_map(|file| Op::Unlink { file }),
    ];
    prop_oneof![
        2 => file().prop_map(|file| Op::NfsCreate { file }),
        8 => nfs_write(),
        1 => file().prop_map(|file| Op::NfsRead { file }),
        1 => (file(), 0..16u8).prop_map(|(file, size)| Op::Truncate { file, size }),
        8 => shared_op(),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
        1 => any::<bool>().prop_map(|applied| Op::CrashDuringUpload { applied }),
        1 => file().prop_map(|file| Op::BreakJournal { file }),
        2 => (race_first, race_second, hold())
            .prop_map(|(first, second, hold)| Op::Race { first: Box::new(first), second: Box::new(second), hold }),
    ]
}

/// A sequence: the frontend, the objects there at the start, and the ops.
fn sequence() -> impl Strategy<Value = (Frontend, Vec<(usize, u8)>, Vec<Op>)> {
    let seed = || prop::collection::vec((file(), 0..6u8), 0..3);
    prop_oneof![
        (Just(Frontend::Fuse), seed(), prop::collection::vec(fuse_op(), 1..40)),
        (Just(Frontend::Nfs), seed(), prop::collection::vec(nfs_op(), 1..40)),
    ]
}

// ---------------------------------------------------------- the reference

/// An object as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Obj {
    generation: i64,
    data: Vec<u8>,
}

type Store = BTreeMap<String, Obj>;

/// The generation a writer's upload must replace (what ciofs believes:
/// an upload whose answer was lost leaves it at the old one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Base {
    /// No object (a new file).
    Absent,
    Generation(i64),
    /// Not known after an ambiguous failure: no staleness is predicted.
    Unknown,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unlinked {
    No,
    Yes,
    /// An unlink failed with its outcome unknown.
    Maybe,
}

/// What a file's writer holds that Cloud Storage does not (FUSE), which
/// says what a close uploads (docs/SEMANTICS.md, "Writes (FUSE)").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unflushed {
    /// Nothing: what it holds was uploaded, or is what it opened.
    Nothing,
    /// A new file only created (`touch`): a close uploads it, so it
    /// exists once close returns.
    Created,
    /// An existing object only emptied (an O_TRUNC open, a truncate to 0),
    /// nothing written: a close uploads nothing, the last release does.
    Emptied,
    /// Bytes written (or the size changed to other than 0) since the last
    /// upload: a close uploads them, and another open for write is EBUSY.
    Written,
}

/// Which part of a close or fsync tries an upload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attempt {
    None,
    /// The flush (or the fsync).
    Flush,
    /// The last handle's release.
    Release,
}

/// The one writer of a file (ciofs keeps one per inode): every write
/// handle of the file writes the same bytes, and an ftruncate, rm or mv
/// acts on it.
#[derive(Clone, Debug)]
struct FileWriter {
    ino: Ino,
    /// The object it writes (follows renames).
    name: String,
    /// Other objects an uncertain rename may have moved it to.
    maybe_names: Vec<String>,
    base: Base,
    /// The bytes it holds (what a close must store).
    content: Vec<u8>,
    /// The base's bytes are not fetched yet: the first write, read or
    /// truncate that needs them fetches that generation, and fails if it
    /// is gone.
    needs_fill: bool,
    unflushed: Unflushed,
    /// A flush or fsync failed (this errno) and nothing changed since: a
    /// close answers that failure again without trying, and the last
    /// release does not try.
    failure_reported: Option<i32>,
    unlinked: Unlinked,
    /// An fsync of it failed: a later Ok close names this in its finding.
    failed_sync: bool,
    /// Reads are not checked (its bytes became unknown).
    wild: bool,
    /// After a race: whether it has something unflushed or a failure
    /// reported, and its base, are not known; a close or fsync may store
    /// its bytes or not, and answer either way.
    unsure: bool,
    /// A rename put another file in its place: its inode is gone (ciofs
    /// may answer ESTALE for it), and it must never store its bytes.
    replaced: bool,
    /// An upload of it failed, but its bytes landed (the answer was lost):
    /// its base is that generation, its own.
    landed_unseen: bool,
    /// Its open write handles.
    handles: usize,
    /// Its last write handle went: out of ciofs's writers' table; only
    /// read-only handles that shared it still read it.
    retired: bool,
}

impl FileWriter {
    /// Another open for write of its file is EBUSY.
    fn busy(&self) -> bool {
        self.unflushed == Unflushed::Written && self.unlinked == Unlinked::No
    }
}

#[derive(Clone, Debug)]
enum View {
    /// Shares the file's writer (its id), as ciofs gives a read-only open
    /// of a file being written.
    Writer(u64),
    /// Reads this generation's bytes.
    Object(Option<i64>, Vec<u8>),
    /// Opened while the file's last write handle was closing: reads the
    /// writer's bytes or the object's, which may be gone (not checked).
    Unknown,
}

#[derive(Clone, Debug)]
enum Kind {
    /// Writes through the file's writer (its id).
    Write(u64),
    Read(View),
}

#[derive(Clone, Debug)]
struct Handle {
    fh: Fh,
    ino: Ino,
    /// The object it was opened on (a writer's handle follows its writer).
    name: String,
    kind: Kind,
}

impl Handle {
    /// The writer it writes or reads through.
    fn writer(&self) -> Option<u64> {
        match self.kind {
            Kind::Write(id) | Kind::Read(View::Writer(id)) => Some(id),
            Kind::Read(View::Object(..) | View::Unknown) => None,
        }
    }

    fn writes(&self) -> bool {
        matches!(self.kind, Kind::Write(_))
    }
}

/// NFS writes of one object, acknowledged and not yet known uploaded.
#[derive(Clone, Debug)]
struct Pending {
    /// The bytes the object must hold once uploaded.
    content: Vec<u8>,
    /// A WRITE of it returned Ok (else: a writer may exist from a WRITE
    /// that failed, with nothing acknowledged).
    acked: bool,
    /// The object changed behind the mount's back since: the upload may
    /// never happen (only the generation the writes started from is
    /// replaced), and liveness is not required.
    conflicted: bool,
    /// Its state is unknown (an operation on it failed ambiguously): not
    /// checked any more.
    wild: bool,
    /// An idle commit ran at the same time as a change to it: whether its
    /// writer is still there (so lookups find it, truncates stage) is not
    /// known.
    maybe_gone: bool,
    /// An rm of it failed: either it took effect (the object is gone) or
    /// the acknowledged writes must still reach Cloud Storage.
    rm_failed: bool,
    /// An upload of it landed with its answer lost (a fault, or a crash):
    /// that generation is the writer's own, which its next upload replaces.
    landed_unseen: bool,
}

/// What an operation may leave, per object: any of these contents (None:
/// absent). Objects not named must be unchanged.
#[derive(Default, Debug)]
struct Expect(BTreeMap<String, Vec<Option<Vec<u8>>>>);

impl Expect {
    fn allow(&mut self, name: &str, content: Option<Vec<u8>>) {
        match self.0.get_mut(name) {
            // Anything is allowed already.
            Some(allowed) if allowed.is_empty() => {}
            Some(allowed) if allowed.contains(&content) => {}
            Some(allowed) => allowed.push(content),
            None => {
                self.0.insert(name.to_string(), vec![content]);
            }
        }
    }

    /// Anything may happen to `name` (not checked).
    fn any(&mut self, name: &str) {
        self.0.insert(name.to_string(), Vec::new());
    }

    /// Either `self` or `other` may have happened: a name only one of them
    /// names may also be as it was.
    fn or(mut self, other: Expect, store: &Store) -> Expect {
        let names: BTreeSet<String> = self.0.keys().chain(other.0.keys()).cloned().collect();
        for name in names {
            if !self.0.contains_key(&name) || !other.0.contains_key(&name) {
                self.allow(&name, content_of(store, &name));
            }
        }
        self.merge(other);
        self
    }

    fn merge(&mut self, other: Expect) {
        for (name, allowed) in other.0 {
            if allowed.is_empty() {
                self.any(&name);
            } else if !self.0.get(&name).is_some_and(|a| a.is_empty()) {
                for content in allowed {
                    self.allow(&name, content);
                }
            }
        }
    }
}

#[derive(Clone, Debug)]
struct Model {
    frontend: Frontend,
    store: Store,
    handles: Vec<Handle>,
    /// FUSE: the files' writers, by id; one is in ciofs's writers' table
    /// (found through its inode) until it is retired.
    writers: BTreeMap<u64, FileWriter>,
    nfs: BTreeMap<String, Pending>,
    /// Files whose journal record cannot be written (a local disk fault):
    /// their WRITEs may fail, and what failed must not be uploaded.
    broken_journals: BTreeSet<String>,
    /// What `conflicts/` holds (as last observed), and what it must hold:
    /// the bytes of each NFS writer given up because another client
    /// changed its object.
    conflicts: Vec<Vec<u8>>,
    kept_conflicts: Vec<(String, Vec<u8>)>,
    next_id: u64,
    next_byte: u8,
}

/// How the NFS server stopped before a restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    Settle,
    Crash,
    /// Killed while an idle commit's upload was in flight.
    CrashInCommit,
}

/// What an executed op returned.
#[derive(Clone, Debug)]
enum Done {
    Unit,
    /// A lookup before the op failed with this errno: the op was not sent.
    Skipped(i32),
    Opened {
        fh: Fh,
        ino: Ino,
        created: bool,
    },
    Data(Vec<u8>),
    Wrote(u32),
    Closed {
        flush: Result<(), i32>,
        release: Result<(), i32>,
    },
}

type Outcome = Result<Done, i32>;

fn content_of(store: &Store, name: &str) -> Option<Vec<u8>> {
    store.get(name).map(|o| o.data.clone())
}

fn written(mut content: Vec<u8>, offset: usize, data: &[u8]) -> Vec<u8> {
    if content.len() < offset + data.len() {
        content.resize(offset + data.len(), 0);
    }
    content[offset..offset + data.len()].copy_from_slice(data);
    content
}

fn resized(mut content: Vec<u8>, size: usize) -> Vec<u8> {
    content.resize(size, 0);
    content
}

/// Writer `w` truncated to `size` (a size it did not have).
fn truncated(w: &mut FileWriter, size: u8) {
    w.content = resized(std::mem::take(&mut w.content), size as usize);
    w.needs_fill = false;
    w.failure_reported = None;
    w.unflushed = match w.unflushed {
        Unflushed::Written => Unflushed::Written,
        _ if size > 0 => Unflushed::Written,
        // Emptied with nothing written: an existing object waits for the
        // last release; a new one was empty already.
        _ if w.base == Base::Absent => w.unflushed,
        _ => Unflushed::Emptied,
    };
}

fn dir_exists(store: &Store, dir: &str) -> bool {
    let prefix = format!("{dir}/");
    store.keys().any(|k| k.starts_with(&prefix))
}

fn parent_of(name: &str) -> Option<&str> {
    name.rsplit_once('/').map(|(dir, _)| dir)
}

/// With `CIOFS_MODEL_TRACE` set, prints each step as it is checked (what
/// it returned, whether a fault fired, what the store holds): for reading
/// a pinned sequence.
fn trace(what: &str, failed: bool, observed: &Store) {
    if std::env::var_os("CIOFS_MODEL_TRACE").is_some() {
        let store: Vec<(&String, &Vec<u8>, i64)> = observed.iter().map(|(n, o)| (n, &o.data, o.generation)).collect();
        eprintln!("{what}{}\n    store: {store:?}", if failed { " (a fault fired)" } else { "" });
    }
}

/// A divergence: the sequence fails with this (its first word, in
/// brackets, says what kind).
type Found = String;

impl Model {
    fn new(frontend: Frontend, store: Store) -> Self {
        Model {
            frontend,
            store,
            handles: Vec::new(),
            writers: BTreeMap::new(),
            nfs: BTreeMap::new(),
            broken_journals: BTreeSet::new(),
            conflicts: Vec::new(),
            kept_conflicts: Vec::new(),
            next_id: 1,
            next_byte: 0,
        }
    }

    /// Bytes no earlier write used, so a misplaced one shows.
    fn data(&mut self, len: u8) -> Vec<u8> {
        self.next_byte = self.next_byte % 250 + 1;
        vec![self.next_byte; len as usize]
    }

    fn write_handles(&self) -> Vec<usize> {
        (0..self.handles.len()).filter(|i| self.handles[*i].writes()).collect()
    }

    /// The handle an index picks among the write handles (or all handles).
    fn pick(&self, index: usize, writers_only: bool) -> Option<usize> {
        let candidates: Vec<usize> =
            if writers_only { self.write_handles() } else { (0..self.handles.len()).collect() };
        (!candidates.is_empty()).then(|| candidates[index % candidates.len()])
    }

    /// The writer handle `i` writes or reads through.
    fn writer_of(&self, i: usize) -> Option<&FileWriter> {
        self.writers.get(&self.handles[i].writer()?)
    }

    fn writer_of_mut(&mut self, i: usize) -> Option<&mut FileWriter> {
        let id = self.handles[i].writer()?;
        self.writers.get_mut(&id)
    }

    /// The writer ciofs finds under `name` (in its writers' table, at the
    /// inode the name has: not removed, not replaced by a rename).
    fn live_writer(&self, name: &str) -> Option<u64> {
        self.writers
            .iter()
            .find(|(_, w)| w.name == name && !w.retired && w.unlinked == Unlinked::No && !w.replaced)
            .map(|(id, _)| *id)
    }

    /// Whether a lookup of `name` must find it; None: either.
    fn exists(&self, name: &str) -> Option<bool> {
        let live = self.live_writer(name).map(|id| &self.writers[&id]);
        if self.store.contains_key(name) || live.is_some_and(|w| w.unflushed != Unflushed::Nothing) {
            return Some(true);
        }
        if live.is_some() {
            // Open for write with nothing to upload, and its object gone
            // (another client removed it): ciofs's lookup still finds the
            // writer, a rename finds nothing to move.
            return None;
        }
        let named = |w: &FileWriter| !w.retired && (w.name == name || w.maybe_names.iter().any(|n| n == name));
        match self.nfs.get(name) {
            Some(p) if p.acked && !p.wild && !p.maybe_gone => Some(true),
            Some(_) => None,
            None if self.writers.values().any(|w| named(w) && w.unlinked == Unlinked::Maybe) => None,
            None if self.writers.values().any(|w| named(w) && !w.maybe_names.is_empty()) => None,
            None => Some(false),
        }
    }

    fn dir_exists(&self, dir: &str) -> bool {
        dir_exists(&self.store, dir)
    }

    fn generation_of(&self, name: &str) -> Base {
        self.store.get(name).map_or(Base::Absent, |o| Base::Generation(o.generation))
    }

    /// Drops the writers no handle reaches any more.
    fn drop_unreachable_writers(&mut self) {
        let reached: BTreeSet<u64> = self.handles.iter().filter_map(|h| h.writer()).collect();
        self.writers.retain(|id, w| !w.retired || reached.contains(id));
    }
}

// ---------------------------------------------------------- the system

struct Sut {
    gcs: Arc<Faulty<MemoryGcs>>,
    ns: Option<Namespace>,
    frontend: Frontend,
    _dir: tempfile::TempDir,
    staging: PathBuf,
    journal: PathBuf,
}

fn errno<T>(r: ciofs_frontends::VfsResult<T>) -> Result<T, i32> {
    r.map_err(|e| e.errno())
}

impl Sut {
    fn new(frontend: Frontend, seed: &[(usize, u8)]) -> Self {
        let memory = MemoryGcs::new();
        memory.add_bucket_of(PROJECT, BUCKET);
        for (i, (file, len)) in seed.iter().enumerate() {
            memory.put_object(BUCKET, FILES[*file], vec![200 + i as u8; *len as usize]);
        }
        let gcs = Arc::new(Faulty::new(Arc::new(memory)));
        // On a memory filesystem where there is one: every NFS WRITE is
        // fdatasync'd, which on a disk makes most of a sequence's time.
        let shm = std::path::Path::new("/dev/shm");
        let dir = match shm.is_dir() {
            true => tempfile::tempdir_in(shm),
            false => tempfile::tempdir(),
        }
        .expect("a temporary directory");
        let staging = dir.path().join("staging");
        let journal = dir.path().join("inodes");
        let mut sut = Sut { gcs, ns: None, frontend, staging, journal, _dir: dir };
        sut.ns = Some(sut.namespace());
        sut
    }

    fn namespace(&self) -> Namespace {
        let services = Services {
            gcs: self.gcs.clone(),
            bigquery: Arc::new(MemoryBigQuery::new()),
            pubsub: Arc::new(MemoryPubSub::new()),
        };
        // Metadata is not cached, so that what another client changed is
        // seen at once and the model needs no clock.
        // Object content through the content cache, in a memory tier of a
        // few small blocks and a disk tier that a restart recovers: what a
        // handle reads must still be its generation's bytes.
        let disk = DiskTier { dir: self.staging.with_file_name("blocks"), max_bytes: 64 << 20, keep_free: 0.0 };
        let content_cache = CacheOptions { memory_bytes: 4096, disk: Some(disk) };
        let options = Options {
            staging_dir: self.staging.clone(),
            metadata_ttl: Duration::ZERO,
            content_cache,
            ..Options::default()
        };
        let projects = vec![PROJECT.to_string()];
        match self.frontend {
            Frontend::Fuse => Namespace::new(projects, services, options),
            Frontend::Nfs => {
                Namespace::persistent(projects, services, options, &self.journal).expect("the inode journal opens")
            }
        }
    }

    fn ns(&self) -> &Namespace {
        self.ns.as_ref().expect("a namespace is running")
    }

    fn store(&self) -> Store {
        let memory = self.gcs.inner();
        memory
            .object_names(BUCKET)
            .into_iter()
            .filter_map(|name| {
                let meta = memory.object_meta(BUCKET, &name)?;
                let data = memory.object_data(BUCKET, &name)?.to_vec();
                Some((name, Obj { generation: meta.generation, data }))
            })
            .collect()
    }

    /// The contents of the files NFS uploads refused as conflicts were
    /// kept in (`STATE/staging/nfs/conflicts/BUCKET/`).
    fn conflicts(&self) -> Vec<Vec<u8>> {
        let dir = self.staging.join("nfs").join("conflicts").join(BUCKET);
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        entries.flatten().filter_map(|e| std::fs::read(e.path()).ok()).collect()
    }

    /// The inode of a directory of the bucket ("": its root).
    async fn dir(&self, dir: &str) -> Result<Ino, i32> {
        let mut ino = ROOT_INO;
        let parts = [PROJECT, "storage", BUCKET].into_iter().chain(dir.split('/').filter(|p| !p.is_empty()));
        for part in parts {
            ino = errno(self.ns().lookup(ino, part).await)?.ino;
        }
        Ok(ino)
    }

    /// The directory inode and the last name of a file.
    async fn parent(&self, name: &str) -> Result<(Ino, String), i32> {
        let (dir, leaf) = name.rsplit_once('/').unwrap_or(("", name));
        Ok((self.dir(dir).await?, leaf.to_string()))
    }

    async fn lookup(&self, name: &str) -> Result<Ino, i32> {
        let (dir, leaf) = self.parent(name).await?;
        Ok(errno(self.ns().lookup(dir, &leaf).await)?.ino)
    }

    /// Runs one resolved op.
    async fn exec(&self, step: &Step) -> Outcome {
        let ns = self.ns();
        match step {
            Step::Open { name, truncate } => {
                let (dir, leaf) = match self.parent(name).await {
                    Ok(found) => found,
                    Err(e) => return Ok(Done::Skipped(e)),
                };
                match errno(ns.lookup(dir, &leaf).await) {
                    Ok(attr) => {
                        let flags = OpenFlags { write: true, truncate: *truncate, append: false };
                        let opened = errno(ns.open(attr.ino, flags).await)?;
                        Ok(Done::Opened { fh: opened.fh, ino: attr.ino, created: false })
                    }
                    Err(libc::ENOENT) => {
                        let (attr, opened) = errno(ns.create(dir, &leaf, 0o644).await)?;
                        Ok(Done::Opened { fh: opened.fh, ino: attr.ino, created: true })
                    }
                    Err(e) => Ok(Done::Skipped(e)),
                }
            }
            Step::OpenRead { name } => match self.lookup(name).await {
                Ok(ino) => {
                    let opened = errno(ns.open(ino, OpenFlags::default()).await)?;
                    Ok(Done::Opened { fh: opened.fh, ino, created: false })
                }
                Err(e) => Ok(Done::Skipped(e)),
            },
            Step::Write { ino, fh, offset, data } => {
                Ok(Done::Wrote(errno(ns.write(*ino, *fh, *offset as u64, data).await)?))
            }
            Step::Read { ino, fh } => Ok(Done::Data(errno(ns.read(*ino, *fh, 0, READ_ALL).await)?.0.to_vec())),
            Step::TruncateIno { ino, fh, size } => {
                let set = SetAttr { size: Some(*size as u64), fh: Some(*fh), ..SetAttr::default() };
                errno(ns.setattr(*ino, set).await)?;
                Ok(Done::Unit)
            }
            Step::Fsync { ino, fh } => errno(ns.fsync(*ino, Some(*fh)).await).map(|_| Done::Unit),
            Step::Close { ino, fh } => {
                let flush = errno(ns.flush(*ino, *fh).await);
                let release = errno(ns.release(*ino, *fh).await);
                Ok(Done::Closed { flush, release })
            }
            Step::ByName { op, name } => match self.lookup(name).await {
                Ok(ino) => self.by_name(op, ino, name).await,
                Err(e) => Ok(Done::Skipped(e)),
            },
            Step::NfsCreate { name } => {
                let (dir, leaf) = match self.parent(name).await {
                    Ok(found) => found,
                    Err(e) => return Ok(Done::Skipped(e)),
                };
                match errno(ns.lookup(dir, &leaf).await) {
                    Err(libc::ENOENT) => {}
                    Ok(_) => return Ok(Done::Skipped(libc::EEXIST)),
                    Err(e) => return Ok(Done::Skipped(e)),
                }
                // As the NFS adapter creates: create, flush, release.
                let (attr, opened) = errno(ns.create(dir, &leaf, 0o644).await)?;
                let flushed = errno(ns.flush(attr.ino, opened.fh).await);
                let released = errno(ns.release(attr.ino, opened.fh).await);
                flushed?;
                released?;
                Ok(Done::Unit)
            }
            Step::Rename { from, to } => {
                let ((from_dir, from_leaf), (to_dir, to_leaf)) = match (self.parent(from).await, self.parent(to).await)
                {
                    (Ok(a), Ok(b)) => (a, b),
                    (Err(e), _) | (_, Err(e)) => return Ok(Done::Skipped(e)),
                };
                if let Err(e) = errno(ns.lookup(from_dir, &from_leaf).await) {
                    return Ok(Done::Skipped(e));
                }
                errno(ns.rename(from_dir, &from_leaf, to_dir, &to_leaf).await).map(|_| Done::Unit)
            }
            Step::RenameDir { from, to } => {
                let root = match self.dir("").await {
                    Ok(root) => root,
                    Err(e) => return Ok(Done::Skipped(e)),
                };
                if let Err(e) = errno(ns.lookup(root, from).await) {
                    return Ok(Done::Skipped(e));
                }
                errno(ns.rename(root, from, root, to).await).map(|_| Done::Unit)
            }
            Step::Mkdir { dir } => match self.dir("").await {
                Ok(root) => errno(ns.mkdir(root, dir, 0o755).await).map(|_| Done::Unit),
                Err(e) => Ok(Done::Skipped(e)),
            },
            Step::Rmdir { dir } => {
                let root = match self.dir("").await {
                    Ok(root) => root,
                    Err(e) => return Ok(Done::Skipped(e)),
                };
                if let Err(e) = errno(ns.lookup(root, dir).await) {
                    return Ok(Done::Skipped(e));
                }
                errno(ns.rmdir(root, dir).await).map(|_| Done::Unit)
            }
            Step::CommitIdle => {
                ns.commit_idle(Duration::ZERO).await;
                Ok(Done::Unit)
            }
            Step::Nothing => Ok(Done::Unit),
        }
    }

    async fn by_name(&self, op: &ByName, ino: Ino, name: &str) -> Outcome {
        let ns = self.ns();
        match op {
            ByName::NfsWrite { offset, data } => {
                Ok(Done::Wrote(errno(ns.write(ino, None, *offset as u64, data).await)?))
            }
            ByName::NfsRead => Ok(Done::Data(errno(ns.read(ino, None, 0, READ_ALL).await)?.0.to_vec())),
            ByName::Truncate { size } => {
                errno(ns.setattr(ino, SetAttr { size: Some(*size as u64), ..SetAttr::default() }).await)?;
                Ok(Done::Unit)
            }
            ByName::Unlink => {
                let (dir, leaf) = self.parent(name).await?;
                errno(ns.unlink(dir, &leaf).await).map(|_| Done::Unit)
            }
        }
    }

    /// The NFS server stops (settle) or dies, and starts again on the same
    /// state directory, replaying its journal.
    async fn restart(&mut self, settle: bool) {
        if let Some(ns) = self.ns.take() {
            if settle {
                let _ = ns.settle().await;
            }
            drop(ns);
        }
        self.ns = Some(self.namespace());
        self.ns().resume_journaled_uploads().await;
    }

    /// Killed while an idle commit's upload hangs (made or not).
    async fn crash_during_upload(&mut self, applied: bool) {
        let fault = if applied { Fault::ApplyThenStall } else { Fault::Stall };
        self.gcs.arm(Call::Gcs(GcsOp::Upload), 1, fault);
        {
            let ns = self.ns();
            let commit = ns.commit_idle(Duration::ZERO);
            tokio::pin!(commit);
            let stalled = async {
                while self.gcs.stalled() == 0 {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            };
            tokio::select! {
                _ = &mut commit => {}
                _ = stalled => {}
            }
        }
        self.gcs.disarm();
        self.restart(false).await;
        self.gcs.release_stalls();
    }
}

/// An op resolved against the model: handles and names made concrete.
#[derive(Clone, Debug)]
enum Step {
    Open {
        name: String,
        truncate: bool,
    },
    OpenRead {
        name: String,
    },
    Write {
        ino: Ino,
        fh: Option<Fh>,
        offset: u8,
        data: Vec<u8>,
    },
    Read {
        ino: Ino,
        fh: Option<Fh>,
    },
    /// ftruncate: through the handle.
    TruncateIno {
        ino: Ino,
        fh: Fh,
        size: u8,
    },
    Fsync {
        ino: Ino,
        fh: Fh,
    },
    Close {
        ino: Ino,
        fh: Fh,
    },
    ByName {
        op: ByName,
        name: String,
    },
    NfsCreate {
        name: String,
    },
    Rename {
        from: String,
        to: String,
    },
    RenameDir {
        from: String,
        to: String,
    },
    Mkdir {
        dir: String,
    },
    Rmdir {
        dir: String,
    },
    CommitIdle,
    Nothing,
}

/// Ops that start with a lookup of the file.
#[derive(Clone, Debug)]
enum ByName {
    NfsWrite { offset: u8, data: Vec<u8> },
    NfsRead,
    Truncate { size: u8 },
    Unlink,
}

// ---------------------------------------------------------- the harness

struct Harness {
    sut: Sut,
    model: Model,
    /// The ops run so far, for the report.
    log: Vec<String>,
}

impl Harness {
    fn new(frontend: Frontend, seed: &[(usize, u8)]) -> Self {
        let sut = Sut::new(frontend, seed);
        let model = Model::new(frontend, sut.store());
        Harness { sut, model, log: Vec::new() }
    }

    /// What Cloud Storage holds now; the model also takes what the state
    /// directory's `conflicts/` holds.
    fn observe(&mut self) -> Store {
        self.model.conflicts = self.sut.conflicts();
        self.sut.store()
    }

    /// Makes an op concrete: which handle, which bytes. `handle_of` says
    /// which model handle a FUSE op works on.
    fn resolve(&mut self, op: &Op) -> (Step, Option<usize>) {
        let m = &mut self.model;
        match *op {
            Op::Open { file, truncate } => (Step::Open { name: FILES[file].to_string(), truncate }, None),
            Op::OpenRead { file } => (Step::OpenRead { name: FILES[file].to_string() }, None),
            Op::Write { handle, offset, len } => match m.pick(handle, true) {
                Some(i) => {
                    let data = m.data(len);
                    let h = &m.handles[i];
                    (Step::Write { ino: h.ino, fh: Some(h.fh), offset, data }, Some(i))
                }
                None => (Step::Nothing, None),
            },
            Op::Read { handle } => match m.pick(handle, false) {
                Some(i) => (Step::Read { ino: m.handles[i].ino, fh: Some(m.handles[i].fh) }, Some(i)),
                None => (Step::Nothing, None),
            },
            Op::TruncateHandle { handle, size } => match m.pick(handle, true) {
                Some(i) => (Step::TruncateIno { ino: m.handles[i].ino, fh: m.handles[i].fh, size }, Some(i)),
                None => (Step::Nothing, None),
            },
            Op::Truncate { file, size } => {
                let name = FILES[file];
                // FUSE: `truncate -s` of a file open for write truncates its
                // writer; not sent while which writer it reaches is not known.
                let unsure = |w: &FileWriter| {
                    w.maybe_names.iter().any(|n| n == name)
                        || w.name == name && (w.unsure || w.unlinked == Unlinked::Maybe)
                };
                if m.frontend == Frontend::Fuse && m.writers.values().any(|w| !w.retired && unsure(w)) {
                    return (Step::Nothing, None);
                }
                (Step::ByName { op: ByName::Truncate { size }, name: name.to_string() }, None)
            }
            Op::Fsync { handle } => match m.pick(handle, true) {
                Some(i) => (Step::Fsync { ino: m.handles[i].ino, fh: m.handles[i].fh }, Some(i)),
                None => (Step::Nothing, None),
            },
            Op::Close { handle } => match m.pick(handle, false) {
                Some(i) => (Step::Close { ino: m.handles[i].ino, fh: m.handles[i].fh }, Some(i)),
                None => (Step::Nothing, None),
            },
            Op::NfsCreate { file } => (Step::NfsCreate { name: FILES[file].to_string() }, None),
            Op::NfsWrite { file, offset, len } => {
                let data = m.data(len);
                (Step::ByName { op: ByName::NfsWrite { offset, data }, name: FILES[file].to_string() }, None)
            }
            Op::NfsRead { file } => (Step::ByName { op: ByName::NfsRead, name: FILES[file].to_string() }, None),
            Op::Unlink { file } => (Step::ByName { op: ByName::Unlink, name: FILES[file].to_string() }, None),
            Op::Rename { from, to } if from != to => {
                (Step::Rename { from: FILES[from].to_string(), to: FILES[to].to_string() }, None)
            }
            Op::RenameDir { from, to } if from != to => {
                (Step::RenameDir { from: DIRS[from].to_string(), to: DIRS[to].to_string() }, None)
            }
            Op::Mkdir { dir } => (Step::Mkdir { dir: DIRS[dir].to_string() }, None),
            Op::Rmdir { dir } => (Step::Rmdir { dir: DIRS[dir].to_string() }, None),
            Op::CommitIdle => (Step::CommitIdle, None),
            _ => (Step::Nothing, None),
        }
    }

    async fn run(&mut self, ops: &[Op]) -> Result<(), Found> {
        for op in ops {
            self.log.push(format!("{op:?}"));
            self.step(op).await?;
        }
        self.finish().await
    }

    async fn step(&mut self, op: &Op) -> Result<(), Found> {
        let failed_before = self.sut.gcs.failed();
        match op {
            Op::Arm { target, nth, fault } => {
                let call = Call::Gcs(match target {
                    Target::Upload => GcsOp::Upload,
                    Target::GetObject => GcsOp::GetObject,
                    Target::ReadObject => GcsOp::ReadObject,
                    Target::ListObjects => GcsOp::ListObjects,
                    Target::DeleteObject => GcsOp::DeleteObject,
                    Target::CopyObject => GcsOp::CopyObject,
                });
                let fault = match fault {
                    Injected::Unavailable => Fault::Fail(ErrorKind::Unavailable),
                    Injected::Denied => Fault::Fail(ErrorKind::PermissionDenied),
                    Injected::Stalled => Fault::Fail(ErrorKind::Stalled),
                    Injected::ApplyThenFail => Fault::ApplyThenFail,
                };
                self.sut.gcs.arm(call, u64::from(*nth), fault);
                Ok(())
            }
            Op::PutBehind { file, len } => {
                let data = self.model.data(*len);
                self.sut.gcs.inner().put_object(BUCKET, FILES[*file], data.clone());
                let mut expect = Expect::default();
                expect.allow(FILES[*file], Some(data));
                self.behind(FILES[*file], expect)
            }
            Op::DeleteBehind { file } => {
                self.sut.gcs.inner().remove_object(BUCKET, FILES[*file]);
                let mut expect = Expect::default();
                expect.allow(FILES[*file], None);
                self.behind(FILES[*file], expect)
            }
            Op::Restart | Op::Crash | Op::CrashDuringUpload { .. } => {
                if self.model.frontend == Frontend::Fuse {
                    return Ok(());
                }
                let expect = self.model.restart_expect();
                match op {
                    Op::Restart => self.sut.restart(true).await,
                    Op::Crash => self.sut.restart(false).await,
                    Op::CrashDuringUpload { applied } => {
                        // Only the crash's own hang: other faults go.
                        self.sut.gcs.disarm();
                        let before = self.sut.gcs.failed();
                        self.sut.crash_during_upload(*applied).await;
                        let own = u64::from(*applied && self.sut.gcs.failed() > before);
                        let failed = self.sut.gcs.failed() - before - own > 0;
                        let observed = self.observe();
                        return self.model.after_restart(expect, &observed, failed, Stop::CrashInCommit);
                    }
                    _ => unreachable!(),
                }
                let observed = self.observe();
                let failed = self.sut.gcs.failed() > failed_before;
                let stop = if matches!(op, Op::Restart) { Stop::Settle } else { Stop::Crash };
                self.model.after_restart(expect, &observed, failed, stop)
            }
            Op::Race { first, second, hold } => self.race(first, second, *hold).await,
            Op::BreakJournal { file } => {
                if self.model.frontend == Frontend::Nfs {
                    self.break_journal(FILES[*file]).await;
                }
                Ok(())
            }
            op => {
                let (step, index) = self.resolve(op);
                let outcome = self.sut.exec(&step).await;
                let failed = self.sut.gcs.failed() > failed_before;
                let observed = self.observe();
                self.model.apply(&step, index, &outcome, failed, &observed, Expect::default())
            }
        }
    }

    /// Puts a directory where the journal record of `name`'s writer goes,
    /// when it has a staging file and no record on disk (its next WRITE
    /// writes one: a local disk fault for that WRITE and the ones after).
    /// Records are named after the staging file (`INO.RANDOM.data`), so a
    /// file without a writer cannot be broken beforehand.
    async fn break_journal(&mut self, name: &str) {
        let Ok(ino) = self.sut.lookup(name).await else { return };
        let prefix = format!("{ino:016x}.");
        let Ok(entries) = std::fs::read_dir(self.sut.staging.join("nfs")) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            let staging_file = path.extension().is_some_and(|e| e == "data")
                && path.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix));
            let record = path.with_extension("json");
            if staging_file && !record.exists() && std::fs::create_dir_all(&record).is_ok() {
                self.model.broken_journals.insert(name.to_string());
            }
        }
    }

    fn behind(&mut self, name: &str, expect: Expect) -> Result<(), Found> {
        let observed = self.observe();
        self.model.check_store(&expect, &observed, "a change behind the mount's back")?;
        self.model.store = observed;
        // A writer of `name` now has a stale base: the model predicts its
        // upload's refusal from the generations.
        if let Some(p) = self.model.nfs.get_mut(name) {
            p.conflicted = true;
        }
        Ok(())
    }

    /// `first` runs until `hold` holds it, `second` runs meanwhile, then
    /// `first` is let go; both must end as one of their orders allows.
    async fn race(&mut self, first: &Op, second: &Op, hold: Hold) -> Result<(), Found> {
        self.sut.gcs.disarm();
        self.sut.gcs.release_stalls();
        let (call, nth, fault) = match hold {
            Hold::StallUpload => (GcsOp::Upload, 1, Fault::Stall),
            Hold::DelayUpload => (GcsOp::Upload, 1, Fault::Delay(Duration::from_secs(5))),
            Hold::SlowUpload => (GcsOp::Upload, 1, Fault::SlowBody { piece: 2, delay: Duration::from_secs(1) }),
            Hold::DelayGet { nth } => (GcsOp::GetObject, u64::from(nth), Fault::Delay(Duration::from_secs(5))),
        };
        let (first_step, first_index) = self.resolve(first);
        let (mut second_step, second_index) = self.resolve(second);
        // A second write of a racing NFS pair goes after the first's bytes,
        // so that both orders leave the same bytes.
        if let (
            Step::ByName { op: ByName::NfsWrite { offset: a, data: first_data }, name: first_name },
            Step::ByName { op: ByName::NfsWrite { offset: b, .. }, name: second_name },
        ) = (&first_step, &mut second_step)
            && first_name == second_name
        {
            *b = a.saturating_add(first_data.len() as u8).saturating_add(*b % 4);
        }
        // The handle a FUSE close of the first gives up is not the second's.
        if matches!(first_step, Step::Close { .. }) && first_index.is_some() && first_index == second_index {
            second_step = Step::Nothing;
        }
        if matches!(first_step, Step::Nothing) {
            return Ok(());
        }
        self.sut.gcs.arm(Call::Gcs(call), nth, fault);
        let failed_before = self.sut.gcs.failed();
        let (first_outcome, second_outcome) = {
            let sut = &self.sut;
            let first_run = sut.exec(&first_step);
            let second_run = async {
                // Let the first reach its held call.
                for _ in 0..50 {
                    tokio::task::yield_now().await;
                }
                let outcome = sut.exec(&second_step).await;
                sut.gcs.release_stalls();
                outcome
            };
            let releaser = async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                sut.gcs.release_stalls();
            };
            let both = async { tokio::join!(first_run, second_run) };
            tokio::pin!(both);
            tokio::select! {
                outcomes = &mut both => outcomes,
                _ = releaser => both.await,
            }
        };
        self.sut.gcs.disarm();
        let failed = self.sut.gcs.failed() > failed_before;
        let observed = self.observe();
        self.model.apply_race(
            (&first_step, first_index, &first_outcome),
            (&second_step, second_index, &second_outcome),
            failed,
            &observed,
        )
    }

    /// Faults off; handles closed; settle and an idle commit; then the
    /// store and a walk of the mount are compared with the model.
    async fn finish(&mut self) -> Result<(), Found> {
        self.sut.gcs.disarm();
        self.sut.gcs.release_stalls();
        while !self.model.handles.is_empty() {
            let step = Step::Close { ino: self.model.handles[0].ino, fh: self.model.handles[0].fh };
            let outcome = self.sut.exec(&step).await;
            let observed = self.observe();
            self.model.apply(&step, Some(0), &outcome, false, &observed, Expect::default())?;
        }
        let expect = self.model.commit_expect();
        let _ = self.sut.ns().settle().await;
        let observed = self.observe();
        self.model.after_commit(expect, &observed, false, "settle")?;
        let expect = self.model.commit_expect();
        self.sut.ns().commit_idle(Duration::ZERO).await;
        let observed = self.observe();
        self.model.after_commit(expect, &observed, false, "the final idle commit")?;
        self.model.final_check()?;
        self.walk().await
    }

    /// Lists the bucket and its directories and reads every file, through
    /// the frontend's calls; all must agree with the store.
    async fn walk(&self) -> Result<(), Found> {
        let store = self.sut.store();
        let unsettled: BTreeSet<&String> = self.model.nfs.keys().collect();
        for dir in ["", "d", "e"] {
            if !dir.is_empty() && !dir_exists(&store, dir) {
                if self.sut.dir(dir).await.is_ok() {
                    return Err(format!("[walk] directory {dir} is found but Cloud Storage has nothing under {dir}/"));
                }
                continue;
            }
            let ino = self.sut.dir(dir).await.map_err(|e| format!("[walk] directory {dir:?}: errno {e}"))?;
            let page =
                self.sut.ns().readdir(ino, None, 0, 1000).await.map_err(|e| format!("[walk] readdir {dir:?}: {e}"))?;
            let listed: BTreeSet<String> = page.entries.iter().map(|e| e.name.clone()).collect();
            let prefix = if dir.is_empty() { String::new() } else { format!("{dir}/") };
            let mut expected: BTreeSet<String> = [".meta".to_string()].into();
            for name in store.keys() {
                let Some(rest) = name.strip_prefix(&prefix) else { continue };
                match rest.split_once('/') {
                    Some((sub, _)) => expected.insert(sub.to_string()),
                    None if rest.is_empty() => false,
                    None => expected.insert(rest.to_string()),
                };
            }
            let differ: Vec<&String> = listed
                .symmetric_difference(&expected)
                .filter(|n| !unsettled.contains(&format!("{prefix}{n}")))
                .collect();
            if !differ.is_empty() {
                return Err(format!("[walk] {dir:?} lists {listed:?}, Cloud Storage has {expected:?}"));
            }
            for name in listed.iter().filter(|n| store.contains_key(&format!("{prefix}{n}"))) {
                let full = format!("{prefix}{name}");
                if unsettled.contains(&full) {
                    continue;
                }
                let read = self.read_path(&full).await.map_err(|e| format!("[walk] read {full}: errno {e}"))?;
                if read != store[&full].data {
                    return Err(format!("[walk] {full} reads {read:?}, Cloud Storage has {:?}", store[&full].data));
                }
            }
        }
        Ok(())
    }

    async fn read_path(&self, name: &str) -> Result<Vec<u8>, i32> {
        let ino = self.sut.lookup(name).await?;
        let ns = self.sut.ns();
        match self.model.frontend {
            Frontend::Nfs => Ok(errno(ns.read(ino, None, 0, READ_ALL).await)?.0.to_vec()),
            Frontend::Fuse => {
                let opened = errno(ns.open(ino, OpenFlags::default()).await)?;
                let read = errno(ns.read(ino, Some(opened.fh), 0, READ_ALL).await);
                let _ = ns.flush(ino, opened.fh).await;
                let _ = ns.release(ino, opened.fh).await;
                Ok(read?.0.to_vec())
            }
        }
    }
}

// ------------------------------------------------ the model's transitions

impl Model {
    /// Checks the observed store against `expect`: named objects must hold
    /// one of their allowed contents, others must be untouched.
    fn check_store(&self, expect: &Expect, observed: &Store, after: &str) -> Result<(), Found> {
        let names: BTreeSet<&String> = self.store.keys().chain(observed.keys()).collect();
        for name in names {
            let (before, now) = (self.store.get(name), observed.get(name));
            match expect.0.get(name.as_str()) {
                Some(allowed) if allowed.is_empty() => {}
                Some(allowed) => {
                    let content = now.map(|o| o.data.clone());
                    if !allowed.contains(&content) {
                        return Err(format!(
                            "[{}] after {after}: {name} holds {:?}; allowed: {:?} (before: {:?})",
                            self.store_kind(name),
                            content,
                            allowed,
                            before.map(|o| &o.data)
                        ));
                    }
                }
                None if before != now => {
                    return Err(format!(
                        "[{}] after {after}: {name} changed from {:?} to {:?}, which nothing acknowledged or attempted",
                        self.store_kind(name),
                        before.map(|o| (&o.data, o.generation)),
                        now.map(|o| (&o.data, o.generation))
                    ));
                }
                None => {}
            }
        }
        Ok(())
    }

    /// The kind of a divergence of what `name` holds: told apart when an
    /// upload of its writer landed with its answer lost, an rm of it
    /// failed, or an NFS WRITE of it failed in its journal, the likely
    /// causes (`lost-answer-taken-for-conflict`, `nfs-acked-lost-by-failed-rm`,
    /// `regression_a_failed_nfs_write_is_not_uploaded`).
    fn store_kind(&self, name: &str) -> &'static str {
        let fuse = self.writers.values().any(|w| w.name == name && w.landed_unseen);
        match self.nfs.get(name) {
            Some(p) if p.landed_unseen => "store-after-lost-answer",
            Some(p) if p.rm_failed => "store-after-failed-rm",
            _ if self.broken_journals.contains(name) => "store-after-failed-nfs-write",
            _ if fuse => "store-after-lost-answer",
            _ => "store",
        }
    }

    /// Applies an executed step: checks what it returned and what the store
    /// holds, then takes the observed store.
    fn apply(
        &mut self,
        step: &Step,
        index: Option<usize>,
        outcome: &Outcome,
        failed: bool,
        observed: &Store,
        extra: Expect,
    ) -> Result<(), Found> {
        let what = format!("{step:?} -> {outcome:?}");
        trace(&what, failed, observed);
        let mut expect = self.expect(step, index, outcome, failed, observed, &what)?;
        expect.merge(extra);
        self.check_store(&expect, observed, &what)?;
        let before = std::mem::replace(&mut self.store, observed.clone());
        self.update(step, index, outcome, failed, &before, &what)
    }

    /// What the store may hold after `step` returned `outcome`; and the
    /// checks of the outcome itself.
    fn expect(
        &self,
        step: &Step,
        index: Option<usize>,
        outcome: &Outcome,
        failed: bool,
        observed: &Store,
        what: &str,
    ) -> Result<Expect, Found> {
        let mut expect = Expect::default();
        match step {
            Step::Fsync { .. } | Step::Close { .. } => {
                let close = matches!(step, Step::Close { .. });
                self.expect_upload(index.expect("a handle"), close, outcome, failed, observed, what, &mut expect)?;
            }
            Step::ByName { op: ByName::Truncate { size }, name } if !matches!(outcome, Ok(Done::Skipped(_))) => {
                let staged = self.nfs.contains_key(name) || self.live_writer(name).is_some();
                let now = content_of(&self.store, name);
                match (self.nfs.get(name), now) {
                    (Some(p), _) if p.wild || !p.acked || p.maybe_gone => expect.any(name),
                    _ if staged => {}
                    (_, Some(now)) => {
                        let cut = resized(now.clone(), *size as usize);
                        expect.allow(name, Some(cut));
                        if outcome.is_err() {
                            expect.allow(name, Some(now));
                        }
                    }
                    (_, None) => {}
                }
            }
            Step::ByName { op: ByName::Unlink, name } => match outcome {
                Ok(Done::Skipped(_)) => {}
                Ok(_) => expect.allow(name, None),
                Err(_) => {
                    expect.allow(name, content_of(&self.store, name));
                    if failed {
                        expect.allow(name, None);
                    }
                }
            },
            Step::NfsCreate { name } => match outcome {
                Ok(Done::Skipped(_)) => {}
                Ok(_) => expect.allow(name, Some(Vec::new())),
                Err(_) => {
                    expect.allow(name, None);
                    expect.allow(name, Some(Vec::new()));
                }
            },
            Step::Rename { from, to } => self.expect_rename(from, to, outcome, failed, &mut expect),
            Step::RenameDir { from, to } => self.expect_rename_dir(from, to, outcome, failed, &mut expect),
            Step::Mkdir { dir } => {
                let placeholder = format!("{dir}/");
                match outcome {
                    Ok(Done::Skipped(_)) => {}
                    Ok(_) => expect.allow(&placeholder, Some(Vec::new())),
                    Err(_) if failed => {
                        expect.allow(&placeholder, content_of(&self.store, &placeholder));
                        expect.allow(&placeholder, Some(Vec::new()));
                    }
                    Err(_) => {}
                }
            }
            Step::Rmdir { dir } => {
                let placeholder = format!("{dir}/");
                match outcome {
                    Ok(Done::Skipped(_)) => {}
                    Ok(_) => {
                        for name in self.store.keys().filter(|k| k.starts_with(&placeholder)) {
                            expect.allow(name, None);
                        }
                    }
                    Err(_) if failed => {
                        expect.allow(&placeholder, content_of(&self.store, &placeholder));
                        expect.allow(&placeholder, None);
                    }
                    Err(_) => {}
                }
            }
            Step::CommitIdle => expect = self.commit_expect(),
            _ => {}
        }
        Ok(expect)
    }

    /// Which part of a close or fsync of writer `w` tries an upload. A
    /// close (flush, then release): after a reported failure, nothing; a
    /// file created or written, the flush; an existing file only emptied,
    /// the last handle's release (after the close returned). An fsync:
    /// whatever is unflushed.
    fn attempt(w: &FileWriter, close: bool) -> Attempt {
        if w.unlinked == Unlinked::Yes {
            return Attempt::None;
        }
        match (close, w.unflushed) {
            (true, _) if w.failure_reported.is_some() => Attempt::None,
            (_, Unflushed::Nothing) => Attempt::None,
            (true, Unflushed::Emptied) if w.handles == 1 => Attempt::Release,
            (true, Unflushed::Emptied) => Attempt::None,
            _ => Attempt::Flush,
        }
    }

    /// What a close or fsync of handle `i` may leave, and the checks of
    /// what it answered.
    #[allow(clippy::too_many_arguments)]
    fn expect_upload(
        &self,
        i: usize,
        close: bool,
        outcome: &Outcome,
        failed: bool,
        observed: &Store,
        what: &str,
        expect: &mut Expect,
    ) -> Result<(), Found> {
        let (flush, release) = match outcome {
            Ok(Done::Closed { flush, release }) => (*flush, *release),
            Ok(_) => (Ok(()), Ok(())),
            Err(e) => (Err(*e), Ok(())),
        };
        let Kind::Write(id) = self.handles[i].kind else {
            // A read-only handle's close uploads nothing, so it cannot fail
            // nor decide for the writer.
            if flush.is_err() || release.is_err() {
                return Err(format!("[reader-close-failed] {what}: a read-only handle's close failed"));
            }
            return Ok(());
        };
        let w = &self.writers[&id];
        let name = &w.name;
        let prev = content_of(&self.store, name);
        let now = content_of(observed, name);
        for other in &w.maybe_names {
            expect.allow(other, content_of(&self.store, other));
            expect.allow(other, Some(w.content.clone()));
        }
        if w.wild {
            // Its bytes are not known (an open that raced the close of the
            // file's last handle joined that writer or started from the
            // object).
            expect.any(name);
            return Ok(());
        }
        if w.unsure || w.base == Base::Unknown || !w.maybe_names.is_empty() {
            // Whether it uploads, and what it replaces, are not known.
            expect.allow(name, prev);
            expect.allow(name, Some(w.content.clone()));
            return Ok(());
        }
        if let Some(reported) = w.failure_reported.filter(|_| close && w.unlinked != Unlinked::Maybe) {
            // The failure is reported again at once, nothing tried.
            if flush.is_ok() {
                return Err(format!(
                    "[close-ok-after-failure] {what}: Ok after a failed flush or fsync with nothing written since"
                ));
            }
            if flush != Err(reported) {
                return Err(format!(
                    "[close-other-failure] {what}: a close after a failure (errno {reported}) with nothing written since answers another"
                ));
            }
            if release.is_err() {
                return Err(format!(
                    "[release-tried] {what}: the last release tried an upload a close reported failed"
                ));
            }
            return Ok(());
        }
        if w.replaced {
            // Its file was replaced by a rename: never stored (the object
            // is the other file's), whatever it answers.
            return Ok(());
        }
        if w.unlinked == Unlinked::Maybe {
            // An rm that failed: either it took effect (the object is
            // gone, nothing to store), or it did not, and then the file's
            // close promises what any close does.
            expect.allow(name, prev.clone());
            expect.allow(name, Some(w.content.clone()));
            let ok = flush.is_ok() && release.is_ok();
            if ok
                && prev.is_some()
                && now == prev
                && now.as_ref() != Some(&w.content)
                && w.unflushed != Unflushed::Nothing
            {
                return Err(format!(
                    "[close-ok-after-failed-rm] {what}: Ok, but {name} (whose rm failed) still holds {prev:?}, not the handle's {:?}",
                    w.content
                ));
            }
            return Ok(());
        }
        let attempt = Self::attempt(w, close);
        let (tried, others) = match attempt {
            Attempt::None => (None, [flush, release]),
            Attempt::Flush => (Some(flush), [release, Ok(())]),
            Attempt::Release => (Some(release), [flush, Ok(())]),
        };
        if others.iter().any(|r| r.is_err()) {
            return Err(format!("[close-failed] {what}: a part that uploads nothing ({attempt:?} uploads) failed"));
        }
        let Some(tried) = tried else { return Ok(()) };
        let stale = w.base != self.generation_of(name);
        let replaced_now = observed.get(name).map(|o| o.generation) != self.store.get(name).map(|o| o.generation);
        let tag = |default: &str| match (w.failed_sync, attempt) {
            (true, _) => "close-ok-after-failed-fsync".to_string(),
            (_, Attempt::Release) => "release-ok-not-stored".to_string(),
            _ => default.to_string(),
        };
        if stale && prev.as_ref() == Some(&w.content) {
            // Refused (412), and the object holds exactly these bytes: an
            // earlier attempt whose answer was lost stored them; a success.
            expect.allow(name, prev);
            if tried.is_err() && !failed {
                return Err(format!(
                    "[stored-already-refused] {what}: {name} holds exactly the handle's bytes at a newer generation, yet the upload failed with no fault"
                ));
            }
            return Ok(());
        }
        if stale {
            if replaced_now {
                return Err(format!(
                    "[overwrote-newer] {what}: {name} was replaced although it changed since the writer's base \
                     (writer base {:?}, object was {:?})",
                    w.base,
                    self.generation_of(name)
                ));
            }
            if tried.is_ok() {
                return Err(format!(
                    "[{}] {what}: Ok, but {name} changed since the writer's base and holds {now:?}, not the handle's {:?}",
                    tag("stale-ok"),
                    w.content
                ));
            }
            return Ok(());
        }
        if tried.is_ok() {
            if now.as_ref() != Some(&w.content) {
                return Err(format!(
                    "[{}] {what}: Ok, but {name} holds {now:?}, not the handle's {:?}",
                    tag("ok-not-stored"),
                    w.content
                ));
            }
            expect.allow(name, Some(w.content.clone()));
        } else {
            if !failed && w.landed_unseen {
                return Err(format!(
                    "[lost-answer-taken-for-conflict] {what}: failed with no fault; {name} holds the generation \
                     an earlier upload of this writer made (its answer lost), which this one must replace"
                ));
            }
            if !failed {
                return Err(format!("[close-failed] {what}: failed with no fault and nothing against it"));
            }
            expect.allow(name, prev);
            expect.allow(name, Some(w.content.clone()));
        }
        Ok(())
    }

    /// What a rename of `from` moves (a file being written goes up first),
    /// and whether that upload must fail (ESTALE).
    fn rename_source(&self, from: &str) -> (Option<Vec<u8>>, bool) {
        if let Some(p) = self.nfs.get(from).filter(|p| p.acked) {
            return (Some(p.content.clone()), p.conflicted);
        }
        match self.live_writer(from).map(|id| &self.writers[&id]) {
            Some(w) if w.unflushed != Unflushed::Nothing || w.unsure => {
                // Refused (ESTALE) when its base is not the object's; which
                // it is, is not known after a race.
                let stale = w.unsure
                    || w.base == Base::Unknown
                    || w.base != self.generation_of(from) && content_of(&self.store, from).as_ref() != Some(&w.content);
                (Some(w.content.clone()), stale)
            }
            Some(w) => {
                // A clean writer moves the generation its handles hold: one
                // another client changed since is refused (ESTALE).
                let stale = matches!(w.base, Base::Generation(_) | Base::Unknown) && w.base != self.generation_of(from);
                (content_of(&self.store, from), stale)
            }
            None => (content_of(&self.store, from), false),
        }
    }

    fn expect_rename(&self, from: &str, to: &str, outcome: &Outcome, failed: bool, expect: &mut Expect) {
        let (source, _) = self.rename_source(from);
        if let Some(w) = self.live_writer(from).map(|id| &self.writers[&id]).filter(|w| w.unsure)
            && matches!(outcome, Ok(Done::Unit))
        {
            // After a race, whether it had anything left to upload is not
            // known: what moves is its bytes or the object's.
            expect.allow(from, None);
            expect.allow(to, Some(w.content.clone()));
            expect.allow(to, content_of(&self.store, from));
            return;
        }
        if self.nfs.get(from).is_some_and(|p| p.wild) {
            // What its writer holds is not known: so is what moves.
            expect.any(from);
            expect.any(to);
            return;
        }
        match outcome {
            Ok(Done::Skipped(_)) => {}
            Ok(_) => {
                expect.allow(from, None);
                expect.allow(to, source);
            }
            Err(_) => {
                expect.allow(from, content_of(&self.store, from));
                expect.allow(to, content_of(&self.store, to));
                if failed {
                    expect.allow(from, source.clone());
                    expect.allow(from, None);
                    expect.allow(to, source);
                    expect.allow(to, content_of(&self.store, from));
                }
            }
        }
    }

    fn expect_rename_dir(&self, from: &str, to: &str, outcome: &Outcome, failed: bool, expect: &mut Expect) {
        let (source, target) = (format!("{from}/"), format!("{to}/"));
        let moved = |name: &str| format!("{target}{}", &name[source.len()..]);
        match outcome {
            Ok(Done::Skipped(_)) => {}
            Ok(_) => {
                for name in self.store.keys().filter(|k| k.starts_with(&target)) {
                    expect.allow(name, None);
                }
                for (name, obj) in self.store.iter().filter(|(k, _)| k.starts_with(&source)) {
                    expect.allow(name, None);
                    expect.0.remove(&moved(name));
                    expect.allow(&moved(name), Some(obj.data.clone()));
                }
            }
            Err(_) if failed => {
                for (name, obj) in self.store.iter().filter(|(k, _)| k.starts_with(&target)) {
                    expect.allow(name, Some(obj.data.clone()));
                    expect.allow(name, None);
                }
                for (name, obj) in self.store.iter().filter(|(k, _)| k.starts_with(&source)) {
                    expect.allow(name, Some(obj.data.clone()));
                    expect.allow(name, None);
                    expect.allow(&moved(name), content_of(&self.store, &moved(name)));
                    expect.allow(&moved(name), Some(obj.data.clone()));
                }
            }
            Err(_) => {}
        }
    }

    /// What an idle commit may leave: each pending object its previous
    /// bytes or the acknowledged ones.
    fn commit_expect(&self) -> Expect {
        let mut expect = Expect::default();
        for (name, p) in &self.nfs {
            if p.wild {
                expect.any(name);
                continue;
            }
            expect.allow(name, content_of(&self.store, name));
            if p.acked {
                expect.allow(name, Some(p.content.clone()));
            }
        }
        expect
    }

    /// After an idle commit (or settle): with no fault, every acknowledged
    /// write is in the store.
    fn after_commit(&mut self, expect: Expect, observed: &Store, failed: bool, what: &str) -> Result<(), Found> {
        trace(what, failed, observed);
        self.check_store(&expect, observed, what)?;
        self.store = observed.clone();
        self.settle_pending(failed, what)
    }

    /// After a commit made (the store is the observed one): with no fault,
    /// every acknowledged write must be there; what is, is settled.
    fn settle_pending(&mut self, failed: bool, what: &str) -> Result<(), Found> {
        let observed = &self.store;
        let mut settled = Vec::new();
        let mut maybe_gone = Vec::new();
        let mut conflicted_maybe_gone = Vec::new();
        for (name, p) in &self.nfs {
            let stored = observed.get(name).map(|o| &o.data) == Some(&p.content);
            // (Another client's change since makes it a conflict instead:
            // the bytes go to `conflicts/`, checked below.)
            if p.rm_failed && !p.conflicted && !failed && !p.wild && !stored {
                if observed.contains_key(name) {
                    return Err(format!(
                        "[nfs-acked-lost-by-failed-rm] after {what} with no fault: {name}, whose rm failed, holds {:?}, \
                         the acknowledged writes are {:?}",
                        observed.get(name).map(|o| &o.data),
                        p.content
                    ));
                }
                // The rm took effect (its answer was lost).
                settled.push(name.clone());
                continue;
            }
            if !failed && p.acked && !p.conflicted && !p.wild && !stored {
                let kind =
                    if p.landed_unseen { "nfs-lost-answer-taken-for-conflict" } else { "nfs-acked-not-uploaded" };
                return Err(format!(
                    "[{kind}] after {what} with no fault: {name} holds {:?}, the acknowledged writes are {:?}",
                    observed.get(name).map(|o| &o.data),
                    p.content
                ));
            }
            if !failed && (stored || !p.acked) && !p.wild {
                settled.push(name.clone());
            } else if failed && stored {
                // Uploaded, perhaps by an attempt whose answer was lost:
                // whether its writer went is not known.
                maybe_gone.push(name.clone());
            } else if failed && p.conflicted {
                // Given up (a conflict), unless the commit failed first.
                conflicted_maybe_gone.push(name.clone());
            } else if !failed && p.acked && p.conflicted && !p.wild {
                // Refused because another client changed the object: the
                // writer gives up, its bytes kept in `conflicts/` (if it
                // was still there: it may have gone, its bytes uploaded).
                if !p.maybe_gone {
                    self.kept_conflicts.push((name.clone(), p.content.clone()));
                }
                settled.push(name.clone());
            }
        }
        for name in settled {
            self.nfs.remove(&name);
        }
        for name in maybe_gone {
            if let Some(p) = self.nfs.get_mut(&name) {
                p.maybe_gone = true;
                p.landed_unseen = true;
            }
        }
        for name in conflicted_maybe_gone {
            if let Some(p) = self.nfs.get_mut(&name) {
                p.maybe_gone = true;
            }
        }
        self.check_conflicts_kept(what)
    }

    /// Every writer given up for a conflict left its bytes in `conflicts/`.
    fn check_conflicts_kept(&self, what: &str) -> Result<(), Found> {
        let mut there = self.conflicts.clone();
        for (name, content) in &self.kept_conflicts {
            match there.iter().position(|c| c == content) {
                Some(i) => {
                    there.remove(i);
                }
                None => {
                    return Err(format!(
                        "[conflict-not-kept] after {what}: the bytes {content:?} of {name}, refused as a conflict, \
                         are not in conflicts/ (it holds {:?})",
                        self.conflicts
                    ));
                }
            }
        }
        Ok(())
    }

    fn restart_expect(&self) -> Expect {
        self.commit_expect()
    }

    /// After the NFS server's restart or crash and its journal replay: the
    /// replay takes each journal record back as a writer of the new
    /// process, uploaded by the next idle commit (not at the start).
    /// `stop`: how the server stopped: cleanly (settle uploads what was
    /// acknowledged, as an idle commit does), or killed (in an idle commit).
    fn after_restart(&mut self, expect: Expect, observed: &Store, failed: bool, stop: Stop) -> Result<(), Found> {
        let settled = stop == Stop::Settle;
        trace(&format!("a restart ({stop:?})"), failed, observed);
        self.check_store(&expect, observed, "a restart and the journal replay")?;
        self.store = observed.clone();
        if settled {
            self.settle_pending(failed, "the settle of a restart")?;
        }
        // What the journal kept stays pending, now in a writer; what is
        // stored already (a settle before the stop uploaded it), or what
        // nothing acknowledged, goes. What is unknown stays unknown: its
        // journal record may be there, and be uploaded later.
        // After a crash, what is stored may still have its record (an
        // upload whose answer was lost): taken back or not.
        let store = &self.store;
        self.nfs.retain(|name, p| {
            let stored = store.get(name).map(|o| &o.data) == Some(&p.content);
            p.wild || p.acked && (failed || !stored || !settled)
        });
        for (name, p) in &mut self.nfs {
            let stored = store.get(name).map(|o| &o.data) == Some(&p.content);
            p.maybe_gone |= stored;
            p.landed_unseen |= stored;
            // Given up by the commit the crash cut, or not yet tried.
            p.maybe_gone |= p.conflicted && stop == Stop::CrashInCommit;
        }
        Ok(())
    }

    fn final_check(&self) -> Result<(), Found> {
        for (name, p) in &self.nfs {
            if p.acked && !p.conflicted && !p.wild {
                return Err(format!(
                    "[nfs-acked-not-uploaded] at the end: {name} holds {:?}, the acknowledged writes are {:?}",
                    self.store.get(name).map(|o| &o.data),
                    p.content
                ));
            }
        }
        Ok(())
    }

    /// Updates handles and pending writes after `step` (the store is
    /// already the observed one; `before` is the one before the step).
    fn update(
        &mut self,
        step: &Step,
        index: Option<usize>,
        outcome: &Outcome,
        failed: bool,
        before: &Store,
        what: &str,
    ) -> Result<(), Found> {
        match step {
            Step::Open { name, truncate } => self.opened(name, *truncate, outcome, failed, before, what),
            Step::OpenRead { name } => {
                match outcome {
                    Ok(Done::Opened { fh, ino, .. }) => {
                        let view = match self.live_writer(name) {
                            Some(id) => View::Writer(id),
                            None => View::Object(
                                before.get(name).map(|o| o.generation),
                                content_of(before, name).unwrap_or_default(),
                            ),
                        };
                        self.handles.push(Handle { fh: *fh, ino: *ino, name: name.clone(), kind: Kind::Read(view) });
                    }
                    Ok(Done::Skipped(e)) => self.check_lookup_miss(name, *e, failed, what)?,
                    Err(_) if !failed && self.exists(name) == Some(true) => {
                        return Err(format!("[open-failed] {what}: a read-only open failed with no fault"));
                    }
                    _ => {}
                }
                Ok(())
            }
            Step::Write { offset, data, .. } => {
                let i = index.expect("a handle");
                let base_gone = self.base_gone(i, before);
                let may_fail = self.fill_may_fail(i, before);
                let Some(w) = self.writer_of_mut(i) else { return Ok(()) };
                match outcome {
                    Ok(Done::Wrote(n)) if *n as usize == data.len() => {
                        if base_gone {
                            return Err(format!(
                                "[fill-other-generation] {what}: a write needing the base's bytes succeeded though that generation is gone"
                            ));
                        }
                        w.content = written(std::mem::take(&mut w.content), *offset as usize, data);
                        w.needs_fill = false;
                        w.unflushed = Unflushed::Written;
                        w.failure_reported = None;
                    }
                    Ok(other) => return Err(format!("[write] {what}: answered {other:?}")),
                    Err(_) if !failed && !may_fail && !w.wild => {
                        return Err(format!("[write-failed] {what}: failed with no fault"));
                    }
                    Err(_) => {}
                }
                Ok(())
            }
            Step::Read { .. } => self.check_read(index.expect("a handle"), outcome, failed, before, what),
            Step::TruncateIno { size, .. } => {
                let i = index.expect("a handle");
                let base_gone = self.fill_may_fail(i, before) && *size > 0;
                let Some(w) = self.writer_of_mut(i) else { return Ok(()) };
                // Its inode was dropped by the rename that replaced it.
                let stale_ino = w.replaced;
                if w.content.len() == *size as usize && !w.wild {
                    // No change: nothing fetched, nothing to upload.
                    return match outcome {
                        Err(_) if !stale_ino => {
                            Err(format!("[truncate-failed] {what}: failed, with nothing to change"))
                        }
                        _ => Ok(()),
                    };
                }
                match outcome {
                    Ok(_) => truncated(w, *size),
                    Err(_) if !failed && !base_gone && !w.wild && !stale_ino => {
                        return Err(format!("[truncate-failed] {what}: failed with no fault"));
                    }
                    Err(_) => {}
                }
                Ok(())
            }
            Step::Fsync { .. } => {
                self.uploaded(index.expect("a handle"), false, outcome, before);
                Ok(())
            }
            Step::Close { .. } => {
                let i = index.expect("a handle");
                self.uploaded(i, true, outcome, before);
                self.closed(i);
                Ok(())
            }
            Step::ByName { op, name } => self.update_by_name(op, name, outcome, failed, before, what),
            Step::NfsCreate { name } => {
                match outcome {
                    Ok(Done::Skipped(e)) if *e != libc::EEXIST => self.check_lookup_miss(name, *e, failed, what)?,
                    Ok(Done::Skipped(_)) => {}
                    Err(_) if !failed => return Err(format!("[create-failed] {what}: failed with no fault")),
                    _ => {}
                }
                Ok(())
            }
            Step::Rename { from, to } => self.renamed(from, to, outcome, failed, before, what),
            Step::RenameDir { from, to } => self.renamed_dir(from, to, outcome, failed, before, what),
            Step::Mkdir { dir } => match outcome {
                Err(e) if !(failed || *e == libc::EEXIST && dir_exists(before, dir)) => {
                    Err(format!("[mkdir-failed] {what}: failed with no fault"))
                }
                Ok(Done::Unit) if dir_exists(before, dir) => {
                    Err(format!("[mkdir-exists] {what}: Ok although {dir} exists"))
                }
                _ => Ok(()),
            },
            Step::Rmdir { dir } => {
                let prefix = format!("{dir}/");
                let under = |name: &str| name.starts_with(&prefix);
                let not_empty = before.keys().any(|k| under(k) && *k != prefix)
                    || self
                        .writers
                        .values()
                        .any(|w| !w.retired && under(&w.name) && w.unlinked == Unlinked::No && !w.replaced);
                // Files whose writes are not known settled (NFS), or whose
                // rm failed, may still count.
                let maybe_not_empty = self.nfs.keys().any(|k| under(k))
                    || self.writers.values().any(|w| {
                        !w.retired
                            && (under(&w.name) || w.maybe_names.iter().any(|n| under(n)))
                            && w.unlinked != Unlinked::Yes
                    });
                match outcome {
                    Ok(Done::Skipped(e)) if dir_exists(before, dir) && !failed => {
                        Err(format!("[lookup-missed] {what}: errno {e} for an existing directory"))
                    }
                    Err(libc::ENOTEMPTY) if not_empty || maybe_not_empty => Ok(()),
                    Err(_) if !failed => Err(format!("[rmdir-failed] {what}: failed with no fault")),
                    Ok(Done::Unit) if not_empty => {
                        Err(format!("[rmdir-not-empty] {what}: Ok although {dir} holds files (or files being written)"))
                    }
                    _ => Ok(()),
                }
            }
            Step::CommitIdle => self.settle_pending(failed, what),
            Step::Nothing => Ok(()),
        }
    }

    fn check_lookup_miss(&self, name: &str, errno: i32, failed: bool, what: &str) -> Result<(), Found> {
        if failed || errno != libc::ENOENT {
            return Ok(());
        }
        let parent_missing = parent_of(name).is_some_and(|d| !self.dir_exists(d));
        if !parent_missing && self.exists(name) == Some(true) {
            return Err(format!("[lookup-missed] {what}: ENOENT for a file that exists"));
        }
        Ok(())
    }

    /// An open for write: the file's writer is shared when it has nothing
    /// unflushed (EBUSY when it has), else a new one starts from the object.
    fn opened(
        &mut self,
        name: &str,
        truncate: bool,
        outcome: &Outcome,
        failed: bool,
        before: &Store,
        what: &str,
    ) -> Result<(), Found> {
        let live = self.live_writer(name);
        match outcome {
            Ok(Done::Opened { fh, ino, created }) => {
                if !failed
                    && let Some(exists) = self.exists(name)
                    && exists == *created
                {
                    return Err(format!(
                        "[lookup-{}] {what}: the lookup and the model disagree on whether {name} exists",
                        if exists { "missed" } else { "phantom" }
                    ));
                }
                let id = match live {
                    Some(id) => {
                        let w = self.writers.get_mut(&id).expect("a live writer");
                        if w.busy() && !w.unsure {
                            return Err(format!(
                                "[open-while-busy] {what}: opened for write although another handle has unflushed data"
                            ));
                        }
                        if w.ino != *ino {
                            return Err(format!(
                                "[open-other-inode] {what}: opened inode {ino}, the file's writer is at inode {}",
                                w.ino
                            ));
                        }
                        if truncate {
                            w.wild = false;
                            if !w.content.is_empty() {
                                truncated(w, 0);
                            }
                        }
                        w.handles += 1;
                        id
                    }
                    None => {
                        let object = before.get(name).filter(|_| !*created);
                        let content = match object {
                            Some(o) if !truncate => o.data.clone(),
                            _ => Vec::new(),
                        };
                        let unflushed = match (*created, object) {
                            (true, _) => Unflushed::Created,
                            // A truncating open of an existing object
                            // changes it even if nothing is written.
                            (false, Some(_)) if truncate => Unflushed::Emptied,
                            _ => Unflushed::Nothing,
                        };
                        let writer = FileWriter {
                            ino: *ino,
                            name: name.to_string(),
                            maybe_names: Vec::new(),
                            base: object.map_or(Base::Absent, |o| Base::Generation(o.generation)),
                            needs_fill: !content.is_empty(),
                            content,
                            unflushed,
                            failure_reported: None,
                            unlinked: Unlinked::No,
                            failed_sync: false,
                            wild: false,
                            unsure: false,
                            replaced: false,
                            landed_unseen: false,
                            handles: 1,
                            retired: false,
                        };
                        let id = self.next_id;
                        self.next_id += 1;
                        self.writers.insert(id, writer);
                        id
                    }
                };
                self.handles.push(Handle { fh: *fh, ino: *ino, name: name.to_string(), kind: Kind::Write(id) });
                Ok(())
            }
            Ok(Done::Skipped(e)) => self.check_lookup_miss(name, *e, failed, what),
            Err(libc::EBUSY) if live.is_some_and(|id| self.writers[&id].busy() || self.writers[&id].unsure) => Ok(()),
            Err(_) if !failed => Err(format!("[open-failed] {what}: failed with no fault and no busy writer")),
            _ => Ok(()),
        }
    }

    /// Whether handle `i`'s writer still needs its base's bytes and that
    /// generation is gone (its fill must fail).
    /// Whether handle `i`'s writer still needs its base's bytes and that
    /// generation may be gone (it is, or its base is not known).
    fn fill_may_fail(&self, i: usize, before: &Store) -> bool {
        self.base_gone(i, before) || self.writer_of(i).is_some_and(|w| w.needs_fill && w.base == Base::Unknown)
    }

    fn base_gone(&self, i: usize, before: &Store) -> bool {
        let Some(w) = self.writer_of(i) else { return false };
        w.needs_fill
            && match w.base {
                Base::Generation(g) => before.get(&w.name).map(|o| o.generation) != Some(g),
                Base::Absent | Base::Unknown => false,
            }
    }

    fn check_read(
        &mut self,
        i: usize,
        outcome: &Outcome,
        failed: bool,
        before: &Store,
        what: &str,
    ) -> Result<(), Found> {
        let base_gone = self.base_gone(i, before);
        let may_fail = self.fill_may_fail(i, before);
        let h = &self.handles[i];
        let (expected, may_fail) = match (&h.kind, self.writer_of(i)) {
            (Kind::Read(View::Unknown), _) => return Ok(()),
            (Kind::Read(View::Object(generation, data)), _) => {
                (data.clone(), before.get(&h.name).map(|o| o.generation) != *generation)
            }
            (_, Some(w)) if w.wild => return Ok(()),
            (_, Some(w)) => (w.content.clone(), may_fail),
            (_, None) => return Ok(()),
        };
        match outcome {
            Ok(Done::Data(data)) if *data == expected => {
                if let Some(w) = self.writer_of_mut(i) {
                    w.needs_fill = false;
                }
                Ok(())
            }
            Ok(Done::Data(data)) if base_gone && data.len() == expected.len() => Ok(()),
            Ok(other) => Err(format!("[read] {what}: read {other:?}, the handle holds {expected:?}")),
            Err(_) if failed || may_fail => Ok(()),
            Err(_) => Err(format!("[read-failed] {what}: failed with no fault")),
        }
    }

    /// After a close (`close`) or fsync of handle `i`: what its upload did
    /// to its writer.
    fn uploaded(&mut self, i: usize, close: bool, outcome: &Outcome, before: &Store) {
        let Kind::Write(id) = self.handles[i].kind else { return };
        let now = self.store.get(&self.writers[&id].name).cloned();
        let w = self.writers.get_mut(&id).expect("a handle's writer");
        let replaced = now.as_ref().map(|o| o.generation) != before.get(&w.name).map(|o| o.generation);
        let holds = now.as_ref().map(|o| &o.data) == Some(&w.content);
        let (flush, release) = match outcome {
            Ok(Done::Closed { flush, release }) => (*flush, *release),
            Ok(_) => (Ok(()), Ok(())),
            Err(e) => (Err(*e), Ok(())),
        };
        if w.unsure || w.base == Base::Unknown || !w.maybe_names.is_empty() {
            if holds && flush.is_ok() && release.is_ok() && replaced && w.maybe_names.is_empty() {
                // It uploaded now: what it holds is what the object is.
                w.base = Base::Generation(now.map_or(0, |o| o.generation));
                w.unflushed = Unflushed::Nothing;
                w.failure_reported = None;
                w.unsure = false;
            }
            return;
        }
        if w.unlinked != Unlinked::No || w.replaced {
            if !close {
                w.failure_reported = None;
            }
            return;
        }
        let reported = close && w.failure_reported.is_some();
        match Self::attempt(w, close) {
            _ if reported => {}
            Attempt::None => w.failure_reported = None,
            attempt => {
                let result = if attempt == Attempt::Release { release } else { flush };
                if result.is_ok() {
                    if holds {
                        w.base = Base::Generation(now.map_or(0, |o| o.generation));
                    }
                    w.landed_unseen = false;
                    w.unflushed = Unflushed::Nothing;
                    w.failure_reported = None;
                } else {
                    // The bytes stay staged. If the upload landed (its
                    // answer lost), the object is the writer's own: a later
                    // upload replaces it (it is no other writer's change).
                    w.failure_reported = result.err();
                    w.failed_sync |= !close;
                    if replaced && holds {
                        w.base = Base::Generation(now.map_or(0, |o| o.generation));
                        w.landed_unseen = true;
                    }
                }
            }
        }
    }

    /// Handle `i` released: the last write handle of a writer retires it.
    fn closed(&mut self, i: usize) {
        let h = self.handles.remove(i);
        if let Kind::Write(id) = h.kind
            && let Some(w) = self.writers.get_mut(&id)
        {
            w.handles -= 1;
            w.retired = w.handles == 0;
        }
        self.drop_unreachable_writers();
    }

    fn update_by_name(
        &mut self,
        op: &ByName,
        name: &str,
        outcome: &Outcome,
        failed: bool,
        before: &Store,
        what: &str,
    ) -> Result<(), Found> {
        if let Ok(Done::Skipped(e)) = outcome {
            return self.check_lookup_miss(name, *e, failed, what);
        }
        match op {
            ByName::NfsWrite { offset, data } => match outcome {
                Ok(Done::Wrote(n)) if *n as usize == data.len() => {
                    let base = content_of(before, name).unwrap_or_default();
                    if !self.nfs.contains_key(name) && !before.contains_key(name) {
                        // Its file was removed after this WRITE looked it up
                        // (a race): the WRITE, through the removed file's
                        // inode, must be ESTALE.
                        return Err(format!(
                            "[write-into-removed] {what}: Ok for a WRITE through a removed file's inode"
                        ));
                    }
                    if let Some(p) = self.nfs.get_mut(name)
                        && (p.conflicted || p.rm_failed)
                        && p.maybe_gone
                    {
                        // Its writer may have been given up (a conflict):
                        // this WRITE went to it, or to a new one that starts
                        // from the object.
                        p.wild = true;
                    }
                    let p = self.nfs.entry(name.to_string()).or_insert(Pending {
                        content: base,
                        acked: false,
                        conflicted: false,
                        wild: false,
                        maybe_gone: false,
                        rm_failed: false,
                        landed_unseen: false,
                    });
                    p.maybe_gone = false;
                    p.content = written(std::mem::take(&mut p.content), *offset as usize, data);
                    p.acked = true;
                    Ok(())
                }
                Ok(other) => Err(format!("[write] {what}: answered {other:?}")),
                // A local fault: the WRITE failed, and its bytes must not
                // go up (the store check sees them if they do).
                Err(_) if self.broken_journals.contains(name) => Ok(()),
                // Its file was removed after this WRITE looked it up (a
                // race): a removed file's inode is stale.
                Err(libc::ESTALE) if !self.nfs.contains_key(name) && !before.contains_key(name) => Ok(()),
                // Cloud Storage failed it (its lookup of the object, or the
                // fetch of the object's bytes): nothing was written, though
                // a writer may have been made (it holds nothing to upload).
                Err(_) => match self.nfs.get_mut(name) {
                    Some(p) if p.conflicted || p.wild || failed => Ok(()),
                    Some(_) => Err(format!("[nfs-write-failed] {what}: failed with no fault")),
                    None if failed => {
                        let content = content_of(before, name).unwrap_or_default();
                        let pending = Pending {
                            content,
                            acked: false,
                            conflicted: false,
                            wild: false,
                            maybe_gone: true,
                            rm_failed: false,
                            landed_unseen: false,
                        };
                        self.nfs.insert(name.to_string(), pending);
                        Ok(())
                    }
                    None => Err(format!("[nfs-write-failed] {what}: failed with no fault")),
                },
            },
            ByName::NfsRead => {
                let stored = content_of(before, name).unwrap_or_default();
                let expected = match self.nfs.get(name) {
                    Some(p) if p.wild => return Ok(()),
                    Some(p) => p.content.clone(),
                    None => stored.clone(),
                };
                // After a failed rm, or when its writer may have gone (its
                // bytes uploaded), the name may read the object as it is:
                // the commit that follows says whether writes were lost.
                let rm_failed = self.nfs.get(name).is_some_and(|p| p.rm_failed || p.maybe_gone);
                match outcome {
                    Ok(Done::Data(data)) if *data == expected => Ok(()),
                    Ok(Done::Data(data)) if rm_failed && *data == stored => Ok(()),
                    Ok(other) => Err(format!("[read] {what}: read {other:?}, expected {expected:?}")),
                    Err(_) if failed => Ok(()),
                    Err(_) => Err(format!("[read-failed] {what}: failed with no fault")),
                }
            }
            ByName::Truncate { size } => {
                if let Some(id) = self.live_writer(name) {
                    // FUSE: `truncate -s` of a file open for write truncates
                    // its writer (uploaded by its close or last release).
                    let base_gone = *size > 0
                        && {
                            let w = &self.writers[&id];
                            w.needs_fill
                                && matches!(w.base, Base::Generation(g) if before.get(name).map(|o| o.generation) != Some(g))
                        };
                    let w = self.writers.get_mut(&id).expect("a live writer");
                    let changes = w.content.len() != *size as usize || w.wild;
                    match outcome {
                        Ok(_) if changes => truncated(w, *size),
                        Ok(_) => {}
                        Err(_) if !failed && !base_gone && !w.unsure => {
                            return Err(format!("[truncate-failed] {what}: failed with no fault"));
                        }
                        Err(_) => {}
                    }
                    return Ok(());
                }
                match (self.nfs.get_mut(name), outcome) {
                    (Some(p), Ok(_)) if p.maybe_gone => p.wild = true,
                    (Some(p), Ok(_)) => {
                        p.content = resized(std::mem::take(&mut p.content), *size as usize);
                        p.acked |= !p.wild;
                    }
                    (Some(p), Err(_)) => p.wild |= failed || p.conflicted,
                    (None, Err(_)) if !failed => {
                        return Err(format!("[truncate-failed] {what}: failed with no fault"));
                    }
                    (None, _) => {}
                }
                Ok(())
            }
            ByName::Unlink => {
                // The file's writer is marked removed once the object is
                // gone: its handles keep their bytes (fetched first; unknown
                // if the object was gone already) and never upload them. An
                // rm that fails leaves the writer as it was.
                if let (Some(id), true) = (self.live_writer(name), outcome.is_ok()) {
                    let w = self.writers.get_mut(&id).expect("a live writer");
                    let base_gone =
                        matches!(w.base, Base::Generation(g) if before.get(name).map(|o| o.generation) != Some(g));
                    w.wild |= w.needs_fill && (failed || base_gone || w.base == Base::Unknown);
                    w.needs_fill = false;
                    w.unlinked = Unlinked::Yes;
                }
                match outcome {
                    Ok(_) => {
                        self.nfs.remove(name);
                    }
                    Err(_) if failed => {
                        if let Some(p) = self.nfs.get_mut(name) {
                            // Whether its writer is still the name's is
                            // not known (truncates may go up at once).
                            p.rm_failed = true;
                            p.maybe_gone = true;
                        }
                    }
                    _ => return Err(format!("[unlink-failed] {what}: failed with no fault")),
                }
                Ok(())
            }
        }
    }

    fn renamed(
        &mut self,
        from: &str,
        to: &str,
        outcome: &Outcome,
        failed: bool,
        before: &Store,
        what: &str,
    ) -> Result<(), Found> {
        let (_, stale) = {
            let store = std::mem::replace(&mut self.store, before.clone());
            let source = self.rename_source(from);
            self.store = store;
            source
        };
        match outcome {
            Ok(Done::Skipped(_)) if parent_of(to).is_some_and(|d| !dir_exists(before, d)) => {}
            Ok(Done::Skipped(e)) => return self.check_lookup_miss(from, *e, failed, what),
            Ok(_) => {
                let moved = self.live_writer(from);
                let replaced = self.live_writer(to);
                let new_generation = self.store.get(to).map(|o| o.generation);
                if let Some(w) = moved.and_then(|id| self.writers.get_mut(&id)) {
                    // Uploaded first, then moved: its handles write the
                    // new name, from the moved object.
                    w.name = to.to_string();
                    w.base = new_generation.map_or(Base::Absent, Base::Generation);
                    w.unflushed = Unflushed::Nothing;
                    w.failure_reported = None;
                    w.unsure = false;
                }
                if let Some(w) = replaced.and_then(|id| self.writers.get_mut(&id)) {
                    // Its file is gone (as if removed).
                    w.replaced = true;
                }
                self.nfs.remove(to);
                if let Some(p) = self.nfs.remove(from) {
                    // Its writer, uploaded first, stays (clean) under the
                    // new name until an idle commit lets it go: WRITEs to
                    // the new name go into it.
                    let moved = Pending {
                        content: content_of(&self.store, to).unwrap_or_default(),
                        acked: false,
                        conflicted: false,
                        wild: false,
                        maybe_gone: p.maybe_gone,
                        rm_failed: false,
                        landed_unseen: false,
                    };
                    self.nfs.insert(to.to_string(), moved);
                }
                // The journal's record path is the inode's, which moves.
                self.broken_journals.remove(to);
                if self.broken_journals.remove(from) {
                    self.broken_journals.insert(to.to_string());
                }
            }
            Err(_) if failed => {
                for w in self.writers.values_mut().filter(|w| !w.retired && (w.name == from || w.name == to)) {
                    w.maybe_names = vec![from.to_string(), to.to_string()];
                    w.base = Base::Unknown;
                    w.unsure = true;
                }
                for name in [from, to] {
                    if let Some(p) = self.nfs.get_mut(name) {
                        p.wild = true;
                    }
                }
            }
            Err(libc::ESTALE) if stale => {}
            Err(_) if self.exists(from) == Some(false) => {}
            // A writer with nothing to upload (or, after a race, perhaps
            // nothing) whose object another client removed: nothing to move.
            Err(libc::ENOENT)
                if self.exists(from) != Some(true)
                    || self.live_writer(from).is_some_and(|id| self.writers[&id].unsure) => {}
            Err(libc::ESTALE) if self.nfs.get(from).is_some_and(|p| p.landed_unseen) => {
                return Err(format!(
                    "[nfs-lost-answer-taken-for-conflict] {what}: the rename's upload of the writes was refused, \
                     though the object holds the writer's own earlier upload (its answer lost)"
                ));
            }
            Err(libc::ESTALE) if self.live_writer(from).is_some_and(|id| self.writers[&id].landed_unseen) => {
                return Err(format!(
                    "[lost-answer-taken-for-conflict] {what}: the rename's upload was refused, though the object \
                     holds the writer's own earlier upload (its answer lost)"
                ));
            }
            Err(_) => return Err(format!("[rename-failed] {what}: failed with no fault")),
        }
        Ok(())
    }

    fn renamed_dir(
        &mut self,
        from: &str,
        to: &str,
        outcome: &Outcome,
        failed: bool,
        before: &Store,
        what: &str,
    ) -> Result<(), Found> {
        let (source, target) = (format!("{from}/"), format!("{to}/"));
        let in_table = |w: &&FileWriter| !w.retired && w.unlinked == Unlinked::No;
        let open_below = self.writers.values().filter(in_table).any(|w| w.name.starts_with(&source) && !w.replaced);
        // A writer whose file a rename replaced still counts for ciofs.
        let replaced_below = self.writers.values().filter(in_table).any(|w| w.name.starts_with(&source) && w.replaced);
        // Over NFS, a file with writes not yet committed may be open for
        // write (its writer goes at the idle commit that uploads it).
        let maybe_open_below = self.nfs.keys().chain(&self.broken_journals).any(|k| k.starts_with(&source))
            || self.writers.values().any(|w| {
                !w.retired && w.unlinked == Unlinked::Maybe && w.name.starts_with(&source)
                    || w.maybe_names.iter().any(|n| n.starts_with(&source))
            });
        // Files being written under the target are in it (`ls` shows them),
        // whether or not Cloud Storage has the directory.
        // Those whose writer an idle commit may have let go may count or not.
        let writing_below_target = self.writers.values().filter(in_table).any(|w| w.name.starts_with(&target))
            || self.nfs.iter().any(|(k, p)| k.starts_with(&target) && !p.maybe_gone && !p.wild);
        let maybe_writing_below_target = self.nfs.keys().any(|k| k.starts_with(&target));
        let target_full = before.keys().any(|k| k.starts_with(&target) && *k != target) || writing_below_target;
        match outcome {
            Ok(Done::Skipped(e)) => {
                if !failed && *e == libc::ENOENT && dir_exists(before, from) {
                    return Err(format!("[lookup-missed] {what}: {from} exists"));
                }
            }
            Ok(_) if open_below => {
                return Err(format!("[rename-dir-busy] {what}: Ok although a file under {from} is open for write"));
            }
            Ok(_) if target_full => {
                return Err(format!("[rename-dir-onto-full] {what}: Ok although {to} holds files"));
            }
            Ok(_) => {
                for h in &mut self.handles {
                    if let Some(rest) = h.name.strip_prefix(&source) {
                        h.name = format!("{target}{rest}");
                    }
                }
                for w in self.writers.values_mut() {
                    if let Some(rest) = w.name.strip_prefix(&source) {
                        w.name = format!("{target}{rest}");
                    }
                }
                let broken: Vec<String> =
                    self.broken_journals.iter().filter(|k| k.starts_with(&source)).cloned().collect();
                for name in broken {
                    self.broken_journals.remove(&name);
                    self.broken_journals.insert(format!("{target}{}", &name[source.len()..]));
                }
                let moved: Vec<String> = self.nfs.keys().filter(|k| k.starts_with(&source)).cloned().collect();
                for name in moved {
                    if let Some(p) = self.nfs.remove(&name) {
                        self.nfs.insert(format!("{target}{}", &name[source.len()..]), p);
                    }
                }
            }
            Err(libc::EBUSY) if open_below || maybe_open_below || replaced_below => {}
            Err(libc::ENOTEMPTY) if target_full || maybe_writing_below_target => {}
            Err(_) if failed => {
                for w in self.writers.values_mut().filter(|w| !w.retired) {
                    if w.name.starts_with(&source) || w.name.starts_with(&target) {
                        w.base = Base::Unknown;
                        w.unsure = true;
                        let other = match w.name.strip_prefix(&source) {
                            Some(rest) => format!("{target}{rest}"),
                            None => w.name.clone(),
                        };
                        w.maybe_names = vec![w.name.clone(), other];
                    }
                }
                for (name, p) in &mut self.nfs {
                    if name.starts_with(&source) || name.starts_with(&target) {
                        p.wild = true;
                    }
                }
            }
            Err(e) => {
                return Err(format!(
                    "[rename-dir-failed] {what}: errno {e} with no fault (busy: {open_below}, target full: {target_full})"
                ));
            }
        }
        Ok(())
    }

    /// Two steps run at once: `first` held by a slow or stalled call while
    /// `second` ran. `second` is checked as if alone; `first`'s effect on
    /// the store may be that of either order, so its object may hold its
    /// previous bytes, or the bytes of `first`'s upload taken before or
    /// after `second`.
    fn apply_race(
        &mut self,
        (first, first_index, first_outcome): (&Step, Option<usize>, &Outcome),
        (second, second_index, second_outcome): (&Step, Option<usize>, &Outcome),
        failed: bool,
        observed: &Store,
    ) -> Result<(), Found> {
        let what = format!("race of {first:?} -> {first_outcome:?} with {second:?} -> {second_outcome:?}");
        trace(&what, failed, observed);
        let touched = match second {
            Step::ByName { name, .. } => Some(name.clone()),
            _ => None,
        };
        // What the first may leave, with the second's bytes or without.
        let mut extra = Expect::default();
        let mut after_second = self.clone();
        let _ = after_second.update(second, second_index, second_outcome, true, &self.store.clone(), &what);
        for model in [&*self, &after_second] {
            match first {
                Step::CommitIdle => {
                    for (name, p) in &model.nfs {
                        // A writer given up (a conflict) before the second
                        // came: the second went elsewhere (a truncate of
                        // the object as it is, say).
                        if p.wild || p.conflicted && touched.as_ref() == Some(name) {
                            extra.any(name);
                        }
                        extra.allow(name, content_of(&self.store, name));
                        extra.allow(name, Some(p.content.clone()));
                    }
                }
                Step::Fsync { .. } | Step::Close { .. } => {
                    // A read-only handle's close uploads nothing.
                    let writer = first_index.and_then(|i| self.handles.get(i)).and_then(|h| match h.kind {
                        Kind::Write(id) => model.writers.get(&id),
                        Kind::Read(_) => None,
                    });
                    if let Some(w) = writer {
                        extra.allow(&w.name, content_of(&self.store, &w.name));
                        extra.allow(&w.name, Some(w.content.clone()));
                    }
                }
                Step::ByName { op: ByName::NfsWrite { .. }, .. } => {}
                _ => {}
            }
        }
        if let Step::ByName { op: ByName::NfsWrite { .. }, .. } = first {
            // An NFS write first: each is checked as a step of its own, in order.
            // What each may leave, before or after the other.
            let before = self.store.clone();
            let mut expect = self.expect(first, first_index, first_outcome, failed, observed, &what)?;
            let mut after_first = self.clone();
            let mut second_expect = self.expect(second, second_index, second_outcome, failed, observed, &what)?;
            if after_first.update(first, first_index, first_outcome, failed, &before, &what).is_ok() {
                let later = after_first.expect(second, second_index, second_outcome, failed, observed, &what)?;
                second_expect = second_expect.or(later, &before);
            }
            expect.merge(second_expect);
            expect.merge(extra);
            self.store = observed.clone();
            let mut check = self.clone();
            check.store = before.clone();
            check.check_store(&expect, observed, &what)?;
            // Either order may have happened (a read sees the write or not).
            let mut in_order = self.clone();
            let ordered = in_order
                .update(first, first_index, first_outcome, failed, &before, &what)
                .and_then(|_| in_order.update(second, second_index, second_outcome, failed, &before, &what));
            let mut reversed = self.clone();
            // Between the two, the store is what the second alone leaves.
            let second_alone = self.expect(second, second_index, second_outcome, failed, observed, &what)?;
            let mut middle = before.clone();
            for (name, allowed) in &second_alone.0 {
                match allowed.as_slice() {
                    [None] => {
                        middle.remove(name);
                    }
                    [Some(data)] => {
                        middle.insert(name.clone(), Obj { generation: -1, data: data.clone() });
                    }
                    _ => {}
                }
            }
            let reverse = reversed
                .update(second, second_index, second_outcome, failed, &before, &what)
                .and_then(|_| reversed.update(first, first_index, first_outcome, failed, &middle, &what));
            match (ordered, reverse) {
                (Ok(()), Ok(())) => {
                    // Both fit: where they disagree, what is pending is not known.
                    for (name, p) in &mut in_order.nfs {
                        if reversed.nfs.get(name).is_none_or(|r| r.content != p.content) {
                            p.wild = true;
                        }
                    }
                    for (name, p) in reversed.nfs {
                        in_order.nfs.entry(name).or_insert(Pending { wild: true, ..p });
                    }
                    *self = in_order;
                }
                (Ok(()), Err(_)) => *self = in_order,
                (Err(_), Ok(())) => *self = reversed,
                (Err(found), Err(_)) => return Err(found),
            }
            return Ok(());
        }
        if matches!(first, Step::CommitIdle)
            && let Some(p) = touched.as_ref().and_then(|name| self.nfs.get_mut(name))
            && p.conflicted
        {
            // Its writer may be given up before the second comes (a read
            // then reads the object).
            p.maybe_gone = true;
        }
        let first_handle = first_index.and_then(|i| self.handles.get(i)).map(|h| h.fh);
        // The first's upload may come before or after the second: its
        // writer's state (something unflushed or not, a failure reported,
        // its base) is not known from here on.
        if let Some(w) = first_index.filter(|_| !matches!(first, Step::CommitIdle)).and_then(|i| {
            let id = self.handles.get(i).filter(|h| h.writes())?.writer()?;
            self.writers.get_mut(&id)
        }) {
            w.unsure = true;
            w.base = Base::Unknown;
        }
        // What the second needed of the old version (a handle's fetch of
        // its base) may be gone, so its failure is no finding; what it
        // stored still is.
        self.apply(second, second_index, second_outcome, true, observed, extra)?;
        // A close gives its handle up.
        if matches!(first, Step::Close { .. })
            && let Some(i) = self.handles.iter().position(|h| Some(h.fh) == first_handle)
        {
            self.closed(i);
        }
        if matches!(first, Step::CommitIdle) {
            // An object the commit uploaded and the second did not touch is
            // settled; the rest stays pending, to be checked at the next
            // commit, and whether the commit dropped its writer is not known.
            if let Some(p) = touched.as_ref().and_then(|name| self.nfs.get_mut(name))
                && p.conflicted
            {
                // Refused and given up before the second, which then went
                // to a new writer; or the second went into it first.
                p.wild = true;
            }
            let store = self.store.clone();
            let mut given_up = Vec::new();
            self.nfs.retain(|name, p| {
                let untouched = !p.wild && touched.as_ref() != Some(name);
                let uploaded = store.get(name).map(|o| &o.data) == Some(&p.content);
                // Refused because another client changed the object: given
                // up, its bytes kept in `conflicts/`.
                if untouched && !uploaded && !failed && p.acked && p.conflicted {
                    // (Required in `conflicts/` only if it was surely there.)
                    if !p.maybe_gone {
                        given_up.push((name.clone(), p.content.clone()));
                    }
                    return false;
                }
                !(uploaded && untouched)
            });
            self.kept_conflicts.extend(given_up);
            for p in self.nfs.values_mut() {
                p.maybe_gone = true;
            }
            self.check_conflicts_kept(&what)?;
        }
        if matches!(first, Step::Close { .. })
            && let Ok(Done::Opened { fh, .. }) = second_outcome
        {
            for h in self.handles.iter_mut().filter(|h| h.fh == *fh && !h.writes()) {
                h.kind = Kind::Read(View::Unknown);
            }
        }
        if let Ok(Done::Opened { fh, .. }) = second_outcome {
            // Opened before or after the first's upload (sharing its writer,
            // or, if it went meanwhile, with one of its own): its base is
            // either, and so are its bytes when a close of the file's last
            // handle raced it (the old writer's, or the object's).
            let ids: Vec<u64> =
                self.handles.iter().filter(|h| h.fh == *fh && h.writes()).filter_map(|h| h.writer()).collect();
            for id in ids {
                if let Some(w) = self.writers.get_mut(&id) {
                    w.base = Base::Unknown;
                    w.unsure = true;
                    w.wild |= matches!(first, Step::Close { .. });
                }
            }
        }
        Ok(())
    }
}

// ------------------------------------------------------------ the runner

/// Runs one sequence on a fresh runtime with paused time (stalls, delays
/// and ciofs's own waits pass at once).
fn run_sequence(frontend: Frontend, seed: &[(usize, u8)], ops: &[Op]) -> Result<(), Found> {
    // A panic in ciofs is a finding like any other, reported with its
    // message rather than printed.
    quiet_panics_on_this_thread();
    QUIET.with(|quiet| quiet.set(true));
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_sequence_unguarded(frontend, seed, ops)));
    QUIET.with(|quiet| quiet.set(false));
    run.unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(format!("[panic] ciofs panicked: {message}"))
    })
}

thread_local! {
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Installs (once) a panic hook that stays silent on a thread running a
/// sequence, and prints as usual elsewhere.
fn quiet_panics_on_this_thread() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|quiet| quiet.get()) {
                default(info);
            }
        }));
    });
}

fn run_sequence_unguarded(frontend: Frontend, seed: &[(usize, u8)], ops: &[Op]) -> Result<(), Found> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().expect("a runtime");
    runtime.block_on(replay(frontend, seed, ops))
}

/// Runs one sequence on the current runtime (which must have paused time).
async fn replay(frontend: Frontend, seed: &[(usize, u8)], ops: &[Op]) -> Result<(), Found> {
    let mut harness = Harness::new(frontend, seed);
    let result = harness.run(ops).await;
    result.map_err(|found| format!("{found}\n  ops run: {}", harness.log.len()))
}

/// The kind of a divergence: its bracketed first word.
fn kind_of(found: &str) -> String {
    found.split(']').next().unwrap_or(found).trim_start_matches('[').to_string()
}

/// A failing sequence shrunk as far as proptest's shrinking goes.
struct Failure {
    seed: u64,
    case: (Frontend, Vec<(usize, u8)>, Vec<Op>),
    found: Found,
}

/// Runs `count` sequences from `seed` (each its own generator seed); the
/// failures, each shrunk.
fn run_many(seed: u64, count: u64, max_shrink: u32) -> (u64, Vec<Failure>) {
    let strategy = sequence();
    let mut failures = Vec::new();
    for n in 0..count {
        let case_seed = seed.wrapping_add(n);
        let mut bytes = [0u8; 32];
        bytes[..8].copy_from_slice(&case_seed.to_le_bytes());
        let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
        let mut runner = TestRunner::new_with_rng(Config { failure_persistence: None, ..Config::default() }, rng);
        let mut tree = strategy.new_tree(&mut runner).expect("a sequence");
        let case = tree.current();
        let Err(found) = run_sequence(case.0, &case.1, &case.2) else { continue };
        let kind = kind_of(&found);
        let mut best = Failure { seed: case_seed, case, found };
        // The first few of a kind are shrunk; the rest are only counted.
        let shrunk = failures.iter().filter(|f: &&Failure| kind_of(&f.found) == kind).count();
        let mut left = if shrunk < 3 { max_shrink } else { 0 };
        if left > 0 && tree.simplify() {
            while left > 0 {
                left -= 1;
                let candidate = tree.current();
                match run_sequence(candidate.0, &candidate.1, &candidate.2) {
                    Err(found) if kind_of(&found) == kind_of(&best.found) => {
                        best = Failure { seed: case_seed, case: candidate, found };
                        if !tree.simplify() {
                            break;
                        }
                    }
                    _ => {
                        if !tree.complicate() {
                            break;
                        }
                    }
                }
            }
        }
        failures.push(best);
    }
    (count, failures)
}

/// Every failure (kind, seed, what diverged, the ops), one a line, for
/// sorting out what a stress run found.
fn dump(failures: &[Failure], path: &str) {
    let lines: Vec<String> = failures
        .iter()
        .map(|f| {
            let found = f.found.replace('\n', " ");
            format!("{}\tseed {}\t{found}\t{:?} {:?} {:?}", kind_of(&f.found), f.seed, f.case.0, f.case.1, f.case.2)
        })
        .collect();
    if let Err(e) = std::fs::write(path, lines.join("\n") + "\n") {
        eprintln!("cannot write {path}: {e}");
    }
}

fn report(failures: &[Failure]) -> String {
    let mut kinds: BTreeMap<String, Vec<&Failure>> = BTreeMap::new();
    for f in failures {
        kinds.entry(kind_of(&f.found)).or_default().push(f);
    }
    let mut text = String::new();
    for (kind, all) in &kinds {
        let shortest = all.iter().min_by_key(|f| f.case.2.len()).expect("one at least");
        text.push_str(&format!(
            "\n== {kind}: {} sequence(s); shortest (seed {}):\n   {}\n   frontend: {:?}, objects at start: {:?}\n   ops: {:#?}\n",
            all.len(),
            shortest.seed,
            shortest.found,
            shortest.case.0,
            shortest.case.1,
            shortest.case.2
        ));
    }
    text
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// CI: a fixed seed set, small enough for a few seconds.
#[test]
fn model_fixed_seeds() {
    let (run, failures) = run_many(20_260_101, env_u64("CIOFS_MODEL_CI_CASES", 500), 500);
    assert!(failures.is_empty(), "{} of {run} sequences failed:{}", failures.len(), report(&failures));
}

/// `scripts/stress`: `CIOFS_MODEL_CASES` sequences (10,000) from
/// `CIOFS_MODEL_SEED`, the first three failures of each kind shrunk by up
/// to `CIOFS_MODEL_SHRINK` steps (2,000).
#[test]
#[ignore = "long: run by scripts/stress"]
fn stress() {
    let seed = env_u64("CIOFS_MODEL_SEED", 1);
    let count = env_u64("CIOFS_MODEL_CASES", 10_000);
    let started = std::time::Instant::now();
    let (run, failures) = run_many(seed, count, env_u64("CIOFS_MODEL_SHRINK", 2000) as u32);
    println!("{}", report(&failures));
    if let Ok(path) = std::env::var("CIOFS_MODEL_DUMP") {
        dump(&failures, &path);
    }
    println!(
        "model stress: seed {seed}: {run} sequences run, {} failed ({:.0} s)",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{} of {run} sequences failed", failures.len());
}

/// The model accepts what ciofs does right: plain sequences with faults
/// that are reported, changes behind the mount's back and restarts pass
/// (so a failing sequence is a finding, not the model's noise).
#[tokio::test(start_paused = true)]
async fn plain_sequences_pass() {
    let fuse = vec![
        Op::Open { file: 0, truncate: false },
        Op::Write { handle: 0, offset: 0, len: 4 },
        Op::Fsync { handle: 0 },
        Op::Write { handle: 0, offset: 6, len: 2 },
        Op::Arm { target: Target::Upload, nth: 1, fault: Injected::ApplyThenFail },
        Op::Close { handle: 0 },
        Op::Open { file: 1, truncate: true },
        Op::Write { handle: 0, offset: 0, len: 3 },
        Op::PutBehind { file: 1, len: 2 },
        Op::Close { handle: 0 },
        Op::Mkdir { dir: 0 },
        Op::Rename { from: 0, to: 2 },
        Op::RenameDir { from: 0, to: 1 },
        Op::Open { file: 3, truncate: false },
        Op::Read { handle: 0 },
        Op::Write { handle: 0, offset: 1, len: 1 },
        Op::Close { handle: 0 },
        Op::Unlink { file: 1 },
        Op::Rmdir { dir: 1 },
    ];
    replay(Frontend::Fuse, &[(1, 3)], &fuse).await.unwrap();
    let nfs = vec![
        Op::NfsCreate { file: 0 },
        Op::NfsWrite { file: 0, offset: 0, len: 3 },
        Op::NfsRead { file: 0 },
        Op::Arm { target: Target::Upload, nth: 1, fault: Injected::Unavailable },
        Op::CommitIdle,
        Op::NfsWrite { file: 0, offset: 5, len: 1 },
        Op::Crash,
        Op::NfsWrite { file: 1, offset: 2, len: 2 },
        Op::Restart,
        Op::Truncate { file: 1, size: 1 },
        Op::CommitIdle,
        Op::Rename { from: 1, to: 2 },
        Op::NfsWrite { file: 2, offset: 0, len: 1 },
        Op::CrashDuringUpload { applied: true },
        Op::Unlink { file: 0 },
    ];
    replay(Frontend::Nfs, &[(1, 3), (2, 0)], &nfs).await.unwrap();
}

// ------------------------------------------------ pinned regressions
//
// Sequences the model found, shrunk. Each says what diverged; the files
// are FILES[i] (x, y, d/z, e/z), the directories DIRS[i] (d, e).

async fn pinned(frontend: Frontend, seed: &[(usize, u8)], ops: Vec<Op>) {
    if let Err(found) = replay(frontend, seed, &ops).await {
        panic!("{found}\n  sequence: {frontend:?}, objects at start {seed:?}, {ops:#?}");
    }
}

fn race(first: Op, second: Op, hold: Hold) -> Op {
    Op::Race { first: Box::new(first), second: Box::new(second), hold }
}

/// An NFS WRITE that comes while an idle commit uploads the file is
/// answered Ok, then lost: the commit drops the writer it just uploaded,
/// and the WRITE (which waited for the writer's lock) lands in the dropped
/// writer; no later commit uploads it.
#[tokio::test(start_paused = true)]
async fn regression_nfs_write_during_an_idle_upload_is_acknowledged_then_lost() {
    let ops = vec![
        Op::NfsWrite { file: 2, offset: 0, len: 1 },
        race(Op::CommitIdle, Op::NfsWrite { file: 2, offset: 0, len: 1 }, Hold::StallUpload),
    ];
    pinned(Frontend::Nfs, &[(2, 0)], ops).await;
}

/// The same with a SETATTR size: the truncate is acknowledged and lost.
#[tokio::test(start_paused = true)]
async fn regression_nfs_truncate_during_an_idle_upload_is_acknowledged_then_lost() {
    let ops = vec![
        Op::NfsWrite { file: 1, offset: 2, len: 3 },
        race(Op::CommitIdle, Op::Truncate { file: 1, size: 0 }, Hold::StallUpload),
        Op::NfsRead { file: 1 },
    ];
    pinned(Frontend::Nfs, &[(1, 0)], ops).await;
}

/// Two first NFS WRITEs of one file at once: each makes a writer on the
/// same journal file (opened with truncate), and one's bytes are wiped.
#[tokio::test(start_paused = true)]
async fn regression_two_concurrent_first_nfs_writes_keep_both() {
    let ops = vec![race(
        Op::NfsWrite { file: 0, offset: 0, len: 2 },
        Op::NfsWrite { file: 0, offset: 0, len: 2 },
        Hold::DelayGet { nth: 2 },
    )];
    pinned(Frontend::Nfs, &[(0, 0)], ops).await;
}

/// An NFS WRITE racing with a REMOVE of its file: the WRITE found the file,
/// the REMOVE deleted it and returned Ok, then the WRITE made a writer
/// for a new object and its idle commit put the file back.
#[tokio::test(start_paused = true)]
async fn regression_an_nfs_write_racing_a_remove_does_not_bring_the_file_back() {
    let ops =
        vec![race(Op::NfsWrite { file: 1, offset: 0, len: 1 }, Op::Unlink { file: 1 }, Hold::DelayGet { nth: 2 })];
    pinned(Frontend::Nfs, &[(1, 0)], ops).await;
}

/// After a directory rename, a mkdir and a restart, the inode journal's
/// replay panics ("by_path and by_ino agree", src/namespace/inodes.rs).
#[tokio::test(start_paused = true)]
async fn regression_inode_journal_replay_after_a_directory_rename_does_not_panic() {
    let ops = vec![Op::RenameDir { from: 0, to: 1 }, Op::Mkdir { dir: 0 }, Op::Restart];
    pinned(Frontend::Nfs, &[(2, 0)], ops).await;
}

/// After a rename and a restart, the name the file had reads the renamed
/// file's bytes: the journal's replay maps it to the moved inode.
#[tokio::test(start_paused = true)]
async fn regression_after_a_rename_and_a_restart_the_old_name_reads_its_own_object() {
    let ops = vec![Op::Rename { from: 2, to: 0 }, Op::Restart, Op::PutBehind { file: 2, len: 1 }];
    pinned(Frontend::Nfs, &[(2, 0)], ops).await;
}

/// A created file whose fsync failed: the failure "ends that change", and
/// the close then returns Ok with no object made.
#[tokio::test(start_paused = true)]
async fn regression_a_close_after_a_failed_fsync_is_not_ok_without_storing() {
    let ops = vec![
        Op::Arm { target: Target::Upload, nth: 1, fault: Injected::Unavailable },
        Op::Open { file: 0, truncate: false },
        Op::Fsync { handle: 0 },
    ];
    pinned(Frontend::Fuse, &[], ops).await;
}

/// A created file with nothing written goes up at release, after close()
/// returned Ok; when that upload fails, the file never exists and no
/// close() said so.
#[tokio::test(start_paused = true)]
async fn regression_a_created_file_whose_upload_fails_does_not_close_ok() {
    let ops = vec![
        Op::Arm { target: Target::Upload, nth: 1, fault: Injected::Unavailable },
        Op::Open { file: 0, truncate: false },
        Op::Close { handle: 0 },
    ];
    pinned(Frontend::Fuse, &[], ops).await;
}

/// ftruncate through one of two write handles of a file: setattr has no
/// handle, so the size change lands in the other (latest) handle's copy,
/// and this handle's close stores its bytes without it.
#[tokio::test(start_paused = true)]
async fn regression_ftruncate_changes_its_own_handle() {
    let ops = vec![
        Op::Open { file: 1, truncate: false },
        Op::Open { file: 1, truncate: false },
        Op::TruncateHandle { handle: 0, size: 1 },
    ];
    pinned(Frontend::Fuse, &[], ops).await;
}

/// A file created and opened again before its first close: the rename
/// commits the latest writer (not dirty), finds no object and answers
/// ENOENT for a file `ls` shows.
#[tokio::test(start_paused = true)]
async fn regression_a_created_file_opened_again_can_be_renamed() {
    let ops = vec![
        Op::Open { file: 0, truncate: false },
        Op::Open { file: 0, truncate: false },
        Op::Rename { from: 0, to: 1 },
    ];
    pinned(Frontend::Fuse, &[], ops).await;
}

/// A read-only open of a file being written shares its writer; its close
/// uploads the writer's bytes and unregisters the writer, after which an
/// ftruncate through the writer's own handle changes the object in Cloud
/// Storage at once.
#[tokio::test(start_paused = true)]
async fn regression_a_reader_s_close_leaves_the_writer_s_ftruncate_staged() {
    let ops = vec![
        Op::Open { file: 1, truncate: false },
        Op::Write { handle: 0, offset: 0, len: 1 },
        Op::OpenRead { file: 1 },
        Op::Close { handle: 1 },
        Op::TruncateHandle { handle: 0, size: 0 },
    ];
    pinned(Frontend::Fuse, &[], ops).await;
}

/// A read-only open of a file being written shares its writer; when the
/// reader's close fails to upload, the writer's data is marked clean and
/// the writer's own close returns Ok with nothing stored.
#[tokio::test(start_paused = true)]
async fn regression_a_reader_s_failed_close_does_not_drop_the_writer_s_data() {
    let ops = vec![
        Op::Open { file: 1, truncate: false },
        Op::Write { handle: 0, offset: 0, len: 1 },
        Op::OpenRead { file: 1 },
        Op::Arm { target: Target::Upload, nth: 1, fault: Injected::Unavailable },
        Op::Close { handle: 1 },
        Op::Close { handle: 0 },
    ];
    pinned(Frontend::Fuse, &[], ops).await;
}

/// After a rename and a restart, the old name still maps to the moved
/// inode: while the moved file has an NFS writer, a lookup of the old name
/// finds it, and a WRITE to the old name lands in the moved file.
#[tokio::test(start_paused = true)]
async fn regression_after_a_rename_and_a_restart_a_write_to_the_old_name_is_not_the_new_file_s() {
    let ops = vec![
        Op::Mkdir { dir: 0 },
        Op::Rename { from: 1, to: 2 },
        Op::Restart,
        Op::NfsWrite { file: 2, offset: 0, len: 1 },
        Op::NfsWrite { file: 1, offset: 0, len: 1 },
    ];
    pinned(Frontend::Nfs, &[(1, 0)], ops).await;
}

/// A WRITE whose journal record cannot be written (a local disk fault)
/// answers an error, but its bytes stay staged and the idle commit
/// uploads them: a failed write still reaches Cloud Storage. (The first
/// WRITE fails to fetch the object, which leaves the writer's staging file
/// without a record, so that the record's path can be broken.)
#[tokio::test(start_paused = true)]
async fn regression_a_failed_nfs_write_is_not_uploaded() {
    let ops = vec![
        Op::Arm { target: Target::ReadObject, nth: 1, fault: Injected::Denied },
        Op::NfsWrite { file: 0, offset: 0, len: 1 },
        Op::BreakJournal { file: 0 },
        Op::NfsWrite { file: 0, offset: 0, len: 1 },
    ];
    pinned(Frontend::Nfs, &[(0, 2)], ops).await;
}

/// Two handles of a new file; the first one's fsync makes the object, and
/// `rm` asks only the second (the latest writer, never uploaded): it
/// answers Ok and deletes nothing.
#[tokio::test(start_paused = true)]
async fn regression_rm_of_a_file_another_handle_uploaded_deletes_it() {
    let ops = vec![
        Op::Open { file: 0, truncate: false },
        Op::Open { file: 0, truncate: false },
        Op::Fsync { handle: 0 },
        Op::Unlink { file: 0 },
    ];
    pinned(Frontend::Fuse, &[], ops).await;
}

/// A new file opened twice (the second open starts its own writer), then
/// removed: `rm` marks only the latest writer removed, and the first
/// handle's close brings the file back.
#[tokio::test(start_paused = true)]
async fn regression_a_removed_file_is_not_brought_back_by_its_first_handle() {
    let ops =
        vec![Op::Open { file: 1, truncate: false }, Op::Open { file: 1, truncate: false }, Op::Unlink { file: 1 }];
    pinned(Frontend::Fuse, &[], ops).await;
}

/// A file being created when another client makes the object: `rm`
/// answers Ok (its writer never uploaded) and the other client's object stays.
#[tokio::test(start_paused = true)]
async fn regression_rm_of_a_new_file_deletes_what_another_client_put_there() {
    let ops = vec![Op::Open { file: 0, truncate: false }, Op::PutBehind { file: 0, len: 0 }, Op::Unlink { file: 0 }];
    pinned(Frontend::Fuse, &[], ops).await;
}

/// Acknowledged NFS writes whose replay failed at a start (the service
/// unreachable then) stay in the journal until the next start: the idle
/// commits of the running server never upload them.
#[tokio::test(start_paused = true)]
async fn regression_journaled_writes_whose_replay_failed_are_uploaded_by_the_running_server() {
    let ops = vec![
        Op::NfsWrite { file: 3, offset: 0, len: 1 },
        Op::Arm { target: Target::Upload, nth: 1, fault: Injected::Unavailable },
        Op::Crash,
        Op::NfsCreate { file: 0 },
    ];
    pinned(Frontend::Nfs, &[(3, 0)], ops).await;
}

/// Killed while an idle upload was under way that Cloud Storage made (its
/// answer never seen): the next start takes the journal record back with
/// the generation it names, which the upload replaced. A WRITE after the
/// start goes into that writer, whose upload then asks for the old
/// generation: refused (412), the bytes differ from what the object holds
/// now, so the acknowledged WRITE is taken for a conflict and moved to
/// `conflicts/`, though nobody else changed the object.
#[tokio::test(start_paused = true)]
async fn regression_a_write_after_a_crash_during_an_upload_that_landed_is_uploaded() {
    let ops = vec![
        Op::NfsWrite { file: 0, offset: 0, len: 1 },
        Op::CrashDuringUpload { applied: true },
        Op::NfsWrite { file: 0, offset: 0, len: 1 },
    ];
    pinned(Frontend::Nfs, &[(0, 0)], ops).await;
}

/// `mv x y` while y is open for write: the rename drops y's inode from the
/// inode table, but y's writer stays in the writers' table under that
/// number. Once y is removed and made again (by another client), the new
/// y is given the freed number, and an open for write of it joins the
/// replaced file's writer: it reads (and would write) the old y, whose
/// generation is gone (ENOENT), not the new object.
#[tokio::test(start_paused = true)]
async fn regression_a_new_file_does_not_join_the_writer_of_a_file_a_rename_replaced() {
    let ops = vec![
        Op::Open { file: 1, truncate: false },
        Op::Rename { from: 0, to: 1 },
        Op::Unlink { file: 1 },
        Op::PutBehind { file: 1, len: 2 },
        Op::Open { file: 1, truncate: false },
        Op::Read { handle: 1 },
    ];
    pinned(Frontend::Fuse, &[(0, 3), (1, 1)], ops).await;
}

/// Two NFS writers of one file refused as conflicts (another client
/// changed the object each time) within one second: `conflicts/` names the
/// kept file by object name and second, and the second rename replaces the
/// first one's bytes, which are lost. (Fails unless the two land on either
/// side of a second's boundary.)
#[tokio::test(start_paused = true)]
async fn regression_two_conflicts_of_a_file_are_both_kept() {
    let ops = vec![
        Op::NfsWrite { file: 0, offset: 0, len: 1 },
        Op::PutBehind { file: 0, len: 2 },
        Op::CommitIdle,
        Op::NfsWrite { file: 0, offset: 0, len: 1 },
        Op::PutBehind { file: 0, len: 2 },
        Op::CommitIdle,
    ];
    pinned(Frontend::Nfs, &[(0, 0)], ops).await;
}

/// An rm that fails (Cloud Storage refuses the delete) has already marked
/// the file's writer removed: the object is still there, unchanged, and
/// the close of the handle that wrote to it answers Ok with nothing
/// uploaded (a close's Ok promises that Cloud Storage holds its bytes).
#[tokio::test(start_paused = true)]
async fn regression_a_failed_rm_leaves_the_file_s_writes_to_its_close() {
    let ops = vec![
        Op::Open { file: 0, truncate: false },
        Op::Write { handle: 0, offset: 0, len: 2 },
        Op::Arm { target: Target::DeleteObject, nth: 1, fault: Injected::Denied },
        Op::Unlink { file: 0 },
        Op::Close { handle: 0 },
    ];
    pinned(Frontend::Fuse, &[(0, 3)], ops).await;
}

/// The same over NFS: an rm that Cloud Storage refuses has already marked
/// the file's writer removed; the object stays as it was, and the
/// acknowledged WRITE is never uploaded.
#[tokio::test(start_paused = true)]
async fn regression_a_failed_rm_keeps_the_acknowledged_nfs_writes() {
    let ops = vec![
        Op::NfsWrite { file: 0, offset: 0, len: 2 },
        Op::Arm { target: Target::DeleteObject, nth: 1, fault: Injected::Denied },
        Op::Unlink { file: 0 },
    ];
    pinned(Frontend::Nfs, &[(0, 3)], ops).await;
}

/// An fsync whose upload landed but whose answer was lost (EIO; the
/// object holds the bytes), one more write, then close: the upload asks
/// for the generation before the lost one, is refused (412), and since the
/// object no longer holds exactly the staged bytes, close answers ESTALE
/// as if another writer had changed the file; the bytes are never
/// uploaded (the release does not try after a reported failure).
#[tokio::test(start_paused = true)]
async fn regression_an_upload_whose_answer_was_lost_is_not_taken_for_a_conflict_by_the_next() {
    let ops = vec![
        Op::Open { file: 0, truncate: false },
        Op::Write { handle: 0, offset: 0, len: 1 },
        Op::Arm { target: Target::Upload, nth: 1, fault: Injected::ApplyThenFail },
        Op::Fsync { handle: 0 },
        Op::Write { handle: 0, offset: 1, len: 1 },
        Op::Close { handle: 0 },
    ];
    pinned(Frontend::Fuse, &[(0, 1)], ops).await;
}

/// `rm y` while nothing has y open leaves its inode detached (kept for
/// handles that may come back with it); a new y gets another inode. `mv y x`
/// then moves every inode whose node is y, the removed file's too: both
/// claim x, and the one the inode table's map gives last wins, the other is
/// dropped. When the removed file's wins, x's open handle answers ESTALE
/// (here to an ftruncate) and x is the removed file's inode. The map's
/// order is random: each of the 8 runs fails half the time.
#[tokio::test(start_paused = true)]
async fn regression_a_rename_moves_the_file_s_inode_not_a_removed_one_s() {
    for _ in 0..8 {
        let ops = vec![
            Op::Open { file: 1, truncate: false },
            Op::Close { handle: 0 },
            Op::Unlink { file: 1 },
            Op::Open { file: 1, truncate: false },
            Op::Rename { from: 1, to: 0 },
            Op::TruncateHandle { handle: 0, size: 1 },
        ];
        pinned(Frontend::Fuse, &[], ops).await;
    }
}

/// `mv x y` while y is open for write, then `rm y`: y's writer, whose file
/// the rename replaced, is not marked removed (only the writers' table
/// still has it, under an inode number the rename dropped), so the close
/// of its handle uploads it as a new object: y, removed, comes back.
#[tokio::test(start_paused = true)]
async fn regression_a_file_a_rename_replaced_is_not_uploaded_by_its_close() {
    let ops = vec![
        Op::PutBehind { file: 0, len: 0 },
        Op::Open { file: 1, truncate: false },
        Op::Rename { from: 0, to: 1 },
        Op::Unlink { file: 1 },
    ];
    pinned(Frontend::Fuse, &[], ops).await;
}

/// The same over NFS: y's unattended writer, whose file `mv d/z y`
/// replaced, keeps its journal record; after a crash the record is taken
/// back as the writer of y, now the moved file: a WRITE to y goes into the
/// replaced file's bytes, whose upload is then refused as a conflict, and
/// the acknowledged WRITE never reaches Cloud Storage.
#[tokio::test(start_paused = true)]
async fn regression_a_file_a_rename_replaced_is_not_taken_back_after_a_crash() {
    let ops = vec![
        Op::NfsWrite { file: 1, offset: 0, len: 1 },
        Op::Rename { from: 2, to: 1 },
        Op::Crash,
        Op::NfsWrite { file: 1, offset: 0, len: 1 },
    ];
    pinned(Frontend::Nfs, &[(2, 0), (1, 0)], ops).await;
}

/// Found by scripts/stress (seed 2005711): d/z holds an acknowledged NFS
/// WRITE whose object another client removed, so Cloud Storage has no d
/// any more; `mv e d` took d for absent and moved e/z over d/z, whose
/// acknowledged bytes were dropped with its writer (not even kept in
/// conflicts/). d holds a file being written: the rename is ENOTEMPTY.
#[tokio::test(start_paused = true)]
async fn regression_a_directory_rename_does_not_replace_files_being_written_under_its_target() {
    let ops = vec![
        Op::NfsCreate { file: 0 },
        Op::Mkdir { dir: 1 },
        Op::NfsWrite { file: 2, offset: 0, len: 1 },
        Op::Rename { from: 0, to: 3 },
        Op::DeleteBehind { file: 2 },
        Op::RenameDir { from: 1, to: 0 },
        Op::BreakJournal { file: 0 },
    ];
    pinned(Frontend::Nfs, &[(2, 0)], ops).await;
}
