//! Files that live in ciofs, not in Google: edits of documents (BigQuery's
//! `schema.json` and `config.json`, Pub/Sub's `config.json`, `.meta/*.json`)
//! until they are applied, messages written to `_message`/`_messages` until
//! they are published, and scratch files (an editor's swap file, `sed -i`'s
//! temporary file) beside them. What an edit is applied to is the owning
//! slice's business: `LocalFiles` asks through the `Documents` trait.
//!
//! An edit is applied whole, once: at the flush of a handle that wrote
//! (close), at fsync, at the last release of a file only created or
//! truncated, or, for writes without a handle (NFS), once they have been
//! idle for a moment. A refused edit fails that close() or fsync() with
//! EINVAL and its reason goes to `.ciofs/errors`; the file then shows the
//! table as it is again. Renaming a scratch file onto an editable file
//! applies it (`sed -i`, vim); renaming an editable file away keeps a local
//! copy and hides the name until it is written again (vim's backup).
//!
//! `_message` and `_messages` are files of messages, not documents: each
//! apply publishes only the bytes written since the previous one (every
//! flush of a handle, or each idle time over NFS), and takes them whatever
//! the outcome, so that nothing is published twice by the same writer: a
//! failed publish (maybe published, its answer lost) fails its close and is
//! over; over NFS it is not tried again.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use ciofs_backends::sync::lock;
use ciofs_frontends::{VfsError, VfsResult};
use tokio::sync::Mutex as AsyncMutex;

use super::edit_journal::EditJournal;
use super::error_log::ErrorLog;
use super::node::{Node, SubscriptionFile, TopicFile};

/// The largest local file: schema and config documents are small.
const MAX_LOCAL_FILE: u64 = 16 << 20;
/// The most all local files of a mount hold together.
const MAX_LOCAL_TOTAL: usize = 256 << 20;
/// How long a file created or emptied, and not written yet, waits for its
/// writes (an NFS client creates, then writes; a slow `program > file`
/// truncates at the start and writes at the end) before it is dropped.
const WRITE_GRACE: Duration = Duration::from_secs(30);

#[derive(Default)]
struct LocalState {
    data: Vec<u8>,
    mtime: Option<SystemTime>,
    /// Bytes were written (or the size set above zero) since the last apply.
    written: bool,
    /// The content differs from what Google has (written, or truncated).
    dirty: bool,
    /// Open write handles; with none left, the file is applied or dropped.
    handles: usize,
    /// Created, or emptied without a handle: kept for the writes to come
    /// until `WRITE_GRACE` passes.
    awaits_writes: bool,
    last_change: Option<Instant>,
    /// Bumped at every change, so that an apply settles only what it sent.
    version: u64,
    /// Of a file of messages: the span of `data` written since the last
    /// apply took its bytes, which the next apply publishes.
    news: Option<std::ops::Range<usize>>,
    /// After a successful apply, the table's new document: what the file
    /// shows (stat, new opens) until it changes again. The handles still
    /// open keep writing over their own bytes in `data`.
    shown: Option<(Bytes, SystemTime)>,
}

impl LocalState {
    /// The bytes and time the file shows to stat and to new opens.
    fn visible(&self) -> (Bytes, SystemTime) {
        match &self.shown {
            Some(shown) if !self.dirty => shown.clone(),
            _ => (Bytes::from(self.data.clone()), self.mtime.unwrap_or(SystemTime::UNIX_EPOCH)),
        }
    }

    fn visible_size(&self) -> (u64, SystemTime) {
        match &self.shown {
            Some((bytes, mtime)) if !self.dirty => (bytes.len() as u64, *mtime),
            _ => (self.data.len() as u64, self.mtime.unwrap_or(SystemTime::UNIX_EPOCH)),
        }
    }

    /// Emptied: what was written before is no longer to be applied.
    fn emptied(&mut self) {
        self.data.clear();
        touch(self, false);
        self.written = false;
        self.news = None;
    }

    /// Records that `span` was written.
    fn wrote(&mut self, span: std::ops::Range<usize>) {
        self.news = Some(match self.news.take() {
            Some(news) => news.start.min(span.start)..news.end.max(span.end),
            None => span,
        });
    }

    /// Cut to `size` bytes: news beyond it are gone.
    fn cut_news(&mut self, size: usize) {
        self.news = self.news.take().map(|news| news.start.min(size)..news.end.min(size)).filter(|n| !n.is_empty());
    }

    /// What an apply of `node` sends: a file of messages its news (taken:
    /// no later apply sends them again), any other file all of it.
    fn take_content(&mut self, node: &Node) -> Vec<u8> {
        match is_messages(node) {
            true => self.news.take().map(|news| self.data[news].to_vec()).unwrap_or_default(),
            false => self.data.clone(),
        }
    }

    /// What the journal keeps of `node` for an apply after a restart: a
    /// file of messages its news only (what was published is not again).
    fn journaled(&self, node: &Node) -> &[u8] {
        match (is_messages(node), &self.news) {
            (true, Some(news)) => &self.data[news.clone()],
            (true, None) => &[],
            (false, _) => &self.data,
        }
    }
}

#[derive(Default)]
pub struct LocalFile {
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
        lock(&self.state)
    }
}

/// An open handle on a local file. It holds the file itself, so its writes
/// always continue the bytes it wrote before, whatever happens to the name
/// (an apply, an unlink).
pub struct LocalHandle {
    pub node: Node,
    file: Arc<LocalFile>,
    /// Opened for write: counted in the file's `handles`.
    for_write: bool,
    /// This handle wrote since its last flush: its flush applies.
    wrote: AtomicBool,
}

/// Hidden names, each with the version of its resource when it was
/// removed and when it was hidden (to drop the oldest past the limit).
#[derive(Default)]
struct Hidden {
    names: HashMap<Node, (Option<String>, u64)>,
    clock: u64,
}

/// The most names kept hidden: past it, the oldest half is shown again
/// (a name hidden long ago is one `tar x` is not about to create).
const HIDDEN_LIMIT: usize = 65_536;

impl Hidden {
    fn insert(&mut self, node: Node, version: Option<String>) {
        self.clock += 1;
        self.names.insert(node, (version, self.clock));
        if self.names.len() > HIDDEN_LIMIT {
            let keep_from = self.clock - (HIDDEN_LIMIT / 2) as u64;
            self.names.retain(|_, (_, at)| *at > keep_from);
        }
    }
}

/// The local files and the hidden names of one mount.
pub struct LocalFiles {
    files: Mutex<HashMap<Node, Arc<LocalFile>>>,
    /// Generated or editable files that were removed: not shown until they
    /// are created again, or until the resource they describe changes.
    /// Removing them deletes nothing in Google.
    hidden: Mutex<Hidden>,
    /// Edits written without a handle, until applied. A file's record goes
    /// with the file (whenever it leaves `files`).
    journal: EditJournal,
    /// Where a refused or failed apply is told (`.ciofs/errors`).
    error_log: Arc<ErrorLog>,
}

/// What local files need from the services whose documents they hold. The
/// namespace implements it by asking the slice that owns the node.
#[async_trait]
pub trait Documents: Send + Sync {
    /// The document as Google has it now, and its time.
    async fn current(&self, node: &Node) -> VfsResult<(Bytes, SystemTime)>;
    /// Makes `data` the document of `node` in Google (or refuses it).
    async fn apply(&self, node: &Node, data: &[u8]) -> VfsResult<()>;
    /// Before a journaled edit from an earlier run applies: makes again
    /// what it needs (a table directory made by mkdir waits for it).
    async fn prepare_replay(&self, node: &Node) -> VfsResult<()>;
}

impl LocalFiles {
    pub fn new(journal_dir: PathBuf, error_log: Arc<ErrorLog>) -> Self {
        Self {
            files: Mutex::new(HashMap::new()),
            hidden: Mutex::new(Hidden::default()),
            journal: EditJournal::new(journal_dir),
            error_log,
        }
    }

    fn get(&self, node: &Node) -> Option<Arc<LocalFile>> {
        lock(&self.files).get(node).cloned()
    }

    fn insert(&self, node: Node, file: LocalFile) -> Arc<LocalFile> {
        let file = Arc::new(file);
        lock(&self.files).insert(node, file.clone());
        file
    }

    /// The local file of `node`, if any, with one more handle counted.
    /// Both happen under the lock `drop_if_unchanged` takes: a release that
    /// finds no handle left and drops the file cannot slip in between,
    /// which would leave the new handle writing into a file no longer
    /// registered (and its close applying nothing).
    fn claim(&self, node: &Node) -> Option<Arc<LocalFile>> {
        let files = lock(&self.files);
        let file = files.get(node)?.clone();
        file.state().handles += 1;
        Some(file)
    }

    /// `claim`, registering `new` if `node` has no local file.
    fn claim_or_insert(&self, node: &Node, new: LocalFile) -> Arc<LocalFile> {
        let mut files = lock(&self.files);
        let file = files.entry(node.clone()).or_insert_with(|| Arc::new(new)).clone();
        file.state().handles += 1;
        file
    }

    fn remove(&self, node: &Node) -> Option<Arc<LocalFile>> {
        let removed = lock(&self.files).remove(node);
        self.journal.forget(node);
        removed
    }

    pub fn is_hidden(&self, node: &Node) -> bool {
        lock(&self.hidden).names.contains_key(node)
    }

    /// Whether `node` is hidden while its resource is at `version` (None:
    /// there is none): a removed document stays hidden only as long as
    /// what it describes is the one it described when it was removed, so
    /// `rm -r d; cp -r src d` shows the new objects' documents.
    pub fn is_hidden_at(&self, node: &Node, version: Option<&str>) -> bool {
        let mut hidden = lock(&self.hidden);
        match hidden.names.get(node) {
            Some((at, _)) if at.as_deref() == version => true,
            Some(_) => {
                hidden.names.remove(node);
                false
            }
            None => false,
        }
    }

    fn set_hidden(&self, node: &Node, hidden: bool) {
        match hidden {
            true => self.hide_at(node, None),
            false => drop(lock(&self.hidden).names.remove(node)),
        }
    }

    /// Hides `node`, removed while its resource was at `version`.
    pub fn hide_at(&self, node: &Node, version: Option<String>) {
        lock(&self.hidden).insert(node.clone(), version);
    }

    /// Size and time of a local file, if there is one.
    pub fn stat(&self, node: &Node) -> Option<(u64, SystemTime)> {
        let file = self.get(node)?;
        let visible = file.state().visible_size();
        Some(visible)
    }

    /// Moves every local file `moved` gives a new node (a local directory
    /// renamed with the files inside it).
    pub fn rekey(&self, moved: impl Fn(&Node) -> Option<Node>) {
        super::macos::rekey_keys(&mut lock(&self.files), moved);
    }

    /// The scratch files in a directory, by name.
    pub fn scratch_in(&self, dir: &Node) -> Vec<(Node, u64, SystemTime)> {
        let files = lock(&self.files);
        let mut found: Vec<(Node, u64, SystemTime)> = files
            .iter()
            .filter(|(node, _)| matches!(node, Node::Scratch { dir: parent, .. } if **parent == *dir))
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
        let mut files = lock(&self.files);
        let gone: Vec<Node> = files.keys().filter(|node| node.parent() == *dir).cloned().collect();
        for node in gone {
            files.remove(&node);
            self.journal.forget(&node);
        }
        lock(&self.hidden).names.retain(|node, _| node.parent() != *dir);
    }

    /// Files without open handles that are due: edits idle for `idle` (to
    /// apply), and files that wait no more for writes (to drop); each with
    /// its state's version, taken under one lock with the rest.
    fn due(&self, idle: Duration) -> Vec<(Node, Arc<LocalFile>, Due)> {
        let files = lock(&self.files);
        files
            .iter()
            // Not only for apply_local: a scratch file is never dropped here.
            .filter(|(node, _)| is_editable(node))
            .filter_map(|(node, file)| {
                let state = file.state();
                let quiet = state.last_change.map_or(Duration::MAX, |at| at.elapsed());
                let due = match () {
                    _ if state.handles > 0 => return None,
                    _ if state.written && quiet >= idle => Due::Apply,
                    _ if state.written => return None,
                    _ if state.awaits_writes && quiet < WRITE_GRACE => return None,
                    _ => Due::Drop(state.version),
                };
                Some((node.clone(), file.clone(), due))
            })
            .collect()
    }

    /// Drops `node`'s local file (and its journal record) if it is still
    /// `file` at `version`, with no handle open.
    fn drop_if_unchanged(&self, node: &Node, file: &Arc<LocalFile>, version: u64) {
        let mut files = lock(&self.files);
        let unchanged = {
            let state = file.state();
            state.version == version && state.handles == 0
        };
        if unchanged && files.get(node).is_some_and(|f| Arc::ptr_eq(f, file)) {
            files.remove(node);
            self.journal.forget(node);
        }
    }

    /// Bytes held by all local files.
    fn total(&self) -> usize {
        let files = lock(&self.files);
        files.values().map(|f| f.state().data.len()).sum()
    }
}

enum Due {
    Apply,
    Drop(u64),
}

/// Whether writing `node` changes something in Google when applied.
fn is_editable(node: &Node) -> bool {
    match node {
        Node::TableFile { file, .. } => file.is_editable(),
        Node::TopicFile { .. } | Node::SubscriptionFile { file: SubscriptionFile::Config, .. } => true,
        Node::DatasetMeta { .. } | Node::ObjectMeta { .. } | Node::BucketMeta { .. } => true,
        _ => false,
    }
}

/// A handle's own file (see `is_private`), its one handle counted.
fn private_file() -> Arc<LocalFile> {
    let file = LocalFile::with(Vec::new(), false);
    file.state().handles = 1;
    Arc::new(file)
}

/// Whether `node` is a file of messages (`_message`, `_messages`): what is
/// written is published, each byte once.
fn is_messages(node: &Node) -> bool {
    matches!(node, Node::TopicFile { file: TopicFile::Message | TopicFile::Messages, .. })
}

/// Whether each handle of `node` writes its own content (a message to
/// publish), rather than sharing the file's.
fn is_private(node: &Node) -> bool {
    is_messages(node)
}

/// Whether `node` is a file ciofs keeps locally while it is written (the
/// other BigQuery files are generated: writes to them are ignored).
pub fn is_local(node: &Node) -> bool {
    is_editable(node) || matches!(node, Node::Scratch { .. })
}

fn too_big(node: &Node) -> VfsError {
    VfsError::new(libc::EFBIG, format!("{node}: larger than {MAX_LOCAL_FILE} bytes"))
}

impl LocalFiles {
    /// The local file of `node`, made from its current document if there is
    /// none (empty with `truncate`).
    async fn file_for(
        &self,
        docs: &dyn Documents,
        node: &Node,
        truncate: bool,
        claim: bool,
    ) -> VfsResult<Arc<LocalFile>> {
        let existing = if claim { self.claim(node) } else { self.get(node) };
        if let Some(file) = existing {
            if truncate {
                self.empty_file(node, &file);
            }
            return Ok(file);
        }
        if matches!(node, Node::Scratch { .. }) {
            return Err(VfsError::not_found(node.to_string()));
        }
        let data = if truncate || self.is_hidden(node) {
            Vec::new()
        } else {
            match docs.current(node).await {
                Ok((document, _)) => document.to_vec(),
                // A file of a pending table not written yet starts empty.
                Err(e) if e.errno() == libc::ENOENT => Vec::new(),
                Err(e) => return Err(e),
            }
        };
        self.set_hidden(node, false);
        let file = LocalFile::with(data, truncate);
        let file = match claim {
            true => self.claim_or_insert(node, file),
            false => {
                let mut files = lock(&self.files);
                files.entry(node.clone()).or_insert(Arc::new(file)).clone()
            }
        };
        if truncate {
            // Another open may have made the file meanwhile.
            self.empty_file(node, &file);
        }
        Ok(file)
    }

    /// Empties a local file: what was written into it before is not to be
    /// applied any more.
    fn empty_file(&self, node: &Node, file: &LocalFile) {
        let mut state = file.state();
        if !state.data.is_empty() || state.written {
            state.emptied();
            self.journal.forget(node);
        }
    }

    /// A handle of `file`; one for write must come with its handle counted
    /// (`LocalFiles::claim`, or `private_file`).
    fn new_handle(node: &Node, file: Arc<LocalFile>, for_write: bool) -> Arc<LocalHandle> {
        Arc::new(LocalHandle { node: node.clone(), file, for_write, wrote: AtomicBool::new(false) })
    }

    /// Opens a local file for write.
    pub async fn open(&self, docs: &dyn Documents, node: &Node, truncate: bool) -> VfsResult<Arc<LocalHandle>> {
        if is_private(node) {
            return Ok(Self::new_handle(node, private_file(), true));
        }
        let file = self.file_for(docs, node, truncate, true).await?;
        Ok(Self::new_handle(node, file, true))
    }

    /// Opens a scratch file for reading: its live bytes.
    pub fn open_scratch(&self, node: &Node) -> VfsResult<Arc<LocalHandle>> {
        let file = self.get(node).ok_or_else(|| VfsError::not_found(node.to_string()))?;
        Ok(Self::new_handle(node, file, false))
    }

    /// What a read-only open of an edited file sees: the edit as it is now.
    pub fn snapshot(&self, node: &Node) -> Option<Bytes> {
        let file = self.get(node)?;
        let visible = file.state().visible().0;
        Some(visible)
    }

    /// `create`: an empty local file (an editable file written anew). One
    /// that other handles have open is emptied and shared.
    pub fn create(&self, node: &Node) -> Arc<LocalHandle> {
        self.set_hidden(node, false);
        if is_private(node) {
            return Self::new_handle(node, private_file(), true);
        }
        let file = match self.claim(node) {
            Some(file) => {
                self.empty_file(node, &file);
                file
            }
            None => self.claim_or_insert(node, LocalFile::with(Vec::new(), is_editable(node))),
        };
        file.state().awaits_writes = true;
        Self::new_handle(node, file, true)
    }

    /// A generated file created again after its removal.
    pub fn unhide(&self, node: &Node) {
        self.set_hidden(node, false);
    }

    /// A write through a handle: into the handle's own file.
    pub fn handle_write(&self, handle: &LocalHandle, offset: u64, data: &[u8]) -> VfsResult<u32> {
        if !handle.for_write {
            return Err(VfsError::bad_handle(format!("{}: not open for write", handle.node)));
        }
        self.write_into(&handle.node, &handle.file, offset, data, false)?;
        handle.wrote.store(true, Ordering::SeqCst);
        Ok(data.len() as u32)
    }

    /// A write without a handle (NFS). An edit is journaled before the
    /// write is acknowledged: NFS clients take a WRITE as stable.
    pub async fn write(&self, docs: &dyn Documents, node: &Node, offset: u64, data: &[u8]) -> VfsResult<u32> {
        if self.is_hidden(node) {
            // A removed file, written through an old NFS handle.
            return Err(VfsError::stale(format!("{node} was removed")));
        }
        let file = self.file_for(docs, node, false, false).await?;
        self.write_into(node, &file, offset, data, is_editable(node))?;
        Ok(data.len() as u32)
    }

    /// Applies the edits an earlier run acknowledged over NFS and did not
    /// apply (killed within the idle time). A table directory made by mkdir
    /// is made again for them. A refusal is logged and the edit dropped; a
    /// failure to reach BigQuery keeps it for the next start.
    pub async fn resume_journaled(&self, docs: &dyn Documents) {
        for (path, record) in self.journal.records() {
            let Some((node, content)) = record.filter(|(node, _)| is_editable(node)) else {
                tracing::warn!(journal = %path.display(), "unreadable journaled edit; kept");
                continue;
            };
            if let Err(e) = docs.prepare_replay(&node).await {
                tracing::warn!(%node, error = %e, "cannot apply an NFS edit left by an earlier run; kept");
                continue;
            }
            match docs.apply(&node, &content).await {
                Ok(()) => tracing::info!(%node, "applied an NFS edit left by an earlier run"),
                Err(e) if is_transient(&e) => {
                    tracing::warn!(%node, error = %e, "cannot apply an NFS edit left by an earlier run; kept");
                    continue;
                }
                Err(e) => self.error_log.record(&node.to_string(), e.errno(), e.message()),
            }
            let _ = std::fs::remove_file(&path);
        }
    }

    /// Writes into a local file; `journal`: records the result durably
    /// first (under the file's lock, so that an apply's removal of the record
    /// cannot be overtaken).
    fn write_into(&self, node: &Node, file: &LocalFile, offset: u64, data: &[u8], journal: bool) -> VfsResult<()> {
        let end =
            offset.checked_add(data.len() as u64).filter(|end| *end <= MAX_LOCAL_FILE).ok_or_else(|| too_big(node))?;
        let grows = (end as usize).saturating_sub(file.state().data.len());
        if grows > 0 && self.total() + grows > MAX_LOCAL_TOTAL {
            return Err(VfsError::new(
                libc::ENOSPC,
                format!("{node}: local files hold {MAX_LOCAL_TOTAL} bytes already"),
            ));
        }
        let mut state = file.state();
        if state.data.len() < end as usize {
            state.data.resize(end as usize, 0);
        }
        state.data[offset as usize..end as usize].copy_from_slice(data);
        state.wrote(offset as usize..end as usize);
        touch(&mut state, true);
        if journal {
            self.journal.write(node, state.journaled(node))?;
        }
        Ok(())
    }

    /// `truncate`/`ftruncate`/SETATTR size. Emptying a file without a handle
    /// (NFS's first step of a rewrite) keeps it for the writes to come.
    pub async fn truncate(&self, docs: &dyn Documents, node: &Node, size: u64) -> VfsResult<()> {
        if is_private(node) {
            // Each handle writes its own message; a truncate without a
            // handle (the kernel's O_TRUNC) has nothing to empty.
            return Ok(());
        }
        if size > MAX_LOCAL_FILE {
            return Err(too_big(node));
        }
        let file = self.file_for(docs, node, size == 0, false).await?;
        let mut state = file.state();
        if state.data.len() as u64 != size {
            state.data.resize(size as usize, 0);
            state.cut_news(size as usize);
            touch(&mut state, size > 0);
        }
        if state.handles == 0 {
            state.awaits_writes = true;
            if state.written && is_editable(node) {
                self.journal.write(node, state.journaled(node))?;
            }
        }
        Ok(())
    }

    /// Reads through a handle: its own file's bytes.
    pub fn handle_read(&self, handle: &LocalHandle, offset: u64, len: u32) -> (Bytes, bool) {
        slice(&handle.file.state().data, offset, len)
    }

    /// Reads without a handle (NFS): the local file, or the current document.
    pub async fn read(&self, docs: &dyn Documents, node: &Node, offset: u64, len: u32) -> VfsResult<(Bytes, bool)> {
        match self.get(node) {
            Some(file) => {
                let visible = file.state().visible().0;
                Ok(slice(&visible, offset, len))
            }
            None if matches!(node, Node::Scratch { .. }) => Err(VfsError::not_found(node.to_string())),
            None => {
                let document = docs.current(node).await?.0;
                Ok(slice(&document, offset, len))
            }
        }
    }

    /// close(): applies what this handle wrote. A refusal ends that change
    /// (the handle's later writes continue its bytes and apply again).
    pub async fn flush(&self, docs: &dyn Documents, handle: &LocalHandle) -> VfsResult<()> {
        if !handle.wrote.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        self.apply_local(docs, &handle.node, &handle.file, None).await
    }

    /// fsync(): applies any change of the handle's file (a scratch file
    /// has nothing to apply: it lives here).
    pub async fn fsync(&self, docs: &dyn Documents, handle: &LocalHandle) -> VfsResult<()> {
        handle.wrote.store(false, Ordering::SeqCst);
        self.apply_local(docs, &handle.node, &handle.file, None).await
    }

    /// fsync() without a handle (NFS COMMIT).
    pub async fn fsync_node(&self, docs: &dyn Documents, node: &Node) -> VfsResult<()> {
        match self.get(node) {
            Some(file) => self.apply_local(docs, node, &file, None).await,
            None => Ok(()),
        }
    }

    /// The last release applies what was written and not yet applied; a
    /// file created and not written yet waits for writes without a handle
    /// (NFS creates, then writes); anything else local is dropped, so the
    /// file shows the table again (`touch`, `: > schema.json`).
    pub async fn release(&self, docs: &dyn Documents, handle: &LocalHandle) -> VfsResult<()> {
        // Not only for apply_local: a scratch file is never dropped here.
        if !handle.for_write || !is_editable(&handle.node) {
            if handle.for_write {
                let mut state = handle.file.state();
                state.handles = state.handles.saturating_sub(1);
            }
            return Ok(());
        }
        let (apply, keep, version) = {
            let mut state = handle.file.state();
            state.handles = state.handles.saturating_sub(1);
            let last = state.handles == 0;
            (last && state.written, state.awaits_writes && state.dirty, state.version)
        };
        if apply {
            // No close() reports this: the log and .ciofs/errors do.
            return self.apply_local(docs, &handle.node, &handle.file, None).await;
        }
        if !keep {
            self.drop_if_unchanged(&handle.node, &handle.file, version);
        }
        Ok(())
    }

    /// Applies edits written without a handle once idle (NFS), and drops
    /// files that waited for writes in vain.
    pub async fn apply_idle(&self, docs: &dyn Documents, idle: Duration) {
        for (node, file, due) in self.due(idle) {
            match due {
                // The error is in the log and in .ciofs/errors.
                Due::Apply => drop(self.apply_local(docs, &node, &file, Some(idle)).await),
                Due::Drop(version) => {
                    self.drop_if_unchanged(&node, &file, version);
                    tracing::info!(%node, "created or emptied and never written: nothing applied");
                }
            }
        }
    }

    /// Applies a local file's content to Google, if it is still the file of
    /// its name. With `idle` (no close to report to, NFS), only if the file
    /// is still idle, and a failure to reach BigQuery keeps the edit (and
    /// its journal record) to be tried again, except a publish (see the
    /// module's header). Otherwise the change is over whatever the outcome:
    /// on success the file shows the table's new document, on refusal the
    /// unchanged one (the reason is returned and kept in .ciofs/errors). A
    /// file no handle has open then goes.
    async fn apply_local(
        &self,
        docs: &dyn Documents,
        node: &Node,
        file: &Arc<LocalFile>,
        idle: Option<Duration>,
    ) -> VfsResult<()> {
        // A scratch file has nothing to apply (and must not be dropped).
        if !is_editable(node) {
            return Ok(());
        }
        let _applying = file.applying.lock().await;
        let (data, version) = {
            let mut state = file.state();
            let quiet = state.last_change.map_or(Duration::MAX, |at| at.elapsed());
            let still_idle = idle.is_none_or(|idle| state.handles == 0 && quiet >= idle);
            if !state.dirty || !still_idle {
                return Ok(());
            }
            (state.take_content(node), state.version)
        };
        let private = is_private(node) && !self.get(node).is_some_and(|f| Arc::ptr_eq(&f, file));
        if !private && !self.get(node).is_some_and(|f| Arc::ptr_eq(&f, file)) {
            // Removed (or replaced) while open: like a write to an unlinked file.
            return Ok(());
        }
        let applied = docs.apply(node, &data).await;
        let shown = match &applied {
            Ok(()) => docs.current(node).await.ok(),
            Err(e) if idle.is_some() && is_transient(e) && !is_messages(node) => {
                self.error_log.record(&node.to_string(), e.errno(), &format!("{}; will retry", e.message()));
                // Tried again after another idle time.
                file.state().last_change = Some(Instant::now());
                return Err(e.clone());
            }
            Err(e) => {
                self.error_log.record(&node.to_string(), e.errno(), e.message());
                None
            }
        };
        let settled = {
            let mut state = file.state();
            let settled = state.version == version;
            if settled {
                state.written = false;
                state.dirty = false;
                state.awaits_writes = false;
                state.shown = shown;
                self.journal.forget(node);
            }
            settled && state.handles == 0
        };
        if settled {
            self.drop_if_unchanged(node, file, version);
        }
        applied
    }

    /// `rm` in a table directory: a scratch file goes; an editable or
    /// generated file is hidden (nothing changes in Google).
    pub fn unlink(&self, node: &Node) -> VfsResult<()> {
        self.unlink_at(node, None)
    }

    /// `unlink` of a document whose resource is at `version`: it is
    /// hidden until created again or until the resource changes.
    pub fn unlink_at(&self, node: &Node, version: Option<String>) -> VfsResult<()> {
        let existed = self.remove(node).is_some();
        match node {
            Node::Scratch { .. } if !existed => Err(VfsError::not_found(node.to_string())),
            Node::Scratch { .. } => Ok(()),
            _ => {
                self.hide_at(node, version);
                Ok(())
            }
        }
    }

    /// `mv` within a table directory. Onto an editable file, the content is
    /// applied first (the rename fails if it is refused); an editable file
    /// moved away leaves a local copy and its name hidden.
    pub async fn rename(&self, docs: &dyn Documents, from: &Node, to: &Node) -> VfsResult<()> {
        if from == to {
            return Ok(());
        }
        let data = match self.get(from) {
            Some(file) => file.state().data.clone(),
            None if matches!(from, Node::Scratch { .. }) || self.is_hidden(from) => {
                return Err(VfsError::not_found(from.to_string()));
            }
            None => docs.current(from).await?.0.to_vec(),
        };
        if is_editable(to) {
            self.set_hidden(to, false);
            if let Err(e) = docs.apply(to, &data).await {
                self.error_log.record(&to.to_string(), e.errno(), e.message());
                return Err(e);
            }
            self.remove(to);
        } else if matches!(to, Node::Scratch { .. }) {
            self.insert(to.clone(), LocalFile::with(data, false));
        } else {
            // Onto a generated file: accepted and ignored.
            self.set_hidden(to, false);
        }
        self.remove(from);
        if !matches!(from, Node::Scratch { .. }) {
            self.set_hidden(from, true);
        }
        Ok(())
    }
}

/// `len` bytes of `data` from `offset`, and whether they reach its end.
fn slice(data: &[u8], offset: u64, len: u32) -> (Bytes, bool) {
    let start = (offset as usize).min(data.len());
    let end = start.saturating_add(len as usize).min(data.len());
    (Bytes::copy_from_slice(&data[start..end]), end == data.len())
}

/// Whether a failed apply may succeed later (BigQuery unreachable, or rate
/// limited), as opposed to a refusal.
fn is_transient(error: &VfsError) -> bool {
    matches!(error.errno(), libc::EIO | libc::EDQUOT)
}

fn touch(state: &mut LocalState, written: bool) {
    state.written |= written;
    state.dirty = true;
    state.mtime = Some(SystemTime::now());
    state.last_change = Some(Instant::now());
    state.version += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str) -> Node {
        Node::ObjectMeta { project: "p".into(), bucket: "b".into(), name: name.into() }
    }

    #[test]
    fn a_hidden_name_stays_hidden_only_while_its_resource_is_the_same() {
        let local = LocalFiles::new(std::env::temp_dir().join("ciofs-unused-journal"), Default::default());
        local.hide_at(&meta("a"), Some("generation 1".into()));
        assert!(local.is_hidden_at(&meta("a"), Some("generation 1")));
        assert!(!local.is_hidden_at(&meta("a"), Some("generation 2")), "another object");
        assert!(!local.is_hidden(&meta("a")), "and it is forgotten");
    }

    #[test]
    fn the_hidden_names_are_bounded() {
        let local = LocalFiles::new(std::env::temp_dir().join("ciofs-unused-journal"), Default::default());
        for i in 0..HIDDEN_LIMIT + 10 {
            local.hide_at(&meta(&format!("f{i}")), None);
        }
        let kept = local.hidden.lock().unwrap().names.len();
        assert!(kept <= HIDDEN_LIMIT, "{kept}");
        assert!(local.is_hidden(&meta(&format!("f{}", HIDDEN_LIMIT + 9))), "the newest stay");
    }
}
