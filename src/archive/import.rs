//! `ciofs import --project Q FILE`: an archive (from `tar c` of a mount or
//! `ciofs export`) planned against project Q, then applied through the same
//! `Vfs` a mount serves, so every change is checked as an edit through the
//! mount is. The plan says of each entry: create, update (with the fields
//! that differ), unchanged, conflict (and why) or invalid (and why);
//! generated files (`_status.json`, `_stream` ...) are ignored. A second
//! import of the same archive finds everything unchanged and writes nothing.
//!
//! Memory stays bounded whatever the archive holds: it is read twice. The
//! plan keeps the documents (small) and, of each object, its size and the
//! hashes Cloud Storage keeps (md5, crc32c), compared with the target's
//! `.meta/` document; applying streams each object from the archive again
//! into the mount's writes. A document past `MAX_DOCUMENT` is invalid and
//! not read; an archive whose plan would pass `MAX_PLAN` is refused.

use std::cell::Cell;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use md5::{Digest, Md5};

use ciofs_frontends::{FileKind, Ino, OpenFlags, ROOT_INO, Vfs, VfsError};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use tokio::runtime::Handle;

use crate::bigquery::documents::parse_schema;
use crate::bigquery::rules::check_schema_change;
use crate::core::macos::is_macos_metadata;
use crate::core::node::{Node, Service, TableFile};

/// What to do with a resource that exists in the target and differs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OnConflict {
    /// Leave it as it is, apply the rest.
    Skip,
    /// Apply nothing at all.
    Fail,
    /// Write the archive's version over it.
    Overwrite,
}

pub struct ImportOptions {
    pub dry_run: bool,
    pub on_conflict: OnConflict,
    /// `OLD=NEW`: bucket OLD of the archive is imported as NEW.
    pub map_bucket: Vec<(String, String)>,
    /// Import macOS's metadata files (an archive made on a Mac holds
    /// `._*`, `.DS_Store` ...) as objects; otherwise they are ignored, as a
    /// mount keeps them local (core/macos.rs).
    pub upload_macos_files: bool,
}

/// One entry of the archive, its path without the source project's name.
pub struct Entry {
    /// Its place among the archive's entries, to find it again.
    pub index: usize,
    pub path: String,
    pub dir: bool,
    /// A document's bytes; objects are read from the archive again when
    /// applied.
    pub data: Vec<u8>,
    /// An object's size and hashes.
    pub object: Option<ObjectDigest>,
}

/// What Cloud Storage would say of an object with an entry's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectDigest {
    pub size: u64,
    /// Base64, as the JSON API and `.meta/` documents show them.
    pub md5: String,
    pub crc32c: String,
}

/// A document larger than this is refused: none that ciofs shows comes
/// near, and documents are held in memory.
const MAX_DOCUMENT: u64 = 16 << 20;
/// The most the plan holds in all: documents, paths and each entry's
/// record. An archive past it is refused, not held: it is a bound on
/// memory, far above a project's configuration, but reached by an export of
/// buckets with about a million objects (each has a `.meta/` document).
const MAX_PLAN: u64 = 512 << 20;
/// How much of an object one read of the archive takes.
const PIECE: usize = 1 << 20;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Create,
    Update(Vec<String>),
    Unchanged,
    Ignored,
    Conflict(String),
    Invalid(String),
}

pub struct Planned {
    pub entry: Entry,
    pub action: Action,
}

/// Counts of a plan and of what applying it did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImportSummary {
    pub created: u64,
    pub updated: u64,
    pub unchanged: u64,
    pub conflicts: u64,
    pub invalid: u64,
    pub failed: u64,
}

/// Names the service makes: accepted in an archive, never written.
const GENERATED: [&str; 6] = ["_status.json", "_quotas.json", "_stream", "_stream.jsonl", "_message", "_messages"];
/// Fields of the documents the service sets: not compared.
const SERVICE_FIELDS: [&str; 16] = [
    "version",
    "type",
    "created",
    "modified",
    "updated",
    "etag",
    "generation",
    "metageneration",
    "size",
    "md5_hash",
    "crc32c",
    "dataset_id",
    "bucket",
    "name",
    "storage_class",
    "location_type",
];

/// The archive file an import reads twice: a regular file (a pipe could
/// not be read again), which must not change in between.
pub struct ArchiveFile {
    path: std::path::PathBuf,
    /// Its size and modification time when planned.
    stamp: (u64, Option<std::time::SystemTime>),
}

impl ArchiveFile {
    pub fn new(path: &Path) -> Result<Self, String> {
        Ok(Self { path: path.to_path_buf(), stamp: stamp(path)? })
    }

    /// Opens it again, unchanged since it was planned.
    fn reopen(&self) -> Result<Pass, String> {
        if stamp(&self.path)? != self.stamp {
            return Err(format!("{}: the archive changed since it was planned; nothing applied", self.path.display()));
        }
        Pass::open(&self.path)
    }
}

fn stamp(path: &Path) -> Result<(u64, Option<std::time::SystemTime>), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "{}: not a regular file (an import reads the archive twice): save it to a file first",
            path.display()
        ));
    }
    Ok((meta.len(), meta.modified().ok()))
}

/// The most the tar reader reads by itself between two entries: their
/// headers and the extension entries it holds in memory (GNU long names,
/// PAX extended headers, sparse maps). Real ones take a few KiB.
const MAX_HEADERS: u64 = 1 << 20;

/// One read through an archive, tar or gzip-compressed tar.
struct Pass {
    archive: tar::Archive<Bounded>,
    /// What the tar reader may still read by itself; None while an entry's
    /// data are read.
    budget: Rc<Cell<Option<u64>>>,
}

/// An entry as a pass gives it.
type ArchiveEntry<'a> = tar::Entry<'a, Bounded>;

impl Pass {
    fn open(path: &Path) -> Result<Self, String> {
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut file = BufReader::new(file);
        let gzip = file.fill_buf().map_err(|e| format!("reading the archive: {e}"))?.starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn Read> = if gzip { Box::new(flate2::read::GzDecoder::new(file)) } else { Box::new(file) };
        let budget = Rc::new(Cell::new(Some(MAX_HEADERS)));
        Ok(Self { archive: tar::Archive::new(Bounded { inner: reader, budget: budget.clone() }), budget })
    }

    /// Calls `visit` with each entry and its place in the archive. What
    /// `visit` leaves unread of an entry is read through here, so that the
    /// tar reader, which holds what it reads by itself, is held to
    /// `MAX_HEADERS` between two entries.
    fn for_each(
        &mut self,
        mut visit: impl FnMut(usize, &mut ArchiveEntry) -> Result<(), String>,
    ) -> Result<(), String> {
        let not_a_tar = |e: std::io::Error| format!("the archive is not a tar: {e}");
        for (index, entry) in self.archive.entries().map_err(not_a_tar)?.enumerate() {
            let mut entry = entry.map_err(not_a_tar)?;
            self.budget.set(None);
            visit(index, &mut entry)?;
            std::io::copy(&mut entry, &mut std::io::sink()).map_err(|e| format!("reading the archive: {e}"))?;
            self.budget.set(Some(MAX_HEADERS));
        }
        Ok(())
    }
}

/// The archive's bytes as the tar reader sees them, each read counted
/// against the budget while there is one.
struct Bounded {
    inner: Box<dyn Read>,
    budget: Rc<Cell<Option<u64>>>,
}

impl Read for Bounded {
    fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
        let Some(left) = self.budget.get() else { return self.inner.read(buffer) };
        if left == 0 && !buffer.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "an entry's headers (a long name, a PAX extended header) take more than {} MiB",
                    MAX_HEADERS >> 20
                ),
            ));
        }
        let most = buffer.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buffer[..most])?;
        self.budget.set(Some(left - n as u64));
        Ok(n)
    }
}

/// Reads an archive; entries that cannot be imported (links, absolute
/// paths, `..`, unknown top-level directories, oversized documents) come
/// back as invalid with the reason.
pub fn read_archive(file: &ArchiveFile, options: &ImportOptions) -> Result<Vec<Planned>, String> {
    let mut planned = Vec::new();
    let mut held = 0u64;
    file.reopen()?.for_each(|index, entry| {
        let raw = String::from_utf8_lossy(&entry.path_bytes()).to_string();
        let kind = entry.header().entry_type();
        let (path, mut problem) = match relative_path(&raw, options) {
            Ok(path) => (path, None),
            Err(why) => (raw.clone(), Some(why)),
        };
        if path.is_empty() {
            return Ok(());
        }
        if !kind.is_file() && !kind.is_dir() {
            problem = problem.or_else(|| Some("only directories and regular files are imported".to_string()));
        }
        let parts: Vec<&str> = path.split('/').collect();
        if problem.is_none() && node_of(&parts, kind.is_dir()).is_none() {
            problem = Some("no file or directory of a project has this path (see the README's tree)".to_string());
        }
        let (mut data, mut object) = (Vec::new(), None);
        if kind.is_file() && problem.is_none() {
            if is_object(&parts) {
                object = Some(digest(entry).map_err(|e| format!("{raw}: {e}"))?);
            } else {
                // Generated documents too: `_status.json` tells a view.
                if entry.size() > MAX_DOCUMENT {
                    let limit = MAX_DOCUMENT >> 20;
                    problem = Some(format!("{} bytes: more than the {limit} MiB a document may have", entry.size()));
                } else {
                    held = within_plan(held, entry.size(), planned.len())?;
                    // Exactly its size: read_to_end alone doubles as it grows.
                    data = Vec::with_capacity(entry.size() as usize);
                    entry.read_to_end(&mut data).map_err(|e| format!("{raw}: {e}"))?;
                }
            }
        }
        let macos = !options.upload_macos_files && parts.iter().any(|part| is_macos_metadata(part));
        let action = match problem {
            Some(why) => Action::Invalid(why),
            None if macos => Action::Ignored,
            None => Action::Create,
        };
        let entry = Entry { index, path, dir: kind.is_dir(), data, object };
        held = within_plan(held, entry.overhead(), planned.len())?;
        planned.push(Planned { entry, action });
        Ok(())
    })?;
    Ok(planned)
}

/// `held` bytes of plan and `more`, if that stays within `MAX_PLAN`.
fn within_plan(held: u64, more: u64, entries: usize) -> Result<u64, String> {
    let total = held.saturating_add(more);
    if total > MAX_PLAN {
        return Err(format!(
            "the archive needs more than {} MiB of memory to plan (ciofs import holds its documents and a \
             record of each entry; {entries} entries read): import it in parts, e.g. a few buckets per archive",
            MAX_PLAN >> 20
        ));
    }
    Ok(total)
}

impl Entry {
    /// What the entry holds besides its document's bytes.
    fn overhead(&self) -> u64 {
        let digest = self.object.as_ref().map_or(0, |d| d.md5.len() + d.crc32c.len());
        (std::mem::size_of::<Planned>() + self.path.len() + digest) as u64
    }
}

/// An object entry's size and hashes, read through once.
fn digest(reader: &mut impl Read) -> std::io::Result<ObjectDigest> {
    let (mut md5, mut crc, mut size) = (Md5::new(), 0u32, 0u64);
    let mut buffer = vec![0; PIECE];
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        md5.update(&buffer[..n]);
        crc = crc32c::crc32c_append(crc, &buffer[..n]);
        size += n as u64;
    }
    Ok(ObjectDigest { size, md5: BASE64.encode(md5.finalize()), crc32c: BASE64.encode(crc.to_be_bytes()) })
}

/// `P/storage/b/x` or `storage/b/x` → `storage/b/x`, buckets mapped.
fn relative_path(raw: &str, options: &ImportOptions) -> Result<String, String> {
    if raw.starts_with('/') {
        return Err("absolute path".to_string());
    }
    let parts: Vec<&str> = raw.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        return Err("`..` in the path".to_string());
    }
    let service = |part: Option<&&str>| part.and_then(|p| Service::from_dir_name(p));
    let parts = match parts.first() {
        None => return Ok(String::new()),
        Some(_) if service(parts.first()).is_some() => &parts[..],
        Some(_) => &parts[1..],
    };
    match parts.first() {
        None => return Ok(String::new()),
        Some(_) if service(parts.first()).is_some() => {}
        Some(other) => return Err(format!("unknown top-level directory {other:?}")),
    }
    let storage = service(parts.first()) == Some(Service::Storage);
    let mut parts: Vec<String> = parts.iter().map(|p| p.to_string()).collect();
    if storage
        && let Some(bucket) = parts.get_mut(1)
        && let Some((_, new)) = options.map_bucket.iter().find(|(old, _)| old == bucket)
    {
        *bucket = new.clone();
    }
    Ok(parts.join("/"))
}

/// Plans each entry against project `project` of `vfs`; runs off the
/// runtime's threads.
pub fn plan<V: Vfs + ?Sized>(
    vfs: &Arc<V>,
    runtime: &Handle,
    project: &str,
    planned: &mut [Planned],
) -> Result<(), String> {
    let root = runtime.block_on(vfs.lookup(ROOT_INO, project)).map_err(|e| format!("project {project}: {e}"))?.ino;
    let views = views(planned);
    let mut existing_buckets: Vec<String> = Vec::new();
    for item in planned.iter_mut() {
        if matches!(item.action, Action::Invalid(_) | Action::Ignored) {
            continue;
        }
        let path = item.entry.path.clone();
        let parts: Vec<&str> = path.split('/').collect();
        let name = parts.last().copied().unwrap_or_default();
        if !item.entry.dir && GENERATED.contains(&name) {
            item.action = Action::Ignored;
            continue;
        }
        let is_document = !item.entry.dir && name.ends_with(".json") && !is_object(&parts);
        let archive_doc = if is_document {
            match serde_json::from_slice::<Value>(&item.entry.data) {
                Ok(value) => Some(value),
                Err(e) => {
                    item.action = Action::Invalid(format!("not valid JSON: {e}"));
                    continue;
                }
            }
        } else {
            None
        };
        let Some(found) = find(vfs, runtime, root, &parts) else {
            // A new table's schema is checked now: with --on-conflict fail,
            // one that BigQuery would refuse stops the import before
            // anything is written.
            item.action = match name {
                _ if matches!(node_of(&parts, false), Some(Node::TableFile { file: TableFile::Schema, .. })) => {
                    let table = path.trim_end_matches("/schema.json");
                    match views.get(table) {
                        // BigQuery derives a view's schema from its query.
                        Some(View::WithQuery) => Action::Create,
                        Some(View::WithoutQuery) => Action::Invalid(
                            "a view whose query the archive's config.json lacks (view_query): it cannot be made"
                                .to_string(),
                        ),
                        None => match parse_schema(&item.entry.data) {
                            Ok(_) => Action::Create,
                            Err(e) => Action::Invalid(e.to_string()),
                        },
                    }
                }
                _ => Action::Create,
            };
            continue;
        };
        if item.entry.dir {
            if let Some(Node::Dir { bucket, prefix, .. }) = node_of(&parts, true)
                && prefix.is_empty()
            {
                existing_buckets.push(bucket);
            }
            item.action = Action::Unchanged;
            continue;
        }
        if let Some(digest) = &item.entry.object {
            item.action = compare_object(vfs, runtime, root, &parts, digest);
            continue;
        }
        let current = match read_file(vfs, runtime, found) {
            Ok(current) => current,
            Err(e) => {
                item.action = Action::Conflict(format!("cannot read what is there: {e}"));
                continue;
            }
        };
        item.action = match archive_doc {
            Some(mut wanted) => {
                if is_object_document(&parts) && wanted.get("content_type").is_some_and(Value::is_null) {
                    // No content type recorded (fake-gcs-server keeps none
                    // for an upload without one; Cloud Storage always has
                    // one): nothing to compare.
                    wanted.as_object_mut().map(|fields| fields.remove("content_type"));
                }
                compare_documents(name, &current, &wanted)
            }
            None if current == item.entry.data => Action::Unchanged,
            None => Action::Conflict("the file exists with other content".to_string()),
        };
    }
    for bucket in existing_buckets {
        mark_bucket_conflict(planned, &bucket);
    }
    Ok(())
}

/// What the archive says of a view table.
enum View {
    WithQuery,
    WithoutQuery,
}

/// The archive's views, by table directory (`bigquery/DS/T`): a table whose
/// config.json has a (materialized) view query, or whose `_status.json`
/// says it is a view.
fn views(planned: &[Planned]) -> std::collections::HashMap<String, View> {
    let mut views = std::collections::HashMap::new();
    for item in planned.iter().filter(|p| p.entry.path.starts_with("bigquery/")) {
        let Some((table, file)) = item.entry.path.rsplit_once('/') else { continue };
        let Ok(document) = serde_json::from_slice::<Value>(&item.entry.data) else { continue };
        let field = |key: &str| document.get(key).is_some_and(|v| !v.is_null());
        match file {
            "config.json" if field("view_query") || field("materialized_view_query") => {
                views.insert(table.to_string(), View::WithQuery);
            }
            "_status.json" => {
                let kind = document.get("table_type").and_then(Value::as_str).unwrap_or_default();
                if kind.contains("VIEW") {
                    views.entry(table.to_string()).or_insert(View::WithoutQuery);
                }
            }
            _ => {}
        }
    }
    views
}

/// A bucket that exists (bucket names are global: it may be another
/// project's) takes nothing from the archive: if anything in it would be
/// created or changed, the bucket and those entries are conflicts. An
/// import of the same archive again finds it all unchanged.
fn mark_bucket_conflict(planned: &mut [Planned], bucket: &str) {
    let prefix = format!("storage/{bucket}");
    let inside = |p: &Planned| p.entry.path == prefix || p.entry.path.starts_with(&format!("{prefix}/"));
    let changes =
        planned.iter().filter(|p| inside(p)).any(|p| !matches!(p.action, Action::Unchanged | Action::Ignored));
    if !changes {
        return;
    }
    let why = format!("bucket {bucket} exists (bucket names are global: --map-bucket {bucket}=NEW)");
    for item in planned.iter_mut().filter(|p| inside(p)) {
        if item.entry.path == prefix || matches!(item.action, Action::Create | Action::Update(_)) {
            item.action = Action::Conflict(why.clone());
        }
    }
}

/// An archive document against the target's: unchanged, an update with
/// the fields that differ, or a conflict when BigQuery would refuse it.
fn compare_documents(name: &str, current: &[u8], wanted: &Value) -> Action {
    let current: Value = serde_json::from_slice(current).unwrap_or(Value::Null);
    let mut diffs = Vec::new();
    if let Value::Object(fields) = wanted {
        for (key, value) in fields.iter().filter(|(k, _)| !SERVICE_FIELDS.contains(&k.as_str())) {
            let now = current.get(key).unwrap_or(&Value::Null);
            if now != value {
                diffs.push(format!("{key}: {now} → {value}"));
            }
        }
    }
    if diffs.is_empty() {
        return Action::Unchanged;
    }
    if name == "schema.json" {
        let old = parse_schema(current.to_string().as_bytes());
        let new = parse_schema(wanted.to_string().as_bytes());
        match (old, new) {
            (Ok(old), Ok(new)) => {
                if let Err(e) = check_schema_change(&old, &new) {
                    return Action::Conflict(e.to_string());
                }
            }
            (_, Err(e)) => return Action::Invalid(e.to_string()),
            (Err(_), _) => {}
        }
    }
    Action::Update(diffs)
}

/// An object entry against the target's object, by the size and hashes
/// of its `.meta/` document (md5, or crc32c for a composite object).
fn compare_object<V: Vfs + ?Sized>(
    vfs: &Arc<V>,
    runtime: &Handle,
    root: Ino,
    parts: &[&str],
    digest: &ObjectDigest,
) -> Action {
    let Some((name, dir)) = parts.split_last() else { return Action::Create };
    let file = format!("{name}.json");
    let document: Vec<&str> = dir.iter().copied().chain([".meta", file.as_str()]).collect();
    let current = find(vfs, runtime, root, &document)
        .ok_or_else(|| "no metadata document".to_string())
        .and_then(|ino| read_file(vfs, runtime, ino).map_err(|e| e.to_string()))
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).map_err(|e| e.to_string()));
    let current = match current {
        Ok(current) => current,
        Err(e) => return Action::Conflict(format!("cannot read what is there: {e}")),
    };
    let field = |key: &str| current.get(key).and_then(Value::as_str).map(str::to_string);
    let size = current.get("size").and_then(Value::as_u64);
    let same = size == Some(digest.size)
        && match field("md5_hash") {
            Some(md5) => md5 == digest.md5,
            None => field("crc32c").is_some_and(|crc| crc == digest.crc32c),
        };
    if same { Action::Unchanged } else { Action::Conflict("the object exists with other content".to_string()) }
}

/// The node an archive's path (relative to a project: `storage/b/x`)
/// names, in any project.
fn node_of(parts: &[&str], dir: bool) -> Option<Node> {
    let (last, dirs) = parts.split_last()?;
    let project = Node::Project { project: ANY_PROJECT.to_string() };
    let parent = dirs.iter().try_fold(project, |node, part| node.child_dir(part))?;
    parent.child(last, dir)
}

/// A project's name for `node_of` (the grammar below a project is the same
/// in every project).
const ANY_PROJECT: &str = "project";

/// Whether `entry` is a bucket's directory (`storage/BUCKET`).
fn is_bucket_dir(entry: &Entry) -> bool {
    let parts: Vec<&str> = entry.path.split('/').collect();
    entry.dir && matches!(node_of(&parts, true), Some(Node::Dir { prefix, .. }) if prefix.is_empty())
}

/// Whether `parts` names an object's `.meta/` document.
fn is_object_document(parts: &[&str]) -> bool {
    matches!(node_of(parts, false), Some(Node::ObjectMeta { .. }))
}

/// Whether `parts` (`storage/BUCKET/.../NAME`) names an object.
fn is_object(parts: &[&str]) -> bool {
    matches!(node_of(parts, false), Some(Node::Object { .. }))
}

fn find<V: Vfs + ?Sized>(vfs: &Arc<V>, runtime: &Handle, root: Ino, parts: &[&str]) -> Option<Ino> {
    let mut ino = root;
    for part in parts {
        ino = runtime.block_on(vfs.lookup(ino, part)).ok()?.ino;
    }
    Some(ino)
}

fn read_file<V: Vfs + ?Sized>(vfs: &Arc<V>, runtime: &Handle, ino: Ino) -> Result<Vec<u8>, VfsError> {
    let opened = runtime.block_on(vfs.open(ino, OpenFlags::default()))?;
    let mut data = Vec::new();
    let result = loop {
        match runtime.block_on(vfs.read(ino, Some(opened.fh), data.len() as u64, 1 << 20)) {
            Ok((bytes, eof)) => {
                data.extend_from_slice(&bytes);
                if eof || bytes.is_empty() {
                    break Ok(data);
                }
            }
            Err(e) => break Err(e),
        }
    };
    let _ = runtime.block_on(vfs.release(ino, opened.fh));
    result
}

/// Counts what the plan says.
pub fn summarize(planned: &[Planned]) -> ImportSummary {
    let mut summary = ImportSummary::default();
    for item in planned {
        match &item.action {
            Action::Create => summary.created += 1,
            Action::Update(_) => summary.updated += 1,
            Action::Unchanged => summary.unchanged += 1,
            Action::Conflict(_) => summary.conflicts += 1,
            Action::Invalid(_) => summary.invalid += 1,
            Action::Ignored => {}
        }
    }
    summary
}

/// Applies the plan's creates and updates (and conflicts, with
/// `Overwrite`) in archive order, reading the archive again for the
/// objects' bytes; what fails is counted and reported.
#[allow(clippy::too_many_arguments)]
pub fn apply<V: Vfs + ?Sized>(
    vfs: &Arc<V>,
    runtime: &Handle,
    project: &str,
    file: &ArchiveFile,
    planned: &[Planned],
    on_conflict: OnConflict,
    progress: &ProgressBar,
    report: &mut dyn FnMut(&str, &str),
) -> Result<u64, String> {
    let root = runtime.block_on(vfs.lookup(ROOT_INO, project)).map_err(|e| format!("project {project}: {e}"))?.ino;
    let wanted = |item: &&Planned| match &item.action {
        Action::Create | Action::Update(_) => true,
        Action::Conflict(_) => on_conflict == OnConflict::Overwrite,
        _ => false,
    };
    let mut todo = planned.iter().filter(wanted).peekable();
    progress.set_length(planned.iter().filter(wanted).count() as u64);
    let style = ProgressStyle::with_template("{bar:30} {pos}/{len} {wide_msg}");
    progress.set_style(style.unwrap_or_else(|_| ProgressStyle::default_bar()));
    let mut failed = 0;
    // Buckets whose names another project has: what goes in them is not
    // written (the plan could not know: they are not this project's).
    let mut taken: Vec<String> = Vec::new();
    file.reopen()?.for_each(|index, entry| {
        let Some(item) = todo.next_if(|item| item.entry.index == index) else { return Ok(()) };
        progress.set_message(item.entry.path.clone());
        progress.inc(1);
        if taken.iter().any(|bucket| item.entry.path.starts_with(&format!("{bucket}/"))) {
            failed += 1;
            return Ok(());
        }
        // A bucket planned as new that exists is another project's.
        let must_be_new = item.action == Action::Create && is_bucket_dir(&item.entry);
        let written = match item.entry.object {
            Some(_) => write_entry(vfs, runtime, root, &item.entry, false, entry),
            None => write_entry(vfs, runtime, root, &item.entry, must_be_new, &mut &item.entry.data[..]),
        };
        match written {
            Ok(()) => {}
            Err(e) if e.errno() == libc::EEXIST && must_be_new => {
                failed += 1;
                taken.push(item.entry.path.clone());
                let bucket = item.entry.path.trim_start_matches("storage/");
                let why = format!("conflict: bucket {bucket} exists in another project (--map-bucket {bucket}=NEW)");
                progress.suspend(|| report(&item.entry.path, &why));
            }
            Err(e) => {
                failed += 1;
                progress.suspend(|| report(&item.entry.path, &format!("failed: {e}")));
            }
        }
        Ok(())
    })?;
    progress.finish_and_clear();
    if let Some(item) = todo.next() {
        return Err(format!("the archive changed since it was planned: {} is gone", item.entry.path));
    }
    Ok(failed)
}

/// Makes `entry` in the target: a directory (one that exists will do,
/// unless `must_be_new`), or a file with the bytes of `content`, written in
/// pieces.
fn write_entry<V: Vfs + ?Sized>(
    vfs: &Arc<V>,
    runtime: &Handle,
    root: Ino,
    entry: &Entry,
    must_be_new: bool,
    content: &mut dyn Read,
) -> Result<(), VfsError> {
    let parts: Vec<&str> = entry.path.split('/').collect();
    let (name, parents) = parts.split_last().ok_or_else(|| VfsError::invalid("empty path"))?;
    let mut dir = root;
    for part in parents {
        dir = runtime.block_on(vfs.lookup(dir, part))?.ino;
    }
    if entry.dir {
        return match runtime.block_on(vfs.mkdir(dir, name, 0o755)) {
            Err(e) if e.errno() == libc::EEXIST && !must_be_new => Ok(()),
            made => made.map(drop),
        };
    }
    let (ino, fh) = match runtime.block_on(vfs.lookup(dir, name)) {
        Ok(attr) if attr.kind == FileKind::File => {
            let flags = OpenFlags { write: true, truncate: true, append: false };
            (attr.ino, runtime.block_on(vfs.open(attr.ino, flags))?.fh)
        }
        _ => {
            let (attr, opened) = runtime.block_on(vfs.create(dir, name, 0o644))?;
            (attr.ino, opened.fh)
        }
    };
    let flushed = write_all(vfs, runtime, ino, fh, content).and_then(|_| runtime.block_on(vfs.flush(ino, fh)));
    let _ = runtime.block_on(vfs.release(ino, fh));
    flushed
}

fn write_all<V: Vfs + ?Sized>(
    vfs: &Arc<V>,
    runtime: &Handle,
    ino: Ino,
    fh: u64,
    content: &mut dyn Read,
) -> Result<(), VfsError> {
    let mut buffer = vec![0; PIECE];
    let mut offset = 0u64;
    loop {
        let n = content.read(&mut buffer).map_err(|e| VfsError::io(format!("reading the archive: {e}")))?;
        if n == 0 {
            return Ok(());
        }
        let mut done = 0;
        while done < n {
            let written = runtime.block_on(vfs.write(ino, Some(fh), offset, &buffer[done..n]))? as usize;
            if written == 0 {
                return Err(VfsError::io(format!("{}: nothing was written", ino)));
            }
            done += written;
            offset += written as u64;
        }
    }
}

#[cfg(test)]
mod tests;
