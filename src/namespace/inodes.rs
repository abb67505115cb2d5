//! The inode table: the authority that maps inode numbers to nodes.
//!
//! A node's number is a hash of its path (FNV-1a, stable across builds and
//! restarts), probed forward on a collision. With a journal file the table
//! survives a restart, so NFS handles stay valid (NFS never forgets an
//! inode); without one (FUSE), entries are dropped when the kernel forgets
//! them all.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;

use ciofs_frontends::{Ino, ROOT_INO};
use serde::{Deserialize, Serialize};

use super::node::Node;

struct Entry {
    node: Node,
    generation: u64,
    /// How many times the kernel was told of this inode and not told to
    /// forget it.
    lookups: u64,
}

#[derive(Default)]
struct Table {
    by_ino: HashMap<Ino, Entry>,
    by_path: HashMap<String, Ino>,
    journal: Option<BufWriter<File>>,
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
        let mut table = Table::default();
        table.insert(ROOT_INO, Node::Root, 0);
        Self { table: Mutex::new(table) }
    }

    /// A table kept in `journal` (appended to as inodes are made, reloaded
    /// here).
    pub fn persistent(journal: &Path) -> std::io::Result<Self> {
        let mut table = Table::default();
        table.insert(ROOT_INO, Node::Root, 0);
        if let Some(dir) = journal.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut records = Vec::new();
        if journal.exists() {
            for line in BufReader::new(File::open(journal)?).lines() {
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
        // Rewrite the journal compactly (later records won over earlier ones).
        let tmp = journal.with_extension("tmp");
        {
            let mut out = BufWriter::new(File::create(&tmp)?);
            for (ino, entry) in &table.by_ino {
                if *ino != ROOT_INO {
                    write_record(&mut out, *ino, entry)?;
                }
            }
            out.flush()?;
        }
        std::fs::rename(&tmp, journal)?;
        table.journal = Some(BufWriter::new(OpenOptions::new().append(true).open(journal)?));
        Ok(Self { table: Mutex::new(table) })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The inode number of `node`, made if needed, and its generation.
    pub fn remember(&self, node: &Node) -> (Ino, u64) {
        let mut table = self.lock();
        let path = node.key();
        if let Some(&ino) = table.by_path.get(&path) {
            let entry = table.by_ino.get_mut(&ino).expect("by_path and by_ino agree");
            return (ino, entry.generation);
        }
        if table.journal.is_none() && table.by_ino.len() >= SWEEP_AT {
            table.sweep();
        }
        let ino = table.free_ino(&path);
        table.insert(ino, node.clone(), 0);
        table.journal_new(ino);
        (ino, 0)
    }

    /// The kernel was told of `ino` once more (a lookup, or an entry of a
    /// readdirplus reply).
    pub fn count_lookup(&self, ino: Ino) {
        if let Some(entry) = self.lock().by_ino.get_mut(&ino) {
            entry.lookups += 1;
        }
    }

    /// Gives each inode whose node `moved` maps a new node (after a rename),
    /// keeping its number. An inode that stood at a new node's place is
    /// dropped: what it named was replaced.
    pub fn rekey(&self, moved: impl Fn(&Node) -> Option<Node>) {
        let mut table = self.lock();
        let changes: Vec<(Ino, Node)> =
            table.by_ino.iter().filter_map(|(ino, entry)| moved(&entry.node).map(|node| (*ino, node))).collect();
        for (ino, _) in &changes {
            if let Some(entry) = table.by_ino.get(ino) {
                let old = entry.node.key();
                table.by_path.remove(&old);
            }
        }
        for (ino, node) in changes {
            if let Some(replaced) = table.by_path.insert(node.key(), ino)
                && replaced != ino
            {
                table.by_ino.remove(&replaced);
            }
            if let Some(entry) = table.by_ino.get_mut(&ino) {
                entry.node = node;
            }
            table.journal_new(ino);
        }
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

    /// The inode number of `node` and its generation, if it has one.
    pub fn find(&self, node: &Node) -> Option<(Ino, u64)> {
        let table = self.lock();
        let ino = *table.by_path.get(&node.key())?;
        table.by_ino.get(&ino).map(|e| (ino, e.generation))
    }

    pub fn node(&self, ino: Ino) -> Option<Node> {
        self.lock().by_ino.get(&ino).map(|e| e.node.clone())
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
        if entry.lookups == 0 {
            let path = entry.node.key();
            table.by_ino.remove(&ino);
            table.by_path.remove(&path);
        }
    }
}

impl Default for InodeTable {
    fn default() -> Self {
        Self::new()
    }
}

/// Without a journal, past this many inodes the ones the kernel holds no
/// reference to (listed but never looked up) are dropped.
const SWEEP_AT: usize = 1 << 20;

impl Table {
    fn sweep(&mut self) {
        self.by_ino.retain(|ino, entry| entry.lookups > 0 || *ino == ROOT_INO);
        let by_ino = &self.by_ino;
        self.by_path.retain(|_, ino| by_ino.contains_key(ino));
        tracing::debug!(kept = self.by_ino.len(), "swept inodes without references");
    }

    fn insert(&mut self, ino: Ino, node: Node, generation: u64) {
        let path = node.key();
        if let Some(old) = self.by_path.insert(path, ino)
            && old != ino
        {
            self.by_ino.remove(&old);
        }
        self.by_ino.insert(ino, Entry { node, generation, lookups: 0 });
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
        let written = write_record(journal, ino, entry).and_then(|()| journal.flush());
        if let Err(e) = written {
            tracing::error!(error = %e, "cannot journal an inode; NFS handles to it will not survive a restart");
        }
    }
}

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
    fn a_rename_keeps_the_inode_and_drops_the_replaced_one() {
        let table = InodeTable::new();
        let (a, _) = table.remember(&object("a"));
        let (b, _) = table.remember(&object("b"));
        table.rekey(|node| (*node == object("a")).then(|| object("b")));
        assert_eq!(table.node(a), Some(object("b")));
        assert_eq!(table.node(b), None);
        assert_eq!(table.remember(&object("b")).0, a);
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
