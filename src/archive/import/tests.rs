use super::*;

fn options() -> ImportOptions {
    ImportOptions {
        dry_run: false,
        on_conflict: OnConflict::Fail,
        map_bucket: vec![("old".to_string(), "new".to_string())],
        upload_macos_files: false,
    }
}

#[test]
fn paths_lose_the_project_and_map_buckets_and_bad_ones_are_refused() {
    let o = options();
    assert_eq!(relative_path("p/storage/old/x", &o).unwrap(), "storage/new/x");
    assert_eq!(relative_path("storage/old", &o).unwrap(), "storage/new");
    assert_eq!(relative_path("p/bigquery/ds/t/schema.json", &o).unwrap(), "bigquery/ds/t/schema.json");
    assert_eq!(relative_path("./pubsub/topics/", &o).unwrap(), "pubsub/topics");
    assert!(relative_path("/etc/passwd", &o).unwrap_err().contains("absolute"));
    assert!(relative_path("p/storage/../../x", &o).unwrap_err().contains(".."));
    assert!(relative_path("p/secrets/x", &o).unwrap_err().contains("unknown top-level"));
    assert_eq!(relative_path("p", &o).unwrap(), "");
}

#[test]
fn documents_compare_without_the_service_fields() {
    let current = br#"{"version": "1", "etag": "a", "description": "x", "labels": {}}"#;
    let same: Value = serde_json::json!({"version": "1", "etag": "b", "description": "x", "labels": {}});
    assert_eq!(compare_documents("config.json", current, &same), Action::Unchanged);
    let other: Value = serde_json::json!({"description": "y"});
    assert_eq!(
        compare_documents("config.json", current, &other),
        Action::Update(vec![r#"description: "x" → "y""#.to_string()])
    );
    let old_schema = br#"{"fields": [{"name": "a", "type": "STRING"}, {"name": "b", "type": "STRING"}]}"#;
    let dropped: Value = serde_json::json!({"fields": [{"name": "a", "type": "STRING"}]});
    assert!(
        matches!(compare_documents("schema.json", old_schema, &dropped), Action::Conflict(why) if why.contains('b'))
    );
}

/// An archive of `(path, content)` entries (None: a directory) in a
/// file of `dir`.
fn archive(dir: &Path, entries: &[(&str, Option<&[u8]>)]) -> std::path::PathBuf {
    let path = dir.join("a.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&path).unwrap());
    for (name, content) in entries {
        let mut header = tar::Header::new_gnu();
        match content {
            Some(data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(data.len() as u64);
                header.set_mode(0o644);
                builder.append_data(&mut header, name, *data).unwrap();
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                header.set_mode(0o755);
                builder.append_data(&mut header, name, std::io::empty()).unwrap();
            }
        }
    }
    builder.finish().unwrap();
    path
}

/// Names are global: an archive's bucket that exists in another project
/// is reported as a conflict and nothing goes into it.
#[test]
fn a_bucket_of_another_project_takes_nothing_and_is_a_conflict() {
    use ciofs_backends::memory::{MemoryBigQuery, MemoryGcs, MemoryPubSub};
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let gcs = Arc::new(MemoryGcs::new());
    gcs.add_bucket_of("other", "theirs");
    let services = crate::namespace::Services {
        gcs: gcs.clone(),
        bigquery: Arc::new(MemoryBigQuery::new()),
        pubsub: Arc::new(MemoryPubSub::new()),
    };
    let dir = tempfile::tempdir().unwrap();
    let staging = dir.path().join("staging");
    let options = crate::namespace::Options { staging_dir: staging, ..Default::default() };
    let _entered = runtime.enter();
    let ns = Arc::new(crate::namespace::Namespace::new(vec!["q".to_string()], services, options));
    let path = archive(dir.path(), &[("p/storage/theirs", None), ("p/storage/theirs/f.txt", Some(b"mine"))]);
    let import = ImportOptions {
        dry_run: false,
        on_conflict: OnConflict::Skip,
        map_bucket: Vec::new(),
        upload_macos_files: false,
    };
    let file = ArchiveFile::new(&path).unwrap();
    let mut planned = read_archive(&file, &import).unwrap();
    plan(&ns, runtime.handle(), "q", &mut planned).unwrap();
    let mut said = Vec::new();
    let mut report = |path: &str, what: &str| said.push(format!("{path}: {what}"));
    let progress = ProgressBar::hidden();
    let failed = apply(&ns, runtime.handle(), "q", &file, &planned, OnConflict::Skip, &progress, &mut report);
    assert_eq!(failed, Ok(2), "{said:?}");
    assert_eq!(said.len(), 1, "one line for the bucket: {said:?}");
    assert!(said[0].contains("exists in another project"), "{said:?}");
    assert_eq!(gcs.object_data("theirs", "f.txt"), None, "nothing written into their bucket");
}

/// Long names (GNU `L` entries, PAX `path` records) are read as the
/// tar reader reads them, within the bound on an entry's headers.
#[test]
fn long_names_are_read_within_the_bound_on_headers() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!("p/storage/b/{}/object", "d".repeat(900));
    let path = archive(dir.path(), &[(long.as_str(), Some(b"x"))]);
    let import = ImportOptions {
        dry_run: true,
        on_conflict: OnConflict::Skip,
        map_bucket: Vec::new(),
        upload_macos_files: false,
    };
    let planned = read_archive(&ArchiveFile::new(&path).unwrap(), &import).unwrap();
    assert_eq!(planned.len(), 1);
    assert_eq!(planned[0].entry.path, long.trim_start_matches("p/"));

    let pax = dir.path().join("pax.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&pax).unwrap());
    let record = format!("p/bigquery/ds/{}/schema.json", "t".repeat(1000));
    builder.append_pax_extensions([("path", record.as_bytes())]).unwrap();
    let mut header = tar::Header::new_ustar();
    header.set_path("short").unwrap();
    header.set_size(2);
    header.set_cksum();
    builder.append(&header, &b"{}"[..]).unwrap();
    builder.finish().unwrap();
    let planned = read_archive(&ArchiveFile::new(&pax).unwrap(), &import).unwrap();
    assert_eq!(planned.len(), 1);
    assert_eq!(planned[0].entry.path, record.trim_start_matches("p/"));
    assert_eq!(planned[0].entry.data, b"{}");
}

#[test]
fn an_archive_is_a_regular_file_that_does_not_change_between_plan_and_apply() {
    let dir = tempfile::tempdir().unwrap();
    let refused = ArchiveFile::new(dir.path()).err().unwrap_or_default();
    assert!(refused.contains("not a regular file"), "{refused}");
    let path = archive(dir.path(), &[("p/pubsub", None)]);
    let file = ArchiveFile::new(&path).unwrap();
    assert!(file.reopen().is_ok());
    archive(dir.path(), &[("p/pubsub", None), ("p/bigquery", None)]);
    let changed = file.reopen().err().unwrap_or_default();
    assert!(changed.contains("changed since it was planned"), "{changed}");
}

/// macOS's metadata files and what is under its directories are ignored,
/// unless `upload_macos_files`, when they are created like any file.
#[test]
fn macos_names_are_ignored_unless_uploaded() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["p/storage/b/._x", "p/storage/b/.DS_Store", "p/storage/b/.Trashes/y", "p/storage/b/kept.txt"];
    let entries: Vec<(&str, Option<&[u8]>)> = names.iter().map(|name| (*name, Some(&b"x"[..]))).collect();
    let path = archive(dir.path(), &entries);
    let file = ArchiveFile::new(&path).unwrap();
    let import = ImportOptions { on_conflict: OnConflict::Skip, map_bucket: Vec::new(), ..options() };
    let planned = read_archive(&file, &import).unwrap();
    let ignored: Vec<bool> = planned.iter().map(|p| matches!(p.action, Action::Ignored)).collect();
    assert_eq!(ignored, [true, true, true, false], "in the archive's order");
    let uploaded = read_archive(&file, &ImportOptions { upload_macos_files: true, ..import }).unwrap();
    assert!(uploaded.iter().all(|p| matches!(p.action, Action::Create)), "with upload_macos_files");
}
