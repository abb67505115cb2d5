//! Edits of BigQuery documents under the ways programs really write them:
//! readers beside a writer, dup'd descriptors, NFS's truncate-then-write,
//! `touch`, `: >`, tar into a new table directory, `mv` of a table. Each
//! test failed on the first version of core/edits.rs (found in review).

use std::sync::Arc;
use std::time::Duration;

use ciofs_backends::bigquery::TableSettings;
use ciofs_backends::memory::{BigQueryOp, MemoryBigQuery, MemoryGcs};
use ciofs_frontends::{OpenFlags, SetAttr, Vfs};

use super::bigquery_tests::column;
use super::tests::{read_all, test_options, walk};
use super::{Namespace, Options, Services};

fn settings() -> TableSettings {
    TableSettings {
        schema: vec![column("id", "REQUIRED"), column("name", "NULLABLE")],
        description: Some("a table".to_string()),
        ..TableSettings::default()
    }
}

/// Dataset `ds` with table `t00`, on a namespace with `options`.
fn fixture_with(options: Options) -> (Arc<MemoryBigQuery>, Namespace) {
    let bigquery = Arc::new(MemoryBigQuery::new());
    bigquery.put_table("p", "ds", "t00", settings());
    let services = Services {
        gcs: Arc::new(MemoryGcs::new()),
        bigquery: bigquery.clone(),
        pubsub: Arc::new(ciofs_backends::memory::MemoryPubSub::new()),
    };
    (bigquery, Namespace::new(vec!["p".to_string()], services, options))
}

fn fixture() -> (Arc<MemoryBigQuery>, Namespace) {
    fixture_with(test_options())
}

const WRITE_TRUNC: OpenFlags = OpenFlags { write: true, truncate: true, append: false };
const WRITE: OpenFlags = OpenFlags { write: true, truncate: false, append: false };

/// A valid schema.json that adds column `extra`, cut in two.
const NEW_SCHEMA: &[u8] = br#"{"fields": [{"name": "id", "type": "STRING", "mode": "REQUIRED"},
    {"name": "name", "type": "STRING"}, {"name": "extra", "type": "STRING"}]}"#;

fn has_extra(bigquery: &MemoryBigQuery) -> bool {
    bigquery.table("p", "ds", "t00").unwrap().settings.schema.iter().any(|f| f.name == "extra")
}

/// `cat schema.json` in another terminal while an editor's write is under
/// way: the reader's handle is `Handle::Local` without a handle count, so
/// its FLUSH applies the writer's half-written document (EINVAL, edit
/// thrown away) and its RELEASE takes the writer's handle count to 0.
#[tokio::test]
async fn a_reader_closing_does_not_apply_a_writer_s_unfinished_edit() {
    let (bigquery, ns) = fixture();
    let ino = walk(&ns, "p/bigquery/ds/t00/schema.json").await;
    let (first, rest) = NEW_SCHEMA.split_at(40);

    let writer = ns.open(ino, WRITE_TRUNC).await.unwrap();
    ns.write(ino, Some(writer.fh), 0, first).await.unwrap();

    // Another process reads the file and closes it.
    let reader = ns.open(ino, OpenFlags::default()).await.unwrap();
    ns.read(ino, Some(reader.fh), 0, 4096).await.unwrap();
    let reader_close = ns.flush(ino, reader.fh).await;
    ns.release(ino, reader.fh).await.unwrap();
    assert!(reader_close.is_ok(), "a reader's close() must not apply (and fail) the writer's edit: {reader_close:?}");

    ns.write(ino, Some(writer.fh), first.len() as u64, rest).await.unwrap();
    let closed = ns.flush(ino, writer.fh).await;
    ns.release(ino, writer.fh).await.unwrap();
    assert!(closed.is_ok(), "the writer's close(): {closed:?}");
    assert!(has_extra(&bigquery), "the writer's whole edit is applied");
}

/// `{ printf '{"fields": ['; /bin/cat cols; printf ']}'; } > schema.json`:
/// every process holding the descriptor sends FLUSH when it exits (FUSE
/// sends one per close of every dup). The first FLUSH applies the partial
/// document (EINVAL) and throws the buffer away, so the writes that follow
/// land on top of the current rendering and the final close() fails too.
#[tokio::test]
async fn a_flush_from_a_dup_d_descriptor_does_not_lose_the_rest_of_the_edit() {
    let (bigquery, ns) = fixture();
    let ino = walk(&ns, "p/bigquery/ds/t00/schema.json").await;
    let (first, rest) = NEW_SCHEMA.split_at(40);

    let opened = ns.open(ino, WRITE_TRUNC).await.unwrap();
    ns.write(ino, Some(opened.fh), 0, first).await.unwrap();
    // A child that inherited the descriptor exits: FLUSH; its result is
    // seen by nobody.
    let _ = ns.flush(ino, opened.fh).await;
    ns.write(ino, Some(opened.fh), first.len() as u64, rest).await.unwrap();
    let closed = ns.flush(ino, opened.fh).await;
    ns.release(ino, opened.fh).await.unwrap();
    assert!(closed.is_ok(), "the last close() of a complete, valid document: {closed:?}");
    assert!(has_extra(&bigquery), "the whole document is applied");
}

/// NFS: `program > config.json` sends SETATTR size 0 at open and the WRITEs
/// at close. When more than the idle time (1 s) passes in between, the
/// emptied file is dropped, and the WRITEs then land on the current
/// rendering: a shorter new document keeps the old one's tail (EINVAL, the
/// edit is lost, only .ciofs/errors says so).
#[tokio::test]
async fn nfs_truncate_then_a_late_write_applies_what_was_written() {
    let (bigquery, ns) = fixture();
    let ino = walk(&ns, "p/bigquery/ds/t00/config.json").await;
    ns.setattr(ino, SetAttr { size: Some(0), ..Default::default() }).await.unwrap();
    ns.commit_idle(Duration::ZERO).await; // the writer took more than a second
    let document = br#"{"labels": {"team": "data"}}"#;
    ns.write(ino, None, 0, document).await.unwrap();
    assert_eq!(ns.getattr(ino).await.unwrap().size, document.len() as u64, "the NFS client wrote a whole file");
    ns.commit_idle(Duration::ZERO).await;
    let labels = bigquery.table("p", "ds", "t00").unwrap().settings.labels;
    assert_eq!(labels.get("team").map(String::as_str), Some("data"), "the written document is applied");
}

/// `tar x` (or `cp -a`) of a table whose `_status.json` comes before
/// `schema.json` (`tar --sort=name`, an archive of a local copy): create
/// succeeds in the pending directory, then tar's fchown/fchmod/utimensat
/// (a setattr, which answers with getattr) fails with ENOENT.
#[tokio::test]
async fn status_json_created_in_a_pending_table_accepts_tar_s_setattr() {
    let (_bigquery, ns) = fixture();
    let dataset = walk(&ns, "p/bigquery/ds").await;
    let table = ns.mkdir(dataset, "new", 0o755).await.unwrap().ino;
    let (status, opened) = ns.create(table, "_status.json", 0o644).await.unwrap();
    ns.write(status.ino, Some(opened.fh), 0, b"{}").await.unwrap();
    let times = SetAttr { mode: Some(0o644), uid: Some(0), gid: Some(0), ..Default::default() };
    let set = ns.setattr(status.ino, times).await;
    ns.flush(status.ino, opened.fh).await.unwrap();
    ns.release(status.ino, opened.fh).await.unwrap();
    assert!(set.is_ok(), "fchown/fchmod on a file just created: {set:?}");
}

/// `mv ds/t00 ds/t01`: EXDEV makes mv copy the tree (mkdir, config.json,
/// schema.json: an empty new table) and then `rm -r` the source, which
/// deletes t00 and every row in it. A table directory rename must fail
/// with an errno that mv reports (EPERM/ENOTSUP), never EXDEV.
#[tokio::test]
async fn renaming_a_table_directory_is_not_exdev() {
    let (bigquery, ns) = fixture();
    bigquery.set_table_stats("p", "ds", "t00", 1_000_000, 1 << 30).unwrap();
    let dataset = walk(&ns, "p/bigquery/ds").await;
    let renamed = ns.rename(dataset, "t00", dataset, "t01").await;
    let errno = renamed.unwrap_err().errno();
    assert_ne!(errno, libc::EXDEV, "EXDEV: mv copies schema and config, then rm -r deletes 1,000,000 rows");
    let bigquery_root = walk(&ns, "p/bigquery").await;
    let renamed = ns.rename(bigquery_root, "ds", bigquery_root, "ds2").await;
    assert_ne!(renamed.unwrap_err().errno(), libc::EXDEV, "the same for a dataset: mv deletes all its tables");
}

/// `touch schema.json` (open for write, no write, close) under FUSE leaves
/// a local copy that nothing ever drops (no idle task under FUSE, and it is
/// not dirty): the file shows that copy forever, whatever BigQuery has.
#[tokio::test]
async fn touch_does_not_freeze_schema_json() {
    let options = Options { metadata_ttl: Duration::ZERO, ..test_options() };
    let (bigquery, ns) = fixture_with(options);
    let ino = walk(&ns, "p/bigquery/ds/t00/schema.json").await;
    let opened = ns.open(ino, WRITE).await.unwrap();
    ns.setattr(ino, SetAttr { mtime: Some(std::time::SystemTime::now()), ..Default::default() }).await.unwrap();
    ns.flush(ino, opened.fh).await.unwrap();
    ns.release(ino, opened.fh).await.unwrap();

    // Changed outside ciofs (the TTL is 0: no cache in the way).
    let mut changed = settings();
    changed.schema.push(column("added_elsewhere", "NULLABLE"));
    bigquery.put_table("p", "ds", "t00", changed);
    let shown = String::from_utf8(read_all(&ns, ino).await).unwrap();
    assert!(shown.contains("added_elsewhere"), "schema.json still shows the copy made by touch:\n{shown}");
}

/// `: > schema.json` or `truncate -s 0 schema.json` under FUSE (open with
/// O_TRUNC, nothing written, close): nothing is applied, which is right,
/// but the emptied file is never dropped either (FUSE runs no idle task):
/// schema.json shows 0 bytes until the next write or a remount, and
/// `tar c` archives an empty schema.json.
#[tokio::test]
async fn a_truncate_only_close_under_fuse_leaves_the_table_s_document() {
    let (bigquery, ns) = fixture();
    let ino = walk(&ns, "p/bigquery/ds/t00/schema.json").await;
    let before = read_all(&ns, ino).await;
    let opened = ns.open(ino, WRITE_TRUNC).await.unwrap();
    ns.flush(ino, opened.fh).await.unwrap();
    ns.release(ino, opened.fh).await.unwrap();
    assert_eq!(bigquery.calls.get(BigQueryOp::UpdateTable), 0);
    assert_eq!(ns.getattr(ino).await.unwrap().size, before.len() as u64, "schema.json shows the table again");
}

/// In a pending table directory, `rm config.json` hides the file but the
/// configuration it carried is still used when schema.json creates the
/// table.
#[tokio::test]
async fn a_removed_config_json_is_not_used_to_create_the_table() {
    let (bigquery, ns) = fixture();
    let dataset = walk(&ns, "p/bigquery/ds").await;
    let table = ns.mkdir(dataset, "new", 0o755).await.unwrap().ino;
    let (config, opened) = ns.create(table, "config.json", 0o644).await.unwrap();
    ns.write(config.ino, Some(opened.fh), 0, br#"{"description": "a mistake"}"#).await.unwrap();
    ns.flush(config.ino, opened.fh).await.unwrap();
    ns.release(config.ino, opened.fh).await.unwrap();
    ns.unlink(table, "config.json").await.unwrap();
    assert_eq!(ns.lookup(table, "config.json").await.unwrap_err().errno(), libc::ENOENT);

    let (schema, opened) = ns.create(table, "schema.json", 0o644).await.unwrap();
    ns.write(schema.ino, Some(opened.fh), 0, br#"{"fields": [{"name": "x", "type": "INT64"}]}"#).await.unwrap();
    ns.flush(schema.ino, opened.fh).await.unwrap();
    ns.release(schema.ino, opened.fh).await.unwrap();
    let created = bigquery.table("p", "ds", "new").expect("created");
    assert_eq!(created.settings.description, None, "the removed config.json was used");
}

/// vim twice in a row: `backupcopy=yes` rewrites in place (its RELEASE
/// comes after close() returned), then `backupcopy=no` renames the file to
/// `schema.json~` and creates a new one, while the first RELEASE is still
/// on its way.
#[tokio::test]
async fn vim_in_place_then_by_rename_while_the_first_release_is_late() {
    let (bigquery, ns) = fixture();
    let table = walk(&ns, "p/bigquery/ds/t00").await;
    let ino = walk(&ns, "p/bigquery/ds/t00/schema.json").await;
    let first = br#"{"fields": [{"name": "id", "type": "STRING", "mode": "REQUIRED"}, {"name": "name", "type": "STRING"}, {"name": "a", "type": "STRING"}]}"#;
    let opened = ns.open(ino, WRITE_TRUNC).await.unwrap();
    ns.write(ino, Some(opened.fh), 0, first).await.unwrap();
    ns.fsync(ino, Some(opened.fh)).await.unwrap();
    ns.flush(ino, opened.fh).await.unwrap();
    // The second vim reads, renames to the backup and writes anew.
    read_all(&ns, ino).await;
    ns.rename(table, "schema.json", table, "schema.json~").await.unwrap();
    let (created, second) = ns.create(table, "schema.json", 0o644).await.unwrap();
    ns.release(ino, opened.fh).await.unwrap();
    let again = br#"{"fields": [{"name": "id", "type": "STRING", "mode": "REQUIRED"}, {"name": "name", "type": "STRING"}, {"name": "a", "type": "STRING"}, {"name": "b", "type": "STRING"}]}"#;
    ns.write(created.ino, Some(second.fh), 0, again).await.unwrap();
    ns.fsync(created.ino, Some(second.fh)).await.unwrap();
    ns.flush(created.ino, second.fh).await.unwrap();
    ns.release(created.ino, second.fh).await.unwrap();
    let columns = bigquery.table("p", "ds", "t00").unwrap().settings.schema.len();
    assert_eq!(columns, 4, "both edits applied");
}

/// A generated file opened read-write reads its document; what is written
/// to it is ignored.
#[tokio::test]
async fn a_generated_file_opened_for_write_reads_its_document() {
    let (bigquery, ns) = fixture();
    let ino = walk(&ns, "p/bigquery/ds/t00/_status.json").await;
    let document = read_all(&ns, ino).await;
    let opened = ns.open(ino, WRITE).await.unwrap();
    let (read, eof) = ns.read(ino, Some(opened.fh), 0, 1 << 20).await.unwrap();
    assert!(eof);
    assert_eq!(read.to_vec(), document);
    ns.write(ino, Some(opened.fh), 0, b"ignored").await.unwrap();
    ns.flush(ino, opened.fh).await.unwrap();
    ns.release(ino, opened.fh).await.unwrap();
    assert_eq!(read_all(&ns, ino).await, document);
    assert_eq!(bigquery.calls.get(BigQueryOp::UpdateTable), 0);
}

// ---- NFS journal and idle apply (found in a second review) ----

fn labels_of(bigquery: &MemoryBigQuery) -> Option<String> {
    bigquery.table("p", "ds", "t00").unwrap().settings.labels.get("team").cloned()
}

/// A namespace on `bigquery` with its own state directory.
fn namespace_on(bigquery: &Arc<MemoryBigQuery>, staging: &std::path::Path) -> Namespace {
    let options = Options { staging_dir: staging.to_path_buf(), ..Options::default() };
    let services = Services {
        gcs: Arc::new(MemoryGcs::new()),
        bigquery: bigquery.clone(),
        pubsub: Arc::new(ciofs_backends::memory::MemoryPubSub::new()),
    };
    Namespace::new(vec!["p".to_string()], services, options)
}

fn journal_files(staging: &std::path::Path) -> Vec<std::path::PathBuf> {
    match std::fs::read_dir(staging.join("nfs-edits")) {
        Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
        Err(_) => Vec::new(),
    }
}

/// NFS, a script: `cat a.json > config.json; sed -i s/a/b/ config.json`
/// within a second. The first edit is journaled; sed's rename applies the
/// second and removes the local file, but not the journal of the first. At
/// the next start ciofs applies the first edit again, reverting sed's.
/// (local_unlink and rmdir's drop_under leave the journal the same way.)
#[tokio::test]
async fn a_rename_onto_an_nfs_edit_leaves_no_journal_to_replay() {
    let staging = tempfile::tempdir().unwrap();
    let bigquery = Arc::new(MemoryBigQuery::new());
    bigquery.put_table("p", "ds", "t00", settings());
    let ns = namespace_on(&bigquery, staging.path());
    let table = walk(&ns, "p/bigquery/ds/t00").await;
    let ino = walk(&ns, "p/bigquery/ds/t00/config.json").await;
    ns.setattr(ino, SetAttr { size: Some(0), ..Default::default() }).await.unwrap();
    ns.write(ino, None, 0, br#"{"labels": {"team": "a"}}"#).await.unwrap();

    // sed -i over NFS: CREATE (with flush and release), WRITE, RENAME.
    let (scratch, opened) = ns.create(table, "sedXYZ", 0o644).await.unwrap();
    ns.flush(scratch.ino, opened.fh).await.unwrap();
    ns.release(scratch.ino, opened.fh).await.unwrap();
    ns.write(scratch.ino, None, 0, br#"{"labels": {"team": "b"}}"#).await.unwrap();
    ns.rename(table, "sedXYZ", table, "config.json").await.unwrap();
    ns.commit_idle(Duration::ZERO).await;
    assert_eq!(labels_of(&bigquery).as_deref(), Some("b"));
    drop(ns);
    let left = journal_files(staging.path());

    // ciofs restarts.
    let again = namespace_on(&bigquery, staging.path());
    again.resume_journaled_edits().await;
    assert_eq!(labels_of(&bigquery).as_deref(), Some("b"), "the restart replayed a superseded edit from {left:?}");
}

/// NFS: an edit acknowledged to the client meets a BigQuery outage (503
/// after the client's retries) at its idle apply. apply_local ends the
/// change whatever the error: the local file and its journal go, so the
/// edit is lost; resume_journaled_edits keeps EIO edits, the idle path
/// does not.
#[tokio::test]
async fn an_nfs_edit_is_retried_after_bigquery_was_unavailable() {
    let staging = tempfile::tempdir().unwrap();
    let bigquery = Arc::new(MemoryBigQuery::new());
    bigquery.put_table("p", "ds", "t00", settings());
    let ns = namespace_on(&bigquery, staging.path());
    let ino = walk(&ns, "p/bigquery/ds/t00/config.json").await;
    ns.setattr(ino, SetAttr { size: Some(0), ..Default::default() }).await.unwrap();
    ns.write(ino, None, 0, br#"{"labels": {"team": "data"}}"#).await.unwrap();
    bigquery.fail_next(BigQueryOp::UpdateTable, 1, ciofs_backends::ErrorKind::Unavailable);
    ns.commit_idle(Duration::ZERO).await; // fails: BigQuery unavailable
    ns.commit_idle(Duration::ZERO).await; // BigQuery is back
    assert_eq!(
        labels_of(&bigquery).as_deref(),
        Some("data"),
        "an acknowledged NFS edit was dropped after one failed attempt; journal: {:?}",
        journal_files(staging.path())
    );
}

/// NFS: config.json written (not yet applied: within the idle second), then
/// rewritten by a slow `program > config.json`: SETATTR size 0 at open,
/// WRITE at close more than a second later. The truncate keeps `written`
/// from the first write, so the idle task applies the empty file (refused),
/// drops it, and the late WRITE lands on the table's rendering.
#[tokio::test]
async fn nfs_rewrite_of_an_unapplied_edit_applies_the_new_document() {
    let (bigquery, ns) = fixture();
    let ino = walk(&ns, "p/bigquery/ds/t00/config.json").await;
    ns.setattr(ino, SetAttr { size: Some(0), ..Default::default() }).await.unwrap();
    ns.write(ino, None, 0, br#"{"labels": {"team": "first"}}"#).await.unwrap();
    // The second writer opens with O_TRUNC before the first edit went out.
    ns.setattr(ino, SetAttr { size: Some(0), ..Default::default() }).await.unwrap();
    ns.commit_idle(Duration::ZERO).await; // the program takes more than a second
    let document = br#"{"labels": {"team": "data"}}"#;
    ns.write(ino, None, 0, document).await.unwrap();
    ns.commit_idle(Duration::ZERO).await;
    assert_eq!(labels_of(&bigquery).as_deref(), Some("data"), "the second document is applied");
}

/// `{ cat new.json; printf '\n'; } > schema.json` under FUSE: cat exits
/// (FLUSH of a dup'd descriptor) after writing a whole, valid document,
/// which is applied; apply_local then replaces the open file's bytes with
/// BigQuery's (longer) rendering, so the shell's '\n' at its own offset
/// lands inside that rendering and the last close() fails with EINVAL.
#[tokio::test]
async fn writes_after_a_dup_d_flush_applied_continue_the_writer_s_bytes() {
    let (bigquery, ns) = fixture();
    let ino = walk(&ns, "p/bigquery/ds/t00/schema.json").await;
    let opened = ns.open(ino, WRITE_TRUNC).await.unwrap();
    ns.write(ino, Some(opened.fh), 0, NEW_SCHEMA).await.unwrap();
    ns.flush(ino, opened.fh).await.unwrap(); // cat exits
    assert!(has_extra(&bigquery));
    ns.write(ino, Some(opened.fh), NEW_SCHEMA.len() as u64, b"\n").await.unwrap();
    let (read, _) = ns.read(ino, Some(opened.fh), 0, 1 << 20).await.unwrap();
    let closed = ns.flush(ino, opened.fh).await;
    ns.release(ino, opened.fh).await.unwrap();
    assert!(
        closed.is_ok(),
        "close() after the shell's last write: {closed:?}; the file held:\n{}",
        String::from_utf8_lossy(&read)
    );
}

/// NFS: `mkdir ds/new; cat schema > ds/new/schema.json`, and ciofs is
/// killed within the idle second. The WRITE was journaled, but the pending
/// table lives only in memory: at the next start bq_apply finds no table
/// (ENOENT), logs it and deletes the journal. The acknowledged edit (and
/// the table) is lost although 4954b80 says it is applied at the next start.
#[tokio::test]
async fn a_journaled_nfs_schema_of_a_new_table_survives_a_restart() {
    let staging = tempfile::tempdir().unwrap();
    let bigquery = Arc::new(MemoryBigQuery::new());
    bigquery.put_table("p", "ds", "t00", settings());
    let ns = namespace_on(&bigquery, staging.path());
    let dataset = walk(&ns, "p/bigquery/ds").await;
    let table = ns.mkdir(dataset, "new", 0o755).await.unwrap().ino;
    let (schema, opened) = ns.create(table, "schema.json", 0o644).await.unwrap();
    ns.flush(schema.ino, opened.fh).await.unwrap();
    ns.release(schema.ino, opened.fh).await.unwrap();
    ns.write(schema.ino, None, 0, br#"{"fields": [{"name": "x", "type": "INT64"}]}"#).await.unwrap();
    drop(ns); // killed before the idle apply
    let left = journal_files(staging.path());
    assert_eq!(left.len(), 1, "the WRITE was journaled");

    let again = namespace_on(&bigquery, staging.path());
    again.resume_journaled_edits().await;
    assert!(bigquery.table("p", "ds", "new").is_some(), "the journaled schema.json of a new table was dropped");
}
