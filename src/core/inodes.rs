//! The inode table: the authority that maps inode numbers to nodes.
//!
//! A node's number is a hash of its path (FNV-1a, stable across builds and
//! restarts), probed forward on a collision. With a journal file the table
//! survives a restart, so NFS handles stay valid (NFS never forgets an
//! inode); without one (FUSE), entries are dropped when the kernel forgets
//! them all.
//!
//! Both kinds are bounded. FUSE: the entries the kernel holds a reference
//! to stay (the kernel bounds those); the others are swept once the table
//! doubles since the last sweep, so a sweep costs O(1) per entry made. NFS:
//! past `Limits::max_entries` the least recently used quarter is dropped
//! (a client holding one of their handles gets STALE and looks the name up
//! again), and the journal, which only grows while serving, is rewritten
//! compactly once it holds twice as many records as the table has entries.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ciofs_backends::sync::lock;
use ciofs_frontends::{Ino, ROOT_INO};
use serde::{Deserialize, Serialize};

use super::node::Node;
use crate::core::private_files::{self, Open};

struct Entry {
    node: Node,
    generation: u64,
    /// How many times the kernel was told of this inode and not told to
    /// forget it.
    lookups: u64,
    /// When it was last used (the table's clock), for dropping the least
    /// recently used entries of a journaled table.
    used: u64,
    /// When a lookup or a listing last found it, and when the kernel's
    /// lookups of it were last counted (the table's clock): found since
    /// counted, an answer naming it is on its way to the kernel.
    found: u64,
    counted: u64,
}

/// How large a table may grow.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Without a journal: entries the kernel holds no reference to are swept
    /// once the table has this many (and then each time it doubled).
    pub sweep_at: usize,
    /// With a journal: the most entries kept.
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { sweep_at: 1 << 20, max_entries: 4 << 20 }
    }
}

/// The journal of a persistent table: appended to as inodes are made or
/// moved, rewritten compactly when it grew to twice the table.
struct Journal {
    path: PathBuf,
    out: BufWriter<File>,
    /// Records in the file.
    records: usize,
}

#[derive(Default)]
struct Table {
    by_ino: HashMap<Ino, Entry>,
    by_path: HashMap<String, Ino>,
    journal: Option<Journal>,
    limits: Limits,
    /// The table's clock: one tick per use of an entry.
    clock: u64,
    /// Without a journal: the size at which the next sweep runs.
    next_sweep: usize,
}

pub struct InodeTable {
    table: Mutex<Table>,
}

/// One line of the journal.
#[derive(Serialize, Deserialize)]
struct Record {
    ino: Ino,
    generation: u64,
    node: Node,
}

impl InodeTable {
    /// A table that forgets (FUSE).
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> Self {
        let mut table = Table { limits, next_sweep: limits.sweep_at, ..Table::default() };
        table.insert(ROOT_INO, Node::Root, 0);
        Self { table: Mutex::new(table) }
    }

    /// A table kept in `journal` (appended to as inodes are made, reloaded
    /// here).
    pub fn persistent(journal: &Path) -> std::io::Result<Self> {
        Self::persistent_with_limits(journal, Limits::default())
    }

    pub fn persistent_with_limits(journal: &Path, limits: Limits) -> std::io::Result<Self> {
        let mut table = Table { limits, ..Table::default() };
        table.insert(ROOT_INO, Node::Root, 0);
        if let Some(dir) = journal.parent() {
            private_files::private_dir(dir)?;
        }
        let mut records = Vec::new();
        if let Ok(file) = private_files::open(journal, Open::Read) {
            for line in BufReader::new(file).lines() {
                let line = line?;
                match serde_json::from_str::<Record>(&line) {
                    Ok(record) => records.push(record),
                    Err(e) => {
                        tracing::warn!(journal = %journal.display(), error = %e, "skipping a damaged inode record")
                    }
                }
            }
        }
        for record in records.into_iter().filter(|r| r.ino != ROOT_INO) {
            table.insert(record.ino, record.node, record.generation);
        }
        table.bound();
        table.compact_journal(journal)?;
        Ok(Self { table: Mutex::new(table) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        lock(&self.table)
    }

    /// The inode number of `node`, made if needed, and its generation.
    pub fn remember(&self, node: &Node) -> (Ino, u64) {
        let mut table = self.lock();
        let path = node.key();
        if let Some(&ino) = table.by_path.get(&path)
            && let Some(generation) = table.touch(ino)
        {
            let clock = table.clock;
            if let Some(entry) = table.by_ino.get_mut(&ino) {
                entry.found = clock;
            }
            return (ino, generation);
        }
        if table.journal.is_none() && table.by_ino.len() >= table.next_sweep {
            table.sweep();
        }
        let ino = table.free_ino(&path);
        table.insert(ino, node.clone(), 0);
        let clock = table.clock;
        if let Some(entry) = table.by_ino.get_mut(&ino) {
            entry.found = clock;
        }
        table.journal_new(ino);
        if table.journal.is_some() && table.by_ino.len() > table.limits.max_entries {
            table.bound();
        }
        (ino, 0)
    }

    /// How many inodes the table holds (for tests of what listings make).
    #[cfg(test)]
    pub fn count(&self) -> usize {
        self.lock().by_ino.len()
    }

    /// The kernel was told of `ino` once more (a lookup, or an entry of a
    /// readdirplus reply).
    pub fn count_lookup(&self, ino: Ino) {
        let mut table = self.lock();
        table.clock += 1;
        let clock = table.clock;
        if let Some(entry) = table.by_ino.get_mut(&ino) {
            entry.lookups += 1;
            entry.counted = clock;
        }
    }

    /// Gives each inode whose node `moved` maps a new node (after a rename),
    /// keeping its number. An inode that stood at a new node's place is
    /// detached, as a removed file's is (it answers for its open handles
    /// only): what it named was replaced. Those inodes are returned.
    pub fn rekey(&self, moved: impl Fn(&Node) -> Option<Node>) -> Vec<Ino> {
        let mut table = self.lock();
        // Only the inodes that still name their path move: a removed file's
        // inode (detached, kept for its open handles) stays what it was.
        let by_path = &table.by_path;
        let changes: Vec<(Ino, Node)> = table
            .by_ino
            .iter()
            .filter(|(ino, entry)| by_path.get(&entry.node.key()) == Some(*ino))
            .filter_map(|(ino, entry)| moved(&entry.node).map(|node| (*ino, node)))
            .collect();
        for (ino, _) in &changes {
            if let Some(entry) = table.by_ino.get(ino) {
                let old = entry.node.key();
                table.by_path.remove(&old);
            }
        }
        let mut replaced = Vec::new();
        for (ino, node) in changes {
            if let Some(old) = table.by_path.insert(node.key(), ino)
                && old != ino
            {
                replaced.push(old);
            }
            if let Some(entry) = table.by_ino.get_mut(&ino) {
                entry.node = node;
            }
            table.journal_new(ino);
        }
        replaced
    }

    /// Whether `ino` still names its node's path (not removed or replaced).
    pub fn is_attached(&self, ino: Ino) -> bool {
        let table = self.lock();
        table.by_ino.get(&ino).is_some_and(|entry| table.by_path.get(&entry.node.key()) == Some(&ino))
    }

    /// Unties `ino` from its path (a file removed while open): it keeps
    /// answering for its handles, and the path gets a new inode if made again.
    pub fn detach(&self, ino: Ino) {
        let mut table = self.lock();
        let Some(key) = table.by_ino.get(&ino).map(|e| e.node.key()) else { return };
        if table.by_path.get(&key) == Some(&ino) {
            table.by_path.remove(&key);
        }
    }

    /// The inodes whose node `wanted` picks (a scan of the table: for rare
    /// calls, as `touch DIR`).
    pub fn matching(&self, wanted: impl Fn(&Node) -> bool) -> Vec<Ino> {
        let table = self.lock();
        table.by_ino.iter().filter(|(_, entry)| wanted(&entry.node)).map(|(ino, _)| *ino).collect()
    }

    /// The inode number of `node` and its generation, if it has one.
    pub fn find(&self, node: &Node) -> Option<(Ino, u64)> {
        let table = self.lock();
        let ino = *table.by_path.get(&node.key())?;
        table.by_ino.get(&ino).map(|e| (ino, e.generation))
    }

    pub fn node(&self, ino: Ino) -> Option<Node> {
        let mut table = self.lock();
        table.touch(ino)?;
        table.by_ino.get(&ino).map(|e| e.node.clone())
    }

    pub fn generation(&self, ino: Ino) -> Option<u64> {
        self.lock().by_ino.get(&ino).map(|e| e.generation)
    }

    /// The kernel forgot `count` lookups of `ino`. Without a journal, the
    /// entry goes when none is left.
    pub fn forget(&self, ino: Ino, count: u64) {
        let mut table = self.lock();
        if table.journal.is_some() || ino == ROOT_INO {
            return;
        }
        let Some(entry) = table.by_ino.get_mut(&ino) else {
            return;
        };
        entry.lookups = entry.lookups.saturating_sub(count);
        // Found since the kernel's lookups were last counted: a lookup (or a
        // listing) of the same path runs concurrently and is about to hand
        // the kernel this inode again, so the entry stays (a sweep drops it
        // if nothing counts it). Dropped, the kernel's new inode would be
        // ESTALE.
        if entry.lookups == 0 && entry.found <= entry.counted {
            table.remove(ino);
        }
    }
}

impl Default for InodeTable {
    fn default() -> Self {
        Self::new()
    }
}

impl Table {
    /// Marks `ino` used now; its generation, if it is known.
    fn touch(&mut self, ino: Ino) -> Option<u64> {
        self.clock += 1;
        let clock = self.clock;
        let entry = self.by_ino.get_mut(&ino)?;
        entry.used = clock;
        Some(entry.generation)
    }

    /// Drops the entries the kernel holds no reference to (listed but
    /// never looked up); the next sweep waits until the table doubled, so
    /// that a table of referenced entries is not swept at every new one.
    fn sweep(&mut self) {
        self.by_ino.retain(|ino, entry| entry.lookups > 0 || *ino == ROOT_INO);
        let by_ino = &self.by_ino;
        self.by_path.retain(|_, ino| by_ino.contains_key(ino));
        self.next_sweep = (2 * self.by_ino.len()).max(self.limits.sweep_at);
        tracing::debug!(kept = self.by_ino.len(), next = self.next_sweep, "swept inodes without references");
    }

    /// Keeps a journaled table within `max_entries`: past it, the least
    /// recently used quarter goes (the root stays), so that the work is
    /// done once per a quarter of the limit's new entries.
    fn bound(&mut self) {
        let limit = self.limits.max_entries;
        if self.by_ino.len() <= limit {
            return;
        }
        let keep = limit - limit / 4;
        let mut uses: Vec<u64> = self.by_ino.values().map(|e| e.used).collect();
        let cut = uses.len() - keep;
        let (_, oldest_kept, _) = uses.select_nth_unstable(cut);
        let oldest_kept = *oldest_kept;
        self.by_ino.retain(|ino, entry| entry.used >= oldest_kept || *ino == ROOT_INO);
        let by_ino = &self.by_ino;
        self.by_path.retain(|_, ino| by_ino.contains_key(ino));
        tracing::info!(kept = self.by_ino.len(), limit, "dropped the least recently used NFS inodes");
    }

    /// Rewrites the journal with one record per entry, and appends to it
    /// from then on.
    fn compact_journal(&mut self, path: &Path) -> std::io::Result<()> {
        let mut text = Vec::new();
        for (ino, entry) in self.by_ino.iter().filter(|(ino, _)| **ino != ROOT_INO) {
            write_record(&mut text, *ino, entry)?;
        }
        private_files::replace(path, &text)?;
        let out = BufWriter::new(private_files::open(path, Open::Append)?);
        self.journal = Some(Journal { path: path.to_path_buf(), out, records: self.by_ino.len() });
        Ok(())
    }

    /// Makes `ino` name `node`: the inode that named `node` before is
    /// dropped, and so is the path `ino` named before (a rename read back
    /// from the journal: the old name must not lead to the moved inode).
    fn insert(&mut self, ino: Ino, node: Node, generation: u64) {
        let path = node.key();
        if let Some(old) = self.by_path.insert(path.clone(), ino)
            && old != ino
        {
            self.by_ino.remove(&old);
        }
        self.clock += 1;
        let entry = Entry { node, generation, lookups: 0, used: self.clock, found: 0, counted: 0 };
        let lookups = match self.by_ino.insert(ino, entry) {
            Some(before) if before.node.key() != path => {
                if self.by_path.get(&before.node.key()) == Some(&ino) {
                    self.by_path.remove(&before.node.key());
                }
                before.lookups
            }
            Some(before) => before.lookups,
            None => 0,
        };
        if let Some(entry) = self.by_ino.get_mut(&ino) {
            entry.lookups = lookups;
        }
    }

    /// Drops `ino`'s entry, and its path if the path still leads to it: a
    /// removed or replaced file's inode (detached) no longer owns its path,
    /// which may name a new file's inode now (`tar x`: unlink, create
    /// again, and the kernel's FORGET of the old inode after the create).
    fn remove(&mut self, ino: Ino) {
        let Some(entry) = self.by_ino.remove(&ino) else { return };
        let path = entry.node.key();
        if self.by_path.get(&path) == Some(&ino) {
            self.by_path.remove(&path);
        }
    }

    /// The hash of `path`, probed forward past numbers in use.
    fn free_ino(&self, path: &str) -> Ino {
        let mut ino = path_hash(path);
        while self.by_ino.contains_key(&ino) || ino <= ROOT_INO {
            ino = (ino + 1) & (u64::MAX >> 1);
        }
        ino
    }

    fn journal_new(&mut self, ino: Ino) {
        let Some(entry) = self.by_ino.get(&ino) else { return };
        let Some(journal) = self.journal.as_mut() else { return };
        // Flushed per record: the handle may reach a client right after.
        let written = write_record(&mut journal.out, ino, entry).and_then(|()| journal.out.flush());
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot journal an inode; NFS handles to it will not survive a restart");
        }
        journal.records += 1;
        if journal.records > 2 * self.by_ino.len() + COMPACT_SLACK {
            let path = journal.path.clone();
            if let Err(e) = self.compact_journal(&path) {
                tracing::error!(error = %e, journal = %path.display(), "cannot compact the inode journal");
            }
        }
    }
}

/// Records a journal may hold beyond twice the table before it is
/// rewritten (so that a small table is not rewritten at every rename).
const COMPACT_SLACK: usize = 4096;

fn write_record(out: &mut impl Write, ino: Ino, entry: &Entry) -> std::io::Result<()> {
    let record = Record { ino, generation: entry.generation, node: entry.node.clone() };
    serde_json::to_writer(&mut *out, &record)?;
    out.write_all(b"\n")
}

/// FNV-1a, stable across Rust versions (std's hasher is not), in 63 bits:
/// FUSE directory offsets are the inode numbers, and the kernel takes them
/// as signed.
pub fn path_hash(path: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in path.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash >> 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(name: &str) -> Node {
        Node::Object { project: "p".into(), bucket: "b".into(), name: name.into() }
    }

    /// The kernel forgets an inode's earlier lookups while a new lookup of
    /// the same path is under way (FUSE requests run concurrently): the
    /// entry the lookup found must not go, or the kernel's new inode is
    /// ESTALE (seen as "Cannot utime: Stale file handle" from `tar x`).
    #[test]
    fn a_forget_between_a_lookup_and_its_count_keeps_the_entry() {
        let table = InodeTable::new();
        let (ino, generation) = table.remember(&object("x"));
        table.count_lookup(ino);
        let (again, _) = table.remember(&object("x"));
        table.forget(ino, 1);
        table.count_lookup(again);
        assert_eq!(table.node(ino), Some(object("x")));
        assert_eq!(table.generation(ino), Some(generation));
        table.forget(ino, 1);
        assert_eq!(table.node(ino), None, "counted once: one forget drops it");
    }

    /// `tar x` over a file: unlink (the old inode is detached, the kernel
    /// still holds it), create (the path's hash is taken by the old inode:
    /// the new file gets the next number), and only then the kernel's
    /// FORGET of the old inode. Forgetting it must drop its entry only, not
    /// the path, which names the new inode now: untied from its path, the
    /// new file answered every GETATTR with ESTALE ("tar: ./a/1: Cannot
    /// stat: Stale file handle").
    #[test]
    fn forgetting_a_removed_inode_leaves_the_new_file_of_its_name() {
        let table = InodeTable::new();
        let (old, _) = table.remember(&object("x"));
        table.count_lookup(old);
        table.detach(old);
        let (new, _) = table.remember(&object("x"));
        table.count_lookup(new);
        assert_ne!(old, new, "the removed file's inode is still held");
        table.forget(old, 1);
        assert_eq!(table.node(old), None, "the removed file's inode goes");
        assert!(table.is_attached(new), "the new file still names x");
        assert_eq!(table.find(&object("x")).map(|(ino, _)| ino), Some(new));
        assert_eq!(table.remember(&object("x")).0, new, "a lookup finds the new file");
    }

    #[test]
    fn numbers_come_from_the_path_and_are_stable() {
        let a = InodeTable::new();
        let b = InodeTable::new();
        assert_eq!(a.remember(&object("x")).0, b.remember(&object("x")).0);
        assert_ne!(a.remember(&object("x")).0, a.remember(&object("y")).0);
        assert_eq!(a.remember(&object("x")).0, path_hash("p/storage/b/x"));
    }

    #[test]
    fn an_object_and_a_prefix_of_one_name_are_different_inodes() {
        let table = InodeTable::new();
        let prefix = Node::Dir { project: "p".into(), bucket: "b".into(), prefix: "x/".into() };
        let (file, _) = table.remember(&object("x"));
        let (dir, _) = table.remember(&prefix);
        assert_ne!(file, dir);
        assert_eq!(table.node(file), Some(object("x")));
        assert_eq!(table.node(dir), Some(prefix));
        assert!(file < 1 << 63 && dir < 1 << 63, "offsets must be positive as i64");
    }

    #[test]
    fn a_rename_keeps_the_inode_and_detaches_the_replaced_one() {
        let table = InodeTable::new();
        let (a, _) = table.remember(&object("a"));
        let (b, _) = table.remember(&object("b"));
        let replaced = table.rekey(|node| (*node == object("a")).then(|| object("b")));
        assert_eq!(replaced, [b]);
        assert_eq!(table.node(a), Some(object("b")));
        assert!(table.is_attached(a) && !table.is_attached(b), "b's inode answers for its handles only");
        assert_eq!(table.remember(&object("b")).0, a);
    }

    /// A removed file's inode (detached for its open handles) does not move
    /// with a later file of its name: two inodes claimed the target and
    /// a hash map's order decided which one was dropped.
    #[test]
    fn a_rename_moves_only_the_inode_that_names_the_path() {
        let table = InodeTable::new();
        let (removed, _) = table.remember(&object("a"));
        table.detach(removed);
        let (current, _) = table.remember(&object("a"));
        assert_ne!(removed, current);
        table.rekey(|node| (*node == object("a")).then(|| object("b")));
        assert_eq!(table.find(&object("b")).map(|(ino, _)| ino), Some(current));
        assert_eq!(table.node(current), Some(object("b")));
        assert_eq!(table.node(removed), Some(object("a")), "the removed file's inode stays");
    }

    #[test]
    fn forgetting_every_lookup_drops_the_entry() {
        let table = InodeTable::new();
        let (ino, _) = table.remember(&object("x"));
        table.count_lookup(ino);
        table.count_lookup(ino);
        table.forget(ino, 1);
        assert!(table.node(ino).is_some());
        table.forget(ino, 1);
        assert!(table.node(ino).is_none());
        assert!(table.node(ROOT_INO).is_some());
    }

    #[test]
    fn collisions_are_probed() {
        let table = InodeTable::new();
        let (first, _) = table.remember(&object("x"));
        // Occupy the next number with another node, then force a collision.
        let mut t = table.lock();
        let taken = first + 1;
        t.insert(taken, object("z"), 0);
        assert_eq!(t.free_ino("p/storage/b/x"), first + 2);
    }

    /// Issue 11, defect 2: after `mv a b` and a restart, `a` got b's inode
    /// back (the journal's older record of `a` won), and a new `a` written
    /// over NFS overwrote b.
    #[test]
    fn a_renamed_inode_does_not_answer_for_its_old_name_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("inodes.jsonl");
        let moved = {
            let table = InodeTable::persistent(&journal).unwrap();
            let (a, _) = table.remember(&object("a"));
            table.remember(&object("b"));
            table.rekey(|node| (*node == object("a")).then(|| object("b")));
            a
        };
        let again = InodeTable::persistent(&journal).unwrap();
        assert_eq!(again.node(moved), Some(object("b")));
        let (new_a, _) = again.remember(&object("a"));
        assert_ne!(new_a, moved, "a new `a` is a new inode");
        assert_eq!(again.node(new_a), Some(object("a")));
        assert_eq!(again.find(&object("b")).map(|(ino, _)| ino), Some(moved));
    }

    /// Issue 11, defect 13: the NFS journal only grew while serving.
    #[test]
    fn the_journal_is_compacted_while_serving() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("inodes.jsonl");
        let table = InodeTable::persistent(&journal).unwrap();
        table.remember(&object("x0"));
        for i in 0..20_000 {
            let (from, to) = (object(&format!("x{i}")), object(&format!("x{}", i + 1)));
            table.rekey(|node| (*node == from).then(|| to.clone()));
        }
        let lines = std::fs::read_to_string(&journal).unwrap().lines().count();
        assert!(lines <= 2 * 2 + COMPACT_SLACK + 1, "{lines} records for one inode");
        let again = InodeTable::persistent(&journal).unwrap();
        assert!(again.find(&object("x20000")).is_some());
        assert!(again.find(&object("x0")).is_none());
    }

    /// Issue 11, defect 13: past the limit, the least recently used
    /// entries of a journaled table go; the ones in use stay.
    #[test]
    fn a_journaled_table_keeps_the_recently_used_within_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits { max_entries: 100, ..Limits::default() };
        let table = InodeTable::persistent_with_limits(&dir.path().join("inodes.jsonl"), limits).unwrap();
        let (kept, _) = table.remember(&object("kept"));
        for i in 0..1000 {
            table.remember(&object(&format!("f{i}")));
            table.node(kept);
        }
        assert!(table.lock().by_ino.len() <= 101);
        assert_eq!(table.node(kept), Some(object("kept")));
        assert!(table.find(&object("f0")).is_none(), "the oldest went");
        assert!(table.node(ROOT_INO).is_some());
    }

    /// Issue 11, defect 13: without a journal, a table whose entries the
    /// kernel all holds was swept again at every new entry (O(n) each).
    #[test]
    fn a_sweep_waits_until_the_table_doubled() {
        let table = InodeTable::with_limits(Limits { sweep_at: 64, ..Limits::default() });
        for i in 0..64 {
            let (ino, _) = table.remember(&object(&format!("held{i}")));
            table.count_lookup(ino);
        }
        table.remember(&object("one more"));
        let next = table.lock().next_sweep;
        assert!(next >= 128, "the next sweep is at {next}");
        for i in 0..10 {
            table.remember(&object(&format!("listed{i}")));
        }
        assert_eq!(table.lock().next_sweep, next, "no sweep until the table doubled");
    }

    #[test]
    fn a_journaled_table_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("inodes.jsonl");
        let ino = {
            let table = InodeTable::persistent(&journal).unwrap();
            let (ino, _) = table.remember(&object("dir/x"));
            table.forget(ino, 1);
            assert!(table.node(ino).is_some(), "a journaled table never forgets");
            ino
        };
        let again = InodeTable::persistent(&journal).unwrap();
        assert_eq!(again.node(ino), Some(object("dir/x")));
        assert_eq!(again.generation(ino), Some(0));
    }
}
