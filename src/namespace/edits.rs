//! Files that live in ciofs, not in Google: edits of BigQuery's
//! `schema.json` and `config.json` until they are applied, and scratch files
//! (an editor's swap file, `sed -i`'s temporary file) in a table directory.
//!
//! An edit is applied whole, once: at the flush of a handle that wrote
//! (close), at fsync, at the last release of a file only created or
//! truncated, or, for writes without a handle (NFS), once they have been
//! idle for a moment. A refused edit fails that close() or fsync() with
//! EINVAL and its reason goes to `.ciofs/errors`; the file then shows the
//! table as it is again. Renaming a scratch file onto an editable file
//! applies it (`sed -i`, vim); renaming an editable file away keeps a local
//! copy and hides the name until it is written again (vim's backup).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use ciofs_frontends::{VfsError, VfsResult};
use tokio::sync::Mutex as AsyncMutex;

use super::Namespace;
use super::node::Node;

/// The largest local file: schema and config documents are small.
const MAX_LOCAL_FILE: u64 = 16 << 20;

#[derive(Default)]
struct LocalState {
    data: Vec<u8>,
    mtime: Option<SystemTime>,
    /// Bytes were written (or the size set above zero) since the last apply.
    written: bool,
    /// The content differs from what Google has (written, or truncated).
    dirty: bool,
    /// Open handles (FUSE); writes without a handle are applied when idle.
    handles: usize,
    last_change: Option<Instant>,
    /// Bumped at every change, so that an apply forgets only what it sent.
    version: u64,
}

#[derive(Default)]
pub(super) struct LocalFile {
    state: Mutex<LocalState>,
    /// Held while the file is applied, so that two applies do not race.
    applying: AsyncMutex<()>,
}

impl LocalFile {
    fn with(data: Vec<u8>, dirty: bool) -> Self {
        let state = LocalState {
            data,
            mtime: Some(SystemTime::now()),
            dirty,
            last_change: Some(Instant::now()),
            ..LocalState::default()
        };
        Self { state: Mutex::new(state), applying: AsyncMutex::new(()) }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LocalState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The local files and the hidden names of one mount.
#[derive(Default)]
pub(super) struct LocalFiles {
    files: Mutex<HashMap<Node, Arc<LocalFile>>>,
    /// Generated or editable files that were removed: not shown until they
    /// are created again. Removing them deletes nothing in Google.
    hidden: Mutex<HashSet<Node>>,
}

impl LocalFiles {
    fn get(&self, node: &Node) -> Option<Arc<LocalFile>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner()).get(node).cloned()
    }

    fn insert(&self, node: Node, file: LocalFile) -> Arc<LocalFile> {
        let file = Arc::new(file);
        self.files.lock().unwrap_or_else(|e| e.into_inner()).insert(node, file.clone());
        file
    }

    fn remove(&self, node: &Node) -> Option<Arc<LocalFile>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner()).remove(node)
    }

    pub fn is_hidden(&self, node: &Node) -> bool {
        self.hidden.lock().unwrap_or_else(|e| e.into_inner()).contains(node)
    }

    fn set_hidden(&self, node: &Node, hidden: bool) {
        let mut set = self.hidden.lock().unwrap_or_else(|e| e.into_inner());
        if hidden {
            set.insert(node.clone());
        } else {
            set.remove(node);
        }
    }

    /// Size and time of a local file, if there is one.
    pub fn stat(&self, node: &Node) -> Option<(u64, SystemTime)> {
        let file = self.get(node)?;
        let state = file.state();
        Some((state.data.len() as u64, state.mtime.unwrap_or(SystemTime::UNIX_EPOCH)))
    }

    /// The scratch files in a table directory, by name.
    pub fn scratch_in(&self, dir: &Node) -> Vec<(Node, u64, SystemTime)> {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let mut found: Vec<(Node, u64, SystemTime)> = files
            .iter()
            .filter(|(node, _)| matches!(node, Node::Scratch { .. }) && node.parent() == *dir)
            .map(|(node, file)| {
                let state = file.state();
                (node.clone(), state.data.len() as u64, state.mtime.unwrap_or(SystemTime::UNIX_EPOCH))
            })
            .collect();
        found.sort_by_key(|(node, _, _)| node.path());
        found
    }

    /// Forgets every local file and hidden name in directory `dir`.
    pub fn drop_under(&self, dir: &Node) {
        self.files.lock().unwrap_or_else(|e| e.into_inner()).retain(|node, _| node.parent() != *dir);
        self.hidden.lock().unwrap_or_else(|e| e.into_inner()).retain(|node| node.parent() != *dir);
    }

    /// Edits written without a handle that have been idle for `idle`, and
    /// files only created or truncated whose handles are gone.
    fn idle(&self, idle: Duration) -> Vec<(Node, Arc<LocalFile>)> {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files
            .iter()
            .filter(|(node, file)| {
                let state = file.state();
                is_editable(node)
                    && state.dirty
                    && state.handles == 0
                    && state.last_change.is_none_or(|at| at.elapsed() >= idle)
            })
            .map(|(node, file)| (node.clone(), file.clone()))
            .collect()
    }
}

/// Whether writing `node` changes something in Google when applied.
fn is_editable(node: &Node) -> bool {
    matches!(node, Node::TableFile { file, .. } if file.is_editable())
}

/// Whether `node` is a file ciofs keeps locally while it is written (the
/// other BigQuery files are generated: writes to them are ignored).
pub(super) fn is_local(node: &Node) -> bool {
    is_editable(node) || matches!(node, Node::Scratch { .. })
}

fn too_big(node: &Node) -> VfsError {
    VfsError::new(libc::EFBIG, format!("{node}: larger than {MAX_LOCAL_FILE} bytes"))
}

impl Namespace {
    /// The local file of `node`, made from its current document if there is
    /// none (empty with `truncate`).
    async fn local_file(&self, node: &Node, truncate: bool) -> VfsResult<Arc<LocalFile>> {
        if let Some(file) = self.local.get(node) {
            let mut state = file.state();
            if truncate && !state.data.is_empty() {
                state.data.clear();
                touch(&mut state, false);
            }
            drop(state);
            return Ok(file);
        }
        if matches!(node, Node::Scratch { .. }) {
            return Err(VfsError::not_found(node.to_string()));
        }
        let data = if truncate || self.local.is_hidden(node) {
            Vec::new()
        } else {
            match self.bq_document(node).await {
                Ok((document, _)) => document.to_vec(),
                // A file of a pending table not written yet starts empty.
                Err(e) if e.errno() == libc::ENOENT => Vec::new(),
                Err(e) => return Err(e),
            }
        };
        self.local.set_hidden(node, false);
        let file = LocalFile::with(data, truncate);
        Ok(self
            .local
            .files
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(node.clone())
            .or_insert(Arc::new(file))
            .clone())
    }

    /// Opens a local file for write (`Handle::Local`).
    pub(super) async fn local_open(&self, node: &Node, truncate: bool) -> VfsResult<()> {
        let file = self.local_file(node, truncate).await?;
        file.state().handles += 1;
        Ok(())
    }

    /// `create`: a new, empty local file (an editable file written anew).
    pub(super) fn local_create(&self, node: &Node) {
        self.local.set_hidden(node, false);
        let file = LocalFile::with(Vec::new(), is_editable(node));
        file.state().handles = 1;
        self.local.insert(node.clone(), file);
    }

    /// A generated file created again after its removal.
    pub(super) fn local_unhide(&self, node: &Node) {
        self.local.set_hidden(node, false);
    }

    pub(super) async fn local_write(&self, node: &Node, offset: u64, data: &[u8]) -> VfsResult<u32> {
        let end =
            offset.checked_add(data.len() as u64).filter(|end| *end <= MAX_LOCAL_FILE).ok_or_else(|| too_big(node))?;
        let file = self.local_file(node, false).await?;
        let mut state = file.state();
        if state.data.len() < end as usize {
            state.data.resize(end as usize, 0);
        }
        state.data[offset as usize..end as usize].copy_from_slice(data);
        touch(&mut state, true);
        Ok(data.len() as u32)
    }

    pub(super) async fn local_truncate(&self, node: &Node, size: u64) -> VfsResult<()> {
        if size > MAX_LOCAL_FILE {
            return Err(too_big(node));
        }
        let file = match self.local.get(node) {
            Some(file) => file,
            None => self.local_file(node, size == 0).await?,
        };
        let mut state = file.state();
        if state.data.len() as u64 != size {
            state.data.resize(size as usize, 0);
            touch(&mut state, size > 0);
        }
        Ok(())
    }

    /// Reads a local file, or the current document when there is none.
    pub(super) async fn local_read(&self, node: &Node, offset: u64, len: u32) -> VfsResult<(Bytes, bool)> {
        let data = match self.local.get(node) {
            Some(file) => Bytes::from(file.state().data.clone()),
            None if matches!(node, Node::Scratch { .. }) => return Err(VfsError::not_found(node.to_string())),
            None => self.bq_document(node).await?.0,
        };
        let start = (offset as usize).min(data.len());
        let end = start.saturating_add(len as usize).min(data.len());
        Ok((data.slice(start..end), end == data.len()))
    }

    /// close(): applies what this handle's file had written.
    pub(super) async fn local_flush(&self, node: &Node) -> VfsResult<()> {
        match self.local.get(node) {
            Some(file) if is_editable(node) && file.state().written => self.apply_local(node, &file).await,
            _ => Ok(()),
        }
    }

    /// fsync(): applies any change.
    pub(super) async fn local_fsync(&self, node: &Node) -> VfsResult<()> {
        match self.local.get(node) {
            Some(file) if is_editable(node) && file.state().dirty => self.apply_local(node, &file).await,
            _ => Ok(()),
        }
    }

    /// The last release applies what was written and not yet applied; a
    /// file only created or truncated waits for writes without a handle
    /// (NFS creates, then writes) and is dropped if none come.
    pub(super) async fn local_release(&self, node: &Node) -> VfsResult<()> {
        let Some(file) = self.local.get(node) else { return Ok(()) };
        let apply = {
            let mut state = file.state();
            state.handles = state.handles.saturating_sub(1);
            state.last_change = Some(Instant::now());
            is_editable(node) && state.handles == 0 && state.written
        };
        if apply { self.apply_local(node, &file).await } else { Ok(()) }
    }

    /// Applies edits written without a handle once idle (NFS); drops files
    /// that were only emptied.
    pub async fn apply_idle_edits(&self, idle: Duration) {
        for (node, file) in self.local.idle(idle) {
            if file.state().written {
                // The error is in the log and in .ciofs/errors.
                let _ = self.apply_local(&node, &file).await;
            } else {
                let version = file.state().version;
                self.forget_local(&node, &file, version);
                tracing::info!(%node, "emptied and never written: not applied");
            }
        }
    }

    /// Applies a local file's content to Google. Whatever the outcome, the
    /// change is over: on success the file shows the new state, on refusal
    /// the unchanged one (the reason is returned and kept in .ciofs/errors).
    async fn apply_local(&self, node: &Node, file: &Arc<LocalFile>) -> VfsResult<()> {
        let _applying = file.applying.lock().await;
        let (data, version) = {
            let state = file.state();
            if !state.dirty {
                return Ok(());
            }
            (state.data.clone(), state.version)
        };
        let applied = self.bq_apply(node, &data).await;
        if let Err(e) = &applied {
            self.error_log.record(&node.to_string(), e.errno(), e.message());
        }
        self.forget_local(node, file, version);
        applied
    }

    /// Drops a local edit once applied (or refused), unless it changed since.
    fn forget_local(&self, node: &Node, file: &Arc<LocalFile>, version: u64) {
        let mut files = self.local.files.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = file.state();
        if state.version != version {
            return;
        }
        if state.handles > 0 {
            // Still open: later writes start from what Google now has.
            state.written = false;
            state.dirty = false;
        }
        if files.get(node).is_some_and(|f| Arc::ptr_eq(f, file)) {
            drop(state);
            files.remove(node);
        }
    }

    /// `rm` in a table directory: a scratch file goes; an editable or
    /// generated file is hidden (nothing changes in Google).
    pub(super) fn local_unlink(&self, node: &Node) -> VfsResult<()> {
        let existed = self.local.remove(node).is_some();
        match node {
            Node::Scratch { .. } if !existed => Err(VfsError::not_found(node.to_string())),
            Node::Scratch { .. } => Ok(()),
            _ => {
                self.local.set_hidden(node, true);
                Ok(())
            }
        }
    }

    /// `mv` within a table directory. Onto an editable file, the content is
    /// applied first (the rename fails if it is refused); an editable file
    /// moved away leaves a local copy and its name hidden.
    pub(super) async fn local_rename(&self, from: &Node, to: &Node) -> VfsResult<()> {
        if from == to {
            return Ok(());
        }
        let data = match self.local.get(from) {
            Some(file) => file.state().data.clone(),
            None if matches!(from, Node::Scratch { .. }) || self.local.is_hidden(from) => {
                return Err(VfsError::not_found(from.to_string()));
            }
            None => self.bq_document(from).await?.0.to_vec(),
        };
        if is_editable(to) {
            self.local.set_hidden(to, false);
            if let Err(e) = self.bq_apply(to, &data).await {
                self.error_log.record(&to.to_string(), e.errno(), e.message());
                return Err(e);
            }
            self.local.remove(to);
        } else if matches!(to, Node::Scratch { .. }) {
            self.local.insert(to.clone(), LocalFile::with(data, false));
        } else {
            // Onto a generated file: accepted and ignored.
            self.local.set_hidden(to, false);
        }
        match from {
            Node::Scratch { .. } => {
                self.local.remove(from);
            }
            _ => {
                self.local.remove(from);
                self.local.set_hidden(from, true);
            }
        }
        Ok(())
    }
}

fn touch(state: &mut LocalState, written: bool) {
    state.written |= written;
    state.dirty = true;
    state.mtime = Some(SystemTime::now());
    state.last_change = Some(Instant::now());
    state.version += 1;
}
