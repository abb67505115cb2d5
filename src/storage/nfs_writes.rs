//! Writes without a handle (NFS has no open or close): each goes into the
//! inode's unattended writer (write.rs), made by the first WRITE, and an
//! idle commit uploads the writer once its writes stopped for a while.
//!
//! What a WRITE's answer promises (nfsserve answers every WRITE as
//! FILE_SYNC, and clients then never send COMMIT): its bytes are in the
//! writer's staging file and on disk (fdatasync), and a journal record
//! beside that file names the object and the generation the writes
//! replace. So a kill -9, a crash of the machine, or a restart leaves the
//! bytes where the next start finds them: it takes each record back as an
//! unattended writer (reads see it, further WRITEs go into it) and uploads
//! it after the same idle time as any write, retrying with backoff while
//! the service is away.
//!
//! A record exists only while its staging file holds bytes Cloud Storage
//! does not have: an upload removes it, the next WRITE writes it again
//! with the new base generation. An upload refused because the object was
//! changed by someone else keeps the bytes: the staging file moves to the
//! state directory's `conflicts/` and `.ciofs/errors` says where.
//!
//! Each writer's staging file has a name of its own, made with O_EXCL, so
//! two first WRITEs that race cannot truncate each other's bytes; the one
//! that loses the race to the writers' table leaves nothing behind.
//!
//! The same journal keeps what a shutdown could not wait for
//! (`keep_unsaved`): a file written through a handle whose upload did not
//! finish in time is copied into it, and the next start uploads it as it
//! does what NFS clients left.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ciofs_backends::sync::lock;
use ciofs_frontends::{Ino, VfsError, VfsResult};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use super::tree::StorageTree;
use super::unattended::{JournalFiles, Retry};
use super::writer::{Base, Staged, Writer, io_error, staged_in, staging_crc32c, walk_staging};
use crate::core::node::Node;
use crate::core::private_files::{self, Open};

/// A clean writer (all of it uploaded) stays this long after its last
/// write, so that a client that pauses and writes on does not make the
/// next write fetch the whole object again; then it goes.
const LINGER: Duration = Duration::from_secs(30);

/// Writers uploaded at once by one idle commit.
const CONCURRENT_UPLOADS: usize = 4;

/// What a journal record says about a staging file.
#[derive(Serialize, Deserialize)]
struct JournalRecord {
    /// Absent in records of earlier versions: the first project served.
    #[serde(default)]
    project: Option<String>,
    bucket: String,
    name: String,
    /// The generation the writes replace (None: a new object).
    base_generation: Option<i64>,
    /// What failed uploads of this writer may have stored (size, CRC32C):
    /// an object found holding one of these is its own upload, not another
    /// writer's (`Staged::unconfirmed`).
    #[serde(default)]
    unconfirmed: Vec<(u64, u32)>,
}

/// Moves `file` into `dir` as `BASE.N` with the first N no file has: a
/// hard link fails rather than replace one, so no kept file is lost.
fn keep_under_new_name(file: &Path, dir: &Path, base: &str) -> std::io::Result<PathBuf> {
    let mut n = 0u64;
    loop {
        let target = dir.join(format!("{base}.{n}"));
        match std::fs::hard_link(file, &target) {
            Ok(()) => {
                std::fs::remove_file(file)?;
                return Ok(target);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => n += 1,
            Err(e) => return Err(e),
        }
    }
}

impl StorageTree {
    fn journal_dir(&self) -> PathBuf {
        self.cx.options.staging_dir.join("nfs")
    }

    /// A WRITE without a handle: into the inode's unattended writer, made
    /// by the first one. Answered once the bytes are on disk.
    pub async fn unattended_write(&self, ino: Ino, offset: u64, data: &[u8]) -> VfsResult<u32> {
        loop {
            let writer = self.unattended_writer(ino).await?;
            writer.waiting.fetch_add(1, Ordering::SeqCst);
            let mut staged = writer.staged.lock().await;
            writer.waiting.fetch_sub(1, Ordering::SeqCst);
            if staged.retired {
                // Its upload completed and it went while this write waited:
                // the next writer starts from what was uploaded.
                continue;
            }
            let written = match self.before_journaled_change(&mut staged).await {
                Ok(()) => match self.staged_write(&mut staged, offset, data, false).await {
                    Ok(n) => self.after_journaled_change(&staged).map(|()| n),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            writer.record(&staged);
            writer.touch();
            return written;
        }
    }

    /// The inode's writer, or a new unattended one. Two first WRITEs may
    /// race here: the table keeps the first made, and the other's staging
    /// file is removed.
    async fn unattended_writer(&self, ino: Ino) -> VfsResult<Arc<Writer>> {
        let node = self.cx.node(ino)?;
        self.cx.still_named(ino, &node)?;
        if let Some(writer) = self.writer(ino) {
            return Ok(writer);
        }
        if !matches!(node, Node::Object { .. }) {
            return Err(VfsError::is_dir(format!("{node}: is a directory")));
        }
        self.refuse_objects_if_config_only(&node)?;
        let base = self.existing_object(&node).await?;
        let staged = self.stage_journaled(&node, base, ino)?;
        let mut writers = lock(&self.writers);
        // Removed while the object was looked up: the file must not come
        // back through a handle of the removed one.
        if let Err(e) = self.cx.still_named(ino, &node) {
            let mut lost = staged;
            self.forget_journal(&mut lost);
            return Err(e);
        }
        if let Some(writer) = writers.get(&ino) {
            let mut lost = staged;
            self.forget_journal(&mut lost);
            return Ok(writer.clone());
        }
        let writer = Arc::new(Writer::unattended(node, staged));
        writers.insert(ino, writer.clone());
        Ok(writer)
    }

    /// A staging file of its own for writes without a handle, in the
    /// journal directory so that it survives a crash.
    fn stage_journaled(
        &self,
        node: &Node,
        base: Option<Arc<ciofs_backends::gcs::ObjectMeta>>,
        ino: Ino,
    ) -> VfsResult<Staged> {
        let Node::Object { project, bucket, name } = node else {
            return Err(VfsError::is_dir(format!("{node}: not an object")));
        };
        let (file, data) = self.new_journal_file(ino)?;
        let files = JournalFiles { record: data.with_extension("json"), data, project: project.clone() };
        Ok(staged_in(bucket, name, file, base.map_or(Base::New, Base::Object), false, Some(files)))
    }

    /// A new staging file of inode `ino` in the journal directory, 0600
    /// and kept; its path.
    fn new_journal_file(&self, ino: Ino) -> VfsResult<(std::fs::File, PathBuf)> {
        let dir = self.journal_dir();
        private_files::private_dir(&dir).map_err(|e| io_error(&format!("journal directory {}", dir.display()), e))?;
        tempfile::Builder::new()
            .prefix(&format!("{ino:016x}."))
            .suffix(".data")
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .tempfile_in(&dir)
            .and_then(|f| f.keep().map_err(|e| e.error))
            .map_err(|e| io_error("journaled staging file", e))
    }

    /// Before a change to a journaled staging file (a WRITE, a SETATTR
    /// size): the base's bytes are in it, and its journal record is on
    /// disk, written first so that a crash after the change finds the
    /// record, and a record that cannot be written fails the call before
    /// anything changed.
    pub async fn before_journaled_change(&self, staged: &mut Staged) -> VfsResult<()> {
        self.fill(staged).await?;
        if let Base::Generation(journaled) = staged.base {
            // Taken back from a journal: which object the bytes replace is
            // found out before they change (the run that left them may have
            // uploaded them), and the record says it from then on. Until
            // Cloud Storage answers, the client is asked to try again.
            self.known_base(staged).await.map_err(|e| {
                VfsError::new(libc::EAGAIN, format!("{}; the write waits for Cloud Storage", e.message()))
            })?;
            if staged.base.generation() != journaled {
                staged.journaled = false;
            }
        }
        if staged.journaled {
            return Ok(());
        }
        self.write_journal_record(staged)
    }

    /// Writes the journal record of a journaled staging file: its object,
    /// the generation its bytes replace, and what failed uploads may have
    /// stored.
    fn write_journal_record(&self, staged: &mut Staged) -> VfsResult<()> {
        let Some(files) = staged.journal.as_ref() else { return Ok(()) };
        let record = JournalRecord {
            project: Some(files.project.clone()),
            bucket: staged.bucket.clone(),
            name: staged.name.clone(),
            base_generation: match staged.base {
                Base::New => None,
                Base::Object(ref meta) => Some(meta.generation),
                Base::Generation(generation) => Some(generation),
            },
            unconfirmed: staged.unconfirmed.clone(),
        };
        write_record(&files.record, &record)?;
        staged.journaled = true;
        Ok(())
    }

    /// After the change: FILE_SYNC, its bytes are on disk before the call
    /// is answered.
    pub fn after_journaled_change(&self, staged: &Staged) -> VfsResult<()> {
        if staged.journal.is_some() {
            staged.file.sync_data().map_err(|e| io_error("journaled staging file", e))?;
        }
        Ok(())
    }

    /// Removes a writer's journal: its record (nothing is left to replay)
    /// and, when it goes, its staging file.
    pub fn forget_journal(&self, staged: &mut Staged) {
        if let Some(files) = staged.journal.take() {
            let _ = std::fs::remove_file(files.record);
            let _ = std::fs::remove_file(files.data);
        }
        staged.journaled = false;
    }

    /// Uploads the unattended writers whose writes stopped `idle` ago and
    /// whose retry is due (several at once), and lets clean ones that
    /// stayed idle go.
    pub async fn commit_idle_writers(&self, idle: Duration) {
        let due: Vec<(Ino, Arc<Writer>)> = {
            let writers = lock(&self.writers);
            writers.iter().filter(|(_, w)| w.unattended && w.idle_for() >= idle).map(|(i, w)| (*i, w.clone())).collect()
        };
        let all_now = idle.is_zero();
        futures::stream::iter(due)
            .for_each_concurrent(CONCURRENT_UPLOADS, |(ino, writer)| async move {
                self.commit_unattended(ino, &writer, all_now).await;
            })
            .await;
    }

    async fn commit_unattended(&self, ino: Ino, writer: &Arc<Writer>, all_now: bool) {
        let mut staged = writer.staged.lock().await;
        if staged.retired || !(all_now || staged.retry.due()) {
            return;
        }
        let committed = self.commit(&mut staged).await;
        match committed {
            Ok(()) => {
                staged.retry = Retry::default();
                let nobody_waits = writer.waiting.load(Ordering::SeqCst) == 0;
                if staged.unlinked || (nobody_waits && (all_now || writer.idle_for() >= LINGER)) {
                    self.retire(ino, writer, &mut staged);
                }
            }
            Err(e) if e.errno() == libc::ESTALE => {
                let kept = self.keep_conflict(&mut staged);
                let path = writer.node().to_string();
                self.cx.error_log.record(&path, e.errno(), &format!("{e}; the bytes written are kept in {kept}"));
                self.retire(ino, writer, &mut staged);
            }
            Err(e) => {
                // What the failed upload may have stored goes into the
                // record, so that a restart still knows it as its own.
                if staged.journaled
                    && let Err(e) = self.write_journal_record(&mut staged)
                {
                    tracing::warn!(error = %e, "cannot rewrite a journal record");
                }
                let wait = staged.retry.failed();
                let path = writer.node().to_string();
                self.cx.error_log.record(&path, e.errno(), &format!("{e}; will retry in {} s", wait.as_secs().max(1)));
            }
        }
        writer.record(&staged);
    }

    /// Moves a writer's staging file, which cannot be uploaded over the
    /// object someone else changed, to `conflicts/BUCKET/` in the state
    /// directory, under the object's name, the time and a number that makes
    /// it new (two writers of one object may give up within a second);
    /// where it went.
    fn keep_conflict(&self, staged: &mut Staged) -> String {
        let Some(files) = staged.journal.take() else { return "nowhere (not journaled)".to_string() };
        let dir = self.journal_dir().join("conflicts").join(&staged.bucket);
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S");
        let base = format!("{}.{stamp}", staged.name.replace('/', "%2F"));
        let kept = private_files::private_dir(&dir).and_then(|()| keep_under_new_name(&files.data, &dir, &base));
        let _ = std::fs::remove_file(&files.record);
        match kept {
            Ok(target) => target.display().to_string(),
            Err(e) => {
                tracing::error!(error = %e, file = %files.data.display(), "cannot move a conflicting staging file");
                files.data.display().to_string()
            }
        }
    }

    /// Takes back what NFS clients wrote before a crash or a restart: each
    /// journal record becomes an unattended writer again, uploaded after the
    /// usual idle time. Staging files without a record (uploaded already)
    /// are removed.
    pub async fn resume_journaled_uploads(&self) {
        let Ok(entries) = std::fs::read_dir(self.journal_dir()) else { return };
        let mut files: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        files.sort();
        for path in &files {
            match path.extension().and_then(|e| e.to_str()) {
                Some("json") => {
                    if let Err(e) = self.adopt(path) {
                        tracing::warn!(journal = %path.display(), error = %e, "cannot take back journaled NFS writes; kept");
                    }
                }
                Some("data") if !path.with_extension("json").exists() => {
                    let _ = std::fs::remove_file(path);
                }
                _ => {}
            }
        }
    }

    /// One journal record back as an unattended writer.
    fn adopt(&self, record_path: &Path) -> Result<(), String> {
        let file = private_files::open(record_path, Open::Read).map_err(|e| e.to_string())?;
        let record: JournalRecord = serde_json::from_reader(file).map_err(|e| e.to_string())?;
        let data_path = record_path.with_extension("data");
        let data = private_files::open(&data_path, Open::ReadWrite).map_err(|e| e.to_string())?;
        let size = data.metadata().map_err(|e| e.to_string())?.len();
        let project = record.project.or_else(|| self.cx.projects.first().cloned()).ok_or("no project")?;
        let node = Node::Object { project: project.clone(), bucket: record.bucket.clone(), name: record.name.clone() };
        let (ino, _) = self.cx.inodes.remember(&node);
        let base = Base::Generation(record.base_generation.unwrap_or(0));
        let files = JournalFiles { data: data_path, record: record_path.to_path_buf(), project: project.clone() };
        let content = staging_crc32c(&data, size).map_err(|e| e.to_string())?;
        let mut staged = staged_in(&record.bucket, &record.name, data, base, false, Some(files));
        staged.restore(size);
        staged.unconfirmed = record.unconfirmed;
        staged.unconfirmed.push((size, content));
        let writer = Arc::new(Writer::unattended(node, staged));
        let mut writers = lock(&self.writers);
        if writers.contains_key(&ino) {
            return Err(format!("{} has writes in another journal record", record.name));
        }
        writers.insert(ino, writer);
        tracing::info!(bucket = %record.bucket, name = %record.name, size, "took back NFS writes left by an earlier run");
        Ok(())
    }
}

impl StorageTree {
    /// The files being written whose bytes Cloud Storage does not have
    /// yet: open with unsaved writes, or uploading.
    pub fn unsaved_files(&self) -> Vec<String> {
        let writers = lock(&self.writers);
        writers.values().filter(|w| w.state().unsaved).map(|w| w.node().to_string()).collect()
    }

    /// Whether any file is unsaved (see `unsaved_files`), without naming
    /// them: what a shutdown's wait asks every few milliseconds.
    pub fn has_unsaved(&self) -> bool {
        lock(&self.writers).values().any(|w| w.state().unsaved)
    }

    /// Keeps each unsaved file for the next start, which uploads it (as
    /// `resume_journaled_uploads` does what NFS clients left): a writer
    /// without a journal has its staging file copied into the journal
    /// directory with a record; an unattended one is journaled already.
    /// Read without the writer's lock, which an upload under way holds.
    /// Each file's path, and where it is kept or why it could not be.
    pub fn keep_unsaved(&self) -> Vec<(String, Result<String, String>)> {
        let writers: Vec<(Ino, Arc<Writer>)> = {
            let writers = lock(&self.writers);
            writers.iter().filter(|(_, w)| w.state().unsaved).map(|(i, w)| (*i, w.clone())).collect()
        };
        writers
            .into_iter()
            .map(|(ino, writer)| {
                let kept = if writer.unattended {
                    Ok(format!("the journal in {}", self.journal_dir().display()))
                } else {
                    self.journal_copy(ino, &writer).map(|record| record.display().to_string())
                };
                (writer.node().to_string(), kept)
            })
            .collect()
    }

    /// Copies a writer's staging file into the journal directory, synced,
    /// then writes its record; the record's path.
    fn journal_copy(&self, ino: Ino, writer: &Writer) -> Result<PathBuf, String> {
        let Node::Object { project, bucket, name } = writer.node() else {
            return Err("not an object".to_string());
        };
        let state = writer.state();
        if !state.staged_whole {
            return Err("its earlier bytes were never fetched: what was written since is lost".to_string());
        }
        let (mut copy, data) = self.new_journal_file(ino).map_err(|e| e.message().to_string())?;
        let copied = walk_staging(&writer.file, state.size, |chunk| std::io::Write::write_all(&mut copy, chunk))
            .and_then(|()| copy.sync_all());
        if let Err(e) = copied {
            let _ = std::fs::remove_file(&data);
            return Err(format!("copying the staging file: {e}"));
        }
        let record = JournalRecord {
            project: Some(project),
            bucket,
            name,
            base_generation: Some(state.base_generation).filter(|g| *g != 0),
            // What failed uploads may have stored: the next start takes
            // such an object for this file's, not for someone else's.
            unconfirmed: lock(&writer.unconfirmed).clone(),
        };
        let path = data.with_extension("json");
        write_record(&path, &record).map_err(|e| e.message().to_string())?;
        Ok(path)
    }
}

/// Writes journal record `record` at `path`, replacing what was there.
fn write_record(path: &Path, record: &JournalRecord) -> VfsResult<()> {
    let text = serde_json::to_vec(record).map_err(|e| VfsError::io(e.to_string()))?;
    private_files::replace(path, &text).map_err(|e| io_error("journal record", e))
}
