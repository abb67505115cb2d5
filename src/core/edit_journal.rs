//! The journal of edits acknowledged without a close (NFS WRITEs to
//! `schema.json` and `config.json`): one file per document, written and
//! fsync'd before the WRITE is answered, removed once the edit is applied,
//! refused or given up. A restart applies what a crash left behind.
//!
//! A record is the node as one JSON line, then the document's bytes.

use std::path::{Path, PathBuf};

use ciofs_frontends::{VfsError, VfsResult};

use super::node::Node;
use crate::core::private_files;

/// A record read back: the edited node and the document written to it
/// (None: the record is unreadable).
pub type Record = (PathBuf, Option<(Node, Vec<u8>)>);

pub struct EditJournal {
    dir: PathBuf,
}

impl EditJournal {
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, node: &Node) -> PathBuf {
        self.dir.join(format!("{:016x}.edit", super::inodes::path_hash(&node.key())))
    }

    /// Records `node`'s current content durably (replacing the last record).
    pub fn write(&self, node: &Node, content: &[u8]) -> VfsResult<()> {
        let io = |e: std::io::Error| VfsError::io(format!("journal of {node}: {e}"));
        private_files::private_dir(&self.dir).map_err(io)?;
        let mut record = serde_json::to_vec(node).map_err(|e| VfsError::io(e.to_string()))?;
        record.push(b'\n');
        record.extend_from_slice(content);
        private_files::replace(&self.path(node), &record).map_err(io)
    }

    pub fn forget(&self, node: &Node) {
        let _ = std::fs::remove_file(self.path(node));
    }

    /// The records left by an earlier run, config.json before schema.json
    /// (a new table is created with the configuration written before).
    /// Half-written records (a crash while writing one) are removed.
    pub fn records(&self) -> Vec<Record> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return Vec::new() };
        let mut records = Vec::new();
        for path in entries.flatten().map(|e| e.path()) {
            match path.extension().and_then(|e| e.to_str()) {
                Some("edit") => {
                    let record = read_record(&path);
                    records.push((path, record));
                }
                // Half-written by `private_files::replace` (and by earlier
                // versions, which wrote `.tmp` files).
                Some("tmp") => drop(std::fs::remove_file(&path)),
                _ if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) => {
                    drop(std::fs::remove_file(&path))
                }
                _ => {}
            }
        }
        records.sort_by_key(|(_, record)| !matches!(record, Some((node, _)) if node.path().ends_with("config.json")));
        records
    }
}

fn read_record(path: &Path) -> Option<(Node, Vec<u8>)> {
    let mut record = Vec::new();
    std::io::Read::read_to_end(&mut private_files::open(path, private_files::Open::Read).ok()?, &mut record).ok()?;
    let end = record.iter().position(|b| *b == b'\n')?;
    let node: Node = serde_json::from_slice(&record[..end]).ok()?;
    Some((node, record[end + 1..].to_vec()))
}
