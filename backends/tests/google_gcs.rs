//! `GoogleGcs`'s write calls against fake-gcs-server at
//! `STORAGE_EMULATOR_HOST` (`scripts/emulators start`, then
//! `eval "$(scripts/emulators env)"`). Without a reachable emulator every
//! test fails: none passes without the thing it tests.
//!
//! The emulator is shared, and bucket names are global on it: each test uses
//! its own buckets, named after the test, the process and the time.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use ciofs_backends::ErrorKind;
use ciofs_backends::gcs::{
    BucketChange, BucketSettings, CopyObject, GcsConfig, GoogleGcs, ObjectStore, PatchObjectMetadata, ReadObject,
    StreamedUpload, Upload, Written,
};
use ciofs_backends::retry::RetryPolicy;
use futures::TryStreamExt;

const PROJECT: &str = "test-project";
const MIB: usize = 1024 * 1024;

/// A client of the emulator, checked to answer.
async fn gcs() -> GoogleGcs {
    gcs_with_chunk(GcsConfig::default().upload_chunk).await
}

/// A client whose resumable uploads go in chunks of `chunk` bytes.
async fn gcs_with_chunk(chunk: u64) -> GoogleGcs {
    let config = GcsConfig { upload_chunk: chunk, ..GcsConfig::from_env() };
    let Some(endpoint) = config.emulator.clone() else {
        panic!("STORAGE_EMULATOR_HOST is not set: run scripts/emulators start, then eval \"$(scripts/emulators env)\"");
    };
    // Few, quick retries: an unreachable emulator fails the test fast.
    let retry = RetryPolicy { attempts: 2, stall_timeout: Duration::from_secs(20), ..RetryPolicy::default() };
    let gcs = GoogleGcs::connect(GcsConfig { retry, ..config }).await.expect("client");
    if let Err(e) = gcs.list_buckets(PROJECT, None, 1).await {
        panic!("fake-gcs-server at {endpoint} does not answer ({e}): run scripts/emulators start");
    }
    gcs
}

/// A new bucket for one test.
async fn new_bucket(gcs: &GoogleGcs, test: &str) -> String {
    let bucket = bucket_name(test);
    gcs.create_bucket(PROJECT, &bucket, &BucketSettings::default()).await.expect("create bucket");
    bucket
}

fn bucket_name(test: &str) -> String {
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().subsec_nanos();
    format!("ciofs-be-{test}-{}-{nanos}", std::process::id())
}

fn staged(data: &[u8]) -> Arc<std::fs::File> {
    let mut file = tempfile::tempfile().expect("staging file");
    file.write_all(data).expect("write staging file");
    Arc::new(file)
}

fn upload(bucket: &str, name: &str, data: &[u8]) -> Upload {
    Upload {
        bucket: bucket.to_string(),
        name: name.to_string(),
        source: staged(data),
        size: data.len() as u64,
        content_type: None,
        custom_metadata: BTreeMap::new(),
        if_generation_match: None,
    }
}

async fn read_all(gcs: &GoogleGcs, bucket: &str, name: &str, size: u64) -> Vec<u8> {
    read_range(gcs, bucket, name, None, 0..size).await.expect("read").1
}

/// The generation served and the bytes of `range`, pinned or not.
async fn read_range(
    gcs: &GoogleGcs,
    bucket: &str,
    name: &str,
    generation: Option<i64>,
    range: std::ops::Range<u64>,
) -> Result<(i64, Vec<u8>), ciofs_backends::BackendError> {
    let request =
        ReadObject { bucket: bucket.to_string(), name: name.to_string(), generation, range, object_size: None };
    let body = gcs.read_object(&request).await?;
    let chunks: Vec<_> = body.bytes.try_collect().await?;
    Ok((body.generation, chunks.concat()))
}

/// Bytes that differ at every offset, so a misplaced chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn metadata(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[tokio::test]
async fn a_small_upload_sets_content_type_and_metadata() {
    let gcs = gcs().await;
    let bucket = new_bucket(&gcs, "small").await;
    let data = b"hello, world\n";
    let request = Upload {
        content_type: Some("text/plain".to_string()),
        custom_metadata: metadata(&[("owner", "ciofs"), ("note", "a b")]),
        if_generation_match: Some(0),
        ..upload(&bucket, "dir/hello.txt", data)
    };
    let uploaded = gcs.upload_object(&request).await.expect("upload");
    assert_eq!(uploaded.name, "dir/hello.txt");
    assert_eq!(uploaded.size, data.len() as u64);
    assert_eq!(uploaded.content_type.as_deref(), Some("text/plain"));
    assert_eq!(uploaded.custom_metadata, request.custom_metadata);
    assert!(uploaded.generation > 0);

    let got = gcs.get_object(&bucket, "dir/hello.txt").await.expect("get");
    assert_eq!(got.generation, uploaded.generation);
    assert_eq!(got.size, data.len() as u64);
    assert_eq!(got.content_type.as_deref(), Some("text/plain"));
    assert_eq!(got.custom_metadata, request.custom_metadata);
    assert_eq!(read_all(&gcs, &bucket, "dir/hello.txt", got.size).await, data);
    // The staging file is left as it was.
    let mut left = vec![0; data.len()];
    std::os::unix::fs::FileExt::read_exact_at(&*request.source, &mut left, 0).unwrap();
    assert_eq!(left, data);
}

/// A ranged read returns the bytes asked for and the generation they are
/// of, unpinned as pinned; a read pinned to a replaced generation is
/// `NotFound`, a range past the end `InvalidArgument`; names with the
/// characters a URL gives meaning to read right.
#[tokio::test]
async fn a_ranged_read_returns_its_bytes_and_the_generation_served() {
    let gcs = gcs().await;
    let bucket = new_bucket(&gcs, "ranged").await;
    let data = pattern(3 * MIB + 5);
    let first = gcs.upload_object(&upload(&bucket, "r.bin", &data)).await.expect("upload");
    let at = (MIB as u64 + 3)..(2 * MIB as u64 + 10);
    let (generation, bytes) = read_range(&gcs, &bucket, "r.bin", None, at.clone()).await.expect("unpinned read");
    assert_eq!(generation, first.generation);
    assert!(bytes == data[at.start as usize..at.end as usize], "other bytes");
    let pinned = read_range(&gcs, &bucket, "r.bin", Some(first.generation), 0..10).await.expect("pinned read");
    assert_eq!(pinned, (first.generation, data[..10].to_vec()));
    // A range that ends past the end gives the bytes up to it.
    let tail = read_range(&gcs, &bucket, "r.bin", None, (data.len() as u64 - 2)..u64::MAX).await.expect("tail");
    assert_eq!(tail.1, data[data.len() - 2..]);

    let second = gcs.upload_object(&upload(&bucket, "r.bin", b"replaced")).await.expect("overwrite");
    let (generation, bytes) = read_range(&gcs, &bucket, "r.bin", None, 0..100).await.expect("the new one");
    assert_eq!((generation, bytes.as_slice()), (second.generation, &b"replaced"[..]));
    let gone = read_range(&gcs, &bucket, "r.bin", Some(first.generation), 0..10).await.expect_err("replaced");
    assert_eq!(gone.kind, ErrorKind::NotFound, "{gone}");
    let past = read_range(&gcs, &bucket, "r.bin", None, 100..200).await.expect_err("past the end");
    assert_eq!(past.kind, ErrorKind::InvalidArgument, "{past}");
    let missing = read_range(&gcs, &bucket, "nothing", None, 0..10).await.expect_err("no such object");
    assert_eq!(missing.kind, ErrorKind::NotFound, "{missing}");

    for name in ["dir/a b#c?d%20e%.txt", "dir/sub/+&=;,'!*()[]@$", "unicodé ☃"] {
        let stored = gcs.upload_object(&upload(&bucket, name, name.as_bytes())).await.expect("upload");
        let got = read_range(&gcs, &bucket, name, None, 1..name.len() as u64).await.expect(name);
        assert_eq!(got, (stored.generation, name.as_bytes()[1..].to_vec()), "{name}");
        let got = read_range(&gcs, &bucket, name, Some(stored.generation), 0..3).await.expect(name);
        assert_eq!(got.1, name.as_bytes()[..3], "{name}");
    }
}

/// A read of all of an object whose size the caller knows goes without a
/// `Range` header; if the object has grown meanwhile (another generation),
/// the answer still gives only the bytes asked for, and says whose.
#[tokio::test]
async fn a_read_of_the_whole_object_gives_its_bytes_and_no_more() {
    let gcs = gcs().await;
    let bucket = new_bucket(&gcs, "whole").await;
    let data = pattern(MIB + 5);
    let first = gcs.upload_object(&upload(&bucket, "w.bin", &data)).await.expect("upload");
    let whole = |range: std::ops::Range<u64>, object_size| ReadObject {
        bucket: bucket.clone(),
        name: "w.bin".to_string(),
        range,
        object_size: Some(object_size),
        ..Default::default()
    };
    let read = |request: ReadObject| {
        let gcs = &gcs;
        async move {
            let body = gcs.read_object(&request).await.expect("read");
            let chunks: Vec<Bytes> = body.bytes.try_collect().await.expect("body");
            (body.generation, chunks.concat())
        }
    };
    let size = data.len() as u64;
    let (generation, bytes) = read(whole(0..size, size)).await;
    assert!(generation == first.generation && bytes == data, "the whole object");
    // Other bytes at every offset: `pattern` of any length starts alike.
    let larger: Vec<u8> = pattern(2 * MIB).iter().map(|b| !b).collect();
    let second = gcs.upload_object(&upload(&bucket, "w.bin", &larger)).await.expect("overwrite");
    let (generation, bytes) = read(whole(0..size, size)).await;
    assert_eq!(generation, second.generation);
    assert!(bytes == larger[..data.len()], "only the bytes asked for, of the generation served");
}

#[tokio::test]
async fn an_upload_without_content_type_is_octet_stream() {
    let gcs = gcs().await;
    let bucket = new_bucket(&gcs, "plain").await;
    let uploaded = gcs.upload_object(&upload(&bucket, "x", b"x")).await.expect("upload");
    assert_eq!(uploaded.content_type.as_deref(), Some("application/octet-stream"));
    assert!(uploaded.custom_metadata.is_empty());
}

#[tokio::test]
async fn an_empty_upload_makes_an_empty_object_once() {
    let gcs = gcs().await;
    let bucket = new_bucket(&gcs, "empty").await;
    let placeholder = Upload { if_generation_match: Some(0), ..upload(&bucket, "dir/", b"") };
    let uploaded = gcs.upload_object(&placeholder).await.expect("upload");
    assert_eq!(uploaded.size, 0);
    let again = gcs.upload_object(&placeholder).await.expect_err("exists");
    assert_eq!(again.kind, ErrorKind::PreconditionFailed);
}

#[tokio::test]
async fn a_40_mib_upload_goes_up_in_chunks_and_reads_back_the_same() {
    let gcs = gcs_with_chunk(4 * MIB as u64).await;
    let bucket = new_bucket(&gcs, "large").await;
    let data = pattern(40 * MIB + 123);
    let request = Upload {
        content_type: Some("application/x-test".to_string()),
        custom_metadata: metadata(&[("size", "large")]),
        if_generation_match: Some(0),
        ..upload(&bucket, "large.bin", &data)
    };
    let uploaded = gcs.upload_object(&request).await.expect("upload");
    assert_eq!(uploaded.size, data.len() as u64);
    assert_eq!(uploaded.content_type.as_deref(), Some("application/x-test"));
    assert_eq!(uploaded.custom_metadata, request.custom_metadata);
    let got = gcs.get_object(&bucket, "large.bin").await.expect("get");
    assert_eq!(got.generation, uploaded.generation);
    let read = read_all(&gcs, &bucket, "large.bin", got.size).await;
    assert_eq!(read.len(), data.len());
    assert!(read == data, "the bytes read back differ from the bytes uploaded");

    // The same precondition on the resumable path.
    let again = gcs.upload_object(&request).await.expect_err("exists");
    assert_eq!(again.kind, ErrorKind::PreconditionFailed);
    let stale = Upload { if_generation_match: Some(uploaded.generation + 1), ..request.clone() };
    assert_eq!(gcs.upload_object(&stale).await.expect_err("stale").kind, ErrorKind::PreconditionFailed);
    let current = Upload { if_generation_match: Some(uploaded.generation), ..request };
    let replaced = gcs.upload_object(&current).await.expect("upload at the current generation");
    assert_ne!(replaced.generation, uploaded.generation);
}

#[tokio::test]
async fn sizes_at_the_one_request_limit_go_up_whole() {
    let gcs = gcs_with_chunk(MIB as u64).await;
    let bucket = new_bucket(&gcs, "limit").await;
    // The largest one-request upload, the smallest resumable one (its last
    // chunk is one byte), and one of several chunks.
    for (name, len) in [("one-request", MIB), ("resumable", MIB + 1), ("chunks", 3 * MIB + 5)] {
        let data = pattern(len);
        let uploaded = gcs.upload_object(&upload(&bucket, name, &data)).await.expect("upload");
        assert_eq!(uploaded.size, len as u64);
        assert!(read_all(&gcs, &bucket, name, len as u64).await == data, "{name}: bytes differ");
    }
}

/// Appends `data` to `file` in `pieces` steps, telling `progress` after each,
/// and marks it complete unless `abandon`; `between` runs after each step.
async fn write_growing(
    file: &std::fs::File,
    data: &[u8],
    pieces: usize,
    progress: tokio::sync::watch::Sender<Written>,
    mut between: impl AsyncFnMut(usize),
    abandon: bool,
) {
    let step = data.len().div_ceil(pieces);
    for (i, piece) in data.chunks(step).enumerate() {
        let at = i * step;
        std::os::unix::fs::FileExt::write_all_at(file, piece, at as u64).expect("write staging file");
        progress.send_replace(Written { len: (at + piece.len()) as u64, complete: false });
        between(i).await;
    }
    if !abandon {
        progress.send_replace(Written { len: data.len() as u64, complete: true });
    }
}

#[tokio::test]
async fn a_streamed_upload_sends_the_bytes_as_they_are_written() {
    let gcs = Arc::new(gcs().await);
    let bucket = new_bucket(&gcs, "streamed").await;
    let data = pattern(20 * MIB + 7);
    let file = Arc::new(tempfile::tempfile().expect("staging file"));
    let (sender, progress) = tokio::sync::watch::channel(Written::default());
    let streamed = StreamedUpload {
        upload: Upload {
            content_type: Some("application/x-test".to_string()),
            custom_metadata: metadata(&[("how", "streamed")]),
            if_generation_match: Some(0),
            source: file.clone(),
            ..upload(&bucket, "s.bin", b"")
        },
        progress,
    };
    let uploading = tokio::spawn({
        let gcs = gcs.clone();
        async move { gcs.upload_streamed(streamed).await }
    });
    let (check, name) = (gcs.clone(), bucket.clone());
    write_growing(
        &file,
        &data,
        10,
        sender,
        async |_| {
            tokio::time::sleep(Duration::from_millis(20)).await;
            // Nothing shows before the writer is done.
            let absent = check.get_object(&name, "s.bin").await.expect_err("not yet");
            assert_eq!(absent.kind, ErrorKind::NotFound);
        },
        false,
    )
    .await;
    let uploaded = uploading.await.expect("task").expect("streamed upload");
    assert_eq!(uploaded.size, data.len() as u64);
    assert_eq!(uploaded.content_type.as_deref(), Some("application/x-test"));
    assert_eq!(uploaded.custom_metadata, metadata(&[("how", "streamed")]));
    assert!(read_all(&gcs, &bucket, "s.bin", uploaded.size).await == data, "the bytes read back differ");
}

#[tokio::test]
async fn an_abandoned_or_refused_streamed_upload_stores_nothing() {
    let gcs = Arc::new(gcs().await);
    let bucket = new_bucket(&gcs, "abandoned").await;
    let data = pattern(4 * MIB);
    let start = |name: &str, if_generation_match| {
        let file = Arc::new(tempfile::tempfile().expect("staging file"));
        let (sender, progress) = tokio::sync::watch::channel(Written::default());
        let upload = Upload { if_generation_match, source: file.clone(), ..upload(&bucket, name, b"") };
        let gcs = gcs.clone();
        let task = tokio::spawn(async move { gcs.upload_streamed(StreamedUpload { upload, progress }).await });
        (file, sender, task)
    };
    // The writer goes away half way.
    let (file, sender, task) = start("gone.bin", Some(0));
    write_growing(&file, &data, 4, sender, async |_| {}, true).await;
    assert!(task.await.expect("task").is_err(), "an abandoned upload fails");
    let absent = gcs.get_object(&bucket, "gone.bin").await.expect_err("nothing stored");
    assert_eq!(absent.kind, ErrorKind::NotFound);
    // The object exists already and the upload asked for a new one.
    let first = gcs.upload_object(&upload(&bucket, "taken.bin", b"first")).await.expect("upload");
    let (file, sender, task) = start("taken.bin", Some(0));
    write_growing(&file, &data, 4, sender, async |_| {}, false).await;
    let refused = task.await.expect("task").expect_err("exists");
    assert_eq!(refused.kind, ErrorKind::PreconditionFailed, "{refused}");
    let kept = gcs.get_object(&bucket, "taken.bin").await.expect("kept");
    assert_eq!(kept.generation, first.generation);
}

#[tokio::test]
async fn generation_preconditions_guard_overwrites() {
    let gcs = gcs().await;
    let bucket = new_bucket(&gcs, "precondition").await;
    let first = gcs.upload_object(&upload(&bucket, "f", b"one")).await.expect("upload");

    let must_be_new = Upload { if_generation_match: Some(0), ..upload(&bucket, "f", b"two") };
    let refused = gcs.upload_object(&must_be_new).await.expect_err("exists");
    assert_eq!(refused.kind, ErrorKind::PreconditionFailed, "{refused}");

    let stale = Upload { if_generation_match: Some(first.generation + 1), ..upload(&bucket, "f", b"two") };
    let refused = gcs.upload_object(&stale).await.expect_err("stale");
    assert_eq!(refused.kind, ErrorKind::PreconditionFailed, "{refused}");
    assert_eq!(read_all(&gcs, &bucket, "f", 3).await, b"one", "a refused upload changes nothing");

    let current = Upload { if_generation_match: Some(first.generation), ..upload(&bucket, "f", b"two") };
    let second = gcs.upload_object(&current).await.expect("upload at the current generation");
    assert_ne!(second.generation, first.generation);
    assert_eq!(read_all(&gcs, &bucket, "f", 3).await, b"two");

    let absent = Upload { if_generation_match: Some(first.generation), ..upload(&bucket, "g", b"x") };
    let refused = gcs.upload_object(&absent).await.expect_err("no object at that generation");
    assert_eq!(refused.kind, ErrorKind::PreconditionFailed, "{refused}");
}

/// 8 MiB and more without custom metadata go up as a media upload (whose
/// preconditions fake-gcs-server ignores): checked all the same.
#[tokio::test]
async fn a_large_upload_without_metadata_keeps_its_generation_precondition() {
    let gcs = gcs().await;
    let bucket = new_bucket(&gcs, "media").await;
    let data = pattern(8 * MIB);
    let first = gcs.upload_object(&upload(&bucket, "m", &data)).await.expect("upload");
    assert_eq!(first.content_type.as_deref(), Some("application/octet-stream"));
    let typed = Upload {
        content_type: Some("video/mp4".to_string()),
        if_generation_match: Some(first.generation),
        ..upload(&bucket, "m", &data)
    };
    let second = gcs.upload_object(&typed).await.expect("upload at the current generation");
    assert_eq!(second.content_type.as_deref(), Some("video/mp4"));
    for stale in [Some(0), Some(first.generation)] {
        let refused = Upload { if_generation_match: stale, ..upload(&bucket, "m", b"other") };
        let refused = Upload { source: staged(&pattern(9 * MIB)), size: 9 * MIB as u64, ..refused };
        assert_eq!(gcs.upload_object(&refused).await.expect_err("stale").kind, ErrorKind::PreconditionFailed);
    }
    let kept = gcs.get_object(&bucket, "m").await.expect("get");
    assert_eq!((kept.generation, kept.size), (second.generation, data.len() as u64));
}

#[tokio::test]
async fn a_short_staging_file_is_refused() {
    let gcs = gcs().await;
    let bucket = new_bucket(&gcs, "short").await;
    let request = Upload { size: 10, ..upload(&bucket, "short", b"abc") };
    let refused = gcs.upload_object(&request).await.expect_err("short");
    assert_eq!(refused.kind, ErrorKind::InvalidArgument, "{refused}");
    let missing = gcs.get_object(&bucket, "short").await.expect_err("nothing stored");
    assert_eq!(missing.kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn deletes_with_and_without_generation() {
    let gcs = gcs().await;
    let bucket = new_bucket(&gcs, "delete").await;
    gcs.upload_object(&upload(&bucket, "a", b"a")).await.expect("upload");
    let b = gcs.upload_object(&upload(&bucket, "b", b"b")).await.expect("upload");

    gcs.delete_object(&bucket, "a", None).await.expect("delete");
    assert_eq!(gcs.get_object(&bucket, "a").await.expect_err("deleted").kind, ErrorKind::NotFound);
    gcs.delete_object(&bucket, "b", Some(b.generation)).await.expect("delete at generation");
    assert_eq!(gcs.get_object(&bucket, "b").await.expect_err("deleted").kind, ErrorKind::NotFound);
    // fake-gcs-server ignores ifGenerationMatch (and generation) on delete,
    // so a delete at a stale generation cannot be checked here; MemoryGcs's
    // tests check what ciofs relies on.

    let missing = gcs.delete_object(&bucket, "a", None).await.expect_err("already deleted");
    assert_eq!(missing.kind, ErrorKind::NotFound);
    let no_bucket = gcs.delete_object(&bucket_name("nobucket"), "a", None).await.expect_err("no bucket");
    assert_eq!(no_bucket.kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn a_copy_keeps_content_and_metadata() {
    let gcs = gcs().await;
    let bucket = new_bucket(&gcs, "copy").await;
    let request = Upload {
        content_type: Some("text/csv".to_string()),
        custom_metadata: metadata(&[("k", "v")]),
        ..upload(&bucket, "src.csv", b"a,b\n1,2\n")
    };
    let source = gcs.upload_object(&request).await.expect("upload");

    let copy = gcs
        .copy_object(&CopyObject {
            bucket: bucket.clone(),
            source: "src.csv".to_string(),
            destination: "dir/dst.csv".to_string(),
            if_source_generation_match: Some(source.generation),
        })
        .await
        .expect("copy");
    assert_eq!(copy.name, "dir/dst.csv");
    assert_eq!(copy.size, source.size);
    assert_eq!(copy.content_type.as_deref(), Some("text/csv"));
    assert_eq!(copy.custom_metadata, request.custom_metadata);
    let got = gcs.get_object(&bucket, "dir/dst.csv").await.expect("get copy");
    assert_eq!(got.generation, copy.generation);
    assert_eq!(got.custom_metadata, request.custom_metadata);
    assert_eq!(read_all(&gcs, &bucket, "dir/dst.csv", got.size).await, b"a,b\n1,2\n");
    assert_eq!(gcs.get_object(&bucket, "src.csv").await.expect("source stays").generation, source.generation);

    let plain = gcs
        .copy_object(&CopyObject {
            bucket: bucket.clone(),
            source: "src.csv".to_string(),
            destination: "plain.csv".to_string(),
            ..Default::default()
        })
        .await
        .expect("copy without generation");
    assert_eq!(plain.custom_metadata, request.custom_metadata);

    let stale = gcs
        .copy_object(&CopyObject {
            bucket: bucket.clone(),
            source: "src.csv".to_string(),
            destination: "x".to_string(),
            if_source_generation_match: Some(source.generation + 1),
        })
        .await
        .expect_err("stale");
    assert_eq!(stale.kind, ErrorKind::PreconditionFailed, "{stale}");
    let missing = gcs
        .copy_object(&CopyObject {
            bucket: bucket.clone(),
            source: "nope".to_string(),
            destination: "x".to_string(),
            ..Default::default()
        })
        .await
        .expect_err("no source");
    assert_eq!(missing.kind, ErrorKind::NotFound, "{missing}");
    let missing = gcs
        .copy_object(&CopyObject {
            bucket: bucket.clone(),
            source: "nope".to_string(),
            destination: "x".to_string(),
            if_source_generation_match: Some(5),
        })
        .await
        .expect_err("no source");
    assert_eq!(missing.kind, ErrorKind::NotFound, "{missing}");
    assert_eq!(gcs.get_object(&bucket, "x").await.expect_err("no copy made").kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn buckets_are_created_once_and_deleted_when_empty() {
    let gcs = gcs().await;
    let bucket = bucket_name("buckets");
    let settings = BucketSettings { versioning: true, ..BucketSettings::default() };
    let created = gcs.create_bucket(PROJECT, &bucket, &settings).await.expect("create");
    assert_eq!((created.name.as_str(), created.versioning), (bucket.as_str(), true));
    assert_eq!(gcs.get_bucket(&bucket).await.expect("get").name, bucket);
    let again = gcs.create_bucket(PROJECT, &bucket, &BucketSettings::default()).await.expect_err("exists");
    assert_eq!(again.kind, ErrorKind::AlreadyExists, "{again}");

    gcs.upload_object(&upload(&bucket, "o", b"o")).await.expect("upload");
    let full = gcs.delete_bucket(&bucket).await.expect_err("not empty");
    assert_eq!(full.kind, ErrorKind::AlreadyExists, "{full}");
    gcs.delete_object(&bucket, "o", None).await.expect("delete object");

    // Versioning turned off; fake-gcs-server keeps no labels, so only the
    // versioning shows a change was made.
    let change = BucketChange { versioning: false, ..BucketChange::default() };
    let changed = gcs.update_bucket(&bucket, &change, None).await.expect("update");
    assert!(!changed.versioning && !gcs.get_bucket(&bucket).await.expect("get").versioning);
    let labels = BucketChange { labels: BTreeMap::from([("env".to_string(), Some("dev".to_string()))]), ..change };
    gcs.update_bucket(&bucket, &labels, None).await.expect("a label change is accepted");
    let missing = gcs.update_bucket(&bucket_name("nope"), &labels, None).await.expect_err("no bucket");
    assert_eq!(missing.kind, ErrorKind::NotFound, "{missing}");

    gcs.delete_bucket(&bucket).await.expect("delete empty bucket");
    assert_eq!(gcs.get_bucket(&bucket).await.expect_err("deleted").kind, ErrorKind::NotFound);
    let gone = gcs.delete_bucket(&bucket).await.expect_err("already deleted");
    assert_eq!(gone.kind, ErrorKind::NotFound, "{gone}");
}

#[tokio::test]
async fn an_upload_into_a_missing_bucket_is_not_found() {
    let gcs = gcs().await;
    let bucket = bucket_name("missing");
    let small = gcs.upload_object(&upload(&bucket, "o", b"o")).await.expect_err("no bucket");
    assert_eq!(small.kind, ErrorKind::NotFound, "{small}");
    let large = gcs.upload_object(&upload(&bucket, "o", &pattern(17 * MIB))).await.expect_err("no bucket");
    assert_eq!(large.kind, ErrorKind::NotFound, "{large}");
}

#[tokio::test]
async fn a_metadata_patch_sets_content_type_and_adds_and_removes_keys() {
    let gcs = gcs().await;
    let bucket = new_bucket(&gcs, "patch").await;
    let request =
        Upload { custom_metadata: metadata(&[("keep", "1"), ("drop", "2")]), ..upload(&bucket, "p.txt", b"data") };
    let uploaded = gcs.upload_object(&request).await.expect("upload");
    let change = BTreeMap::from([("team".to_string(), Some("data".to_string())), ("drop".to_string(), None)]);
    let patched = gcs
        .patch_object_metadata(&PatchObjectMetadata {
            bucket: bucket.clone(),
            name: "p.txt".to_string(),
            content_type: Some("text/csv".to_string()),
            custom_metadata: change.clone(),
            ..Default::default()
        })
        .await
        .expect("patch");
    assert_eq!(patched.content_type.as_deref(), Some("text/csv"));
    // A removed key is sent as null, which removes it on Cloud Storage;
    // fake-gcs-server keeps it with an empty value.
    let removed = patched.custom_metadata.get("drop").is_none_or(String::is_empty);
    assert!(removed, "{:?}", patched.custom_metadata);
    let kept: BTreeMap<_, _> = patched.custom_metadata.clone().into_iter().filter(|(k, _)| k != "drop").collect();
    assert_eq!(kept, metadata(&[("keep", "1"), ("team", "data")]), "a patch adds keys and keeps the others");
    assert_eq!(patched.generation, uploaded.generation, "the data is the same generation");
    let got = gcs.get_object(&bucket, "p.txt").await.expect("get");
    assert_eq!((got.content_type, got.custom_metadata), (patched.content_type, patched.custom_metadata));
    assert_eq!(read_all(&gcs, &bucket, "p.txt", 4).await, b"data");
    let missing = gcs
        .patch_object_metadata(&PatchObjectMetadata {
            bucket: bucket.clone(),
            name: "nope".to_string(),
            ..Default::default()
        })
        .await;
    assert_eq!(missing.err().map(|e| e.kind), Some(ErrorKind::NotFound));
}

/// A service that refuses a request without a length (411): the streamed
/// upload fails, and later ones are not tried again (each would send the
/// file twice: streamed, then whole).
#[tokio::test]
async fn a_service_refusing_uploads_without_a_length_ends_streaming() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = requests.clone();
    std::thread::spawn(move || {
        for mut client in listener.incoming().flatten() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut head = [0; 4096];
            let _ = client.read(&mut head);
            let _ = client.write_all(b"HTTP/1.1 411 Length Required\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    let retry = RetryPolicy { attempts: 1, stall_timeout: Duration::from_secs(5), ..RetryPolicy::default() };
    let gcs = GoogleGcs::connect(GcsConfig { emulator: Some(url), retry, ..GcsConfig::default() }).await.unwrap();
    let streamed = || {
        let (sender, progress) = tokio::sync::watch::channel(Written { len: 3, complete: false });
        let file = staged(b"abc");
        (sender, StreamedUpload { upload: Upload { source: file, ..upload("b", "o", b"") }, progress })
    };
    let (_sender, first) = streamed();
    assert!(gcs.upload_streamed(first).await.is_err());
    let seen = requests.load(std::sync::atomic::Ordering::SeqCst);
    assert!(seen >= 1, "the first streamed upload was sent");
    let (_sender, second) = streamed();
    let refused = gcs.upload_streamed(second).await.expect_err("not streamed any more");
    assert!(refused.message.contains("refused"), "{refused}");
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), seen, "nothing sent for the second");
}

/// A policy of small stall timeout and window, for the stall tests.
fn quick_stalls(stall_secs: u64, window_secs: u64) -> RetryPolicy {
    RetryPolicy {
        stall_timeout: Duration::from_secs(stall_secs),
        window: Duration::from_secs(window_secs),
        ..RetryPolicy::default()
    }
}

/// A client of the service at `url` (no emulator check) with `retry`.
async fn gcs_at(url: &str, retry: RetryPolicy) -> GoogleGcs {
    GoogleGcs::connect(GcsConfig { emulator: Some(url.to_string()), retry, ..GcsConfig::default() })
        .await
        .expect("client")
}

/// A service that takes every connection and reads nothing from it, as a
/// frozen server does: its URL and a count of the connections.
fn a_service_that_stops_reading() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for client in listener.incoming().flatten() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(client);
        }
    });
    (url, connections)
}

/// A proxy to `upstream` that passes what clients send on slowly
/// (`piece` bytes every `every`) and the answers at once: a slow but
/// moving link. Its URL and a count of the connections.
fn a_slow_proxy(upstream: &str, piece: usize, every: Duration) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::Read;
    let target = upstream.trim_start_matches("http://").trim_end_matches('/').to_string();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = connections.clone();
    std::thread::spawn(move || {
        for mut client in listener.incoming().flatten() {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let Ok(mut server) = std::net::TcpStream::connect(&target) else { continue };
            let (mut answers, mut to_client) = (server.try_clone().unwrap(), client.try_clone().unwrap());
            std::thread::spawn(move || std::io::copy(&mut answers, &mut to_client));
            std::thread::spawn(move || {
                let mut buffer = vec![0; piece];
                while let Ok(n @ 1..) = client.read(&mut buffer) {
                    if server.write_all(&buffer[..n]).is_err() {
                        break;
                    }
                    std::thread::sleep(every);
                }
                let _ = server.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (url, connections)
}

/// Both bounds at once: the window (3 s) lets a second attempt start, the
/// attempts (5) are not what ends it, and the call fails within the window
/// and one stall (2 s) although nothing ever answers.
#[tokio::test]
async fn an_upload_to_a_service_that_stops_reading_fails_within_the_window() {
    let (url, connections) = a_service_that_stops_reading();
    let gcs = gcs_at(&url, quick_stalls(2, 3)).await;
    // Larger than the socket buffers, which take a few MiB.
    let data = pattern(32 * MIB);
    let started = std::time::Instant::now();
    let error = gcs.upload_object(&upload("b", "o", &data)).await.expect_err("nothing answers");
    let elapsed = started.elapsed();
    // Failed by the progress watchdog (the kernel's bound on unacknowledged
    // bytes comes a little later): a stall, not a reset.
    assert_eq!(error.kind, ErrorKind::Stalled, "{error}");
    assert!(elapsed <= Duration::from_secs(3 + 2 + 1), "failed after {elapsed:?}");
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 2, "two attempts in the window");
}

/// A streamed request whose writer has bytes the service does not take is
/// a stall; it is not retried (the caller has the whole file for that).
#[tokio::test]
async fn a_streamed_upload_to_a_service_that_stops_reading_stalls() {
    let (url, connections) = a_service_that_stops_reading();
    let gcs = gcs_at(&url, quick_stalls(2, 3)).await;
    let data = pattern(32 * MIB);
    let file = staged(&data);
    // All written, not complete: the writer is still there, with bytes.
    let (_writer, progress) = tokio::sync::watch::channel(Written { len: data.len() as u64, complete: false });
    let streamed = StreamedUpload { upload: Upload { source: file, ..upload("b", "o", b"") }, progress };
    let started = std::time::Instant::now();
    let error = gcs.upload_streamed(streamed).await.expect_err("nothing answers");
    let elapsed = started.elapsed();
    assert_eq!(error.kind, ErrorKind::Stalled, "{error}");
    assert!(elapsed <= Duration::from_secs(2 + 1), "failed after {elapsed:?}");
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1);
}

/// An upload through a slow link lasts several times the stall timeout
/// and window, and is neither cut nor retried. (The stall timeout is 2 s:
/// the last few MiB sit in socket buffers once the body is all sent, and
/// leave them at the link's rate before the answer comes.)
#[tokio::test]
async fn a_slow_upload_that_keeps_moving_is_not_cut() {
    let emulator = gcs().await;
    let bucket = new_bucket(&emulator, "slow").await;
    let endpoint = GcsConfig::from_env().emulator.expect("emulator");
    // About 5 MiB/s.
    let (url, connections) = a_slow_proxy(&endpoint, 256 * 1024, Duration::from_millis(50));
    let gcs = gcs_at(&url, quick_stalls(2, 1)).await;
    let data = pattern(48 * MIB);
    let started = std::time::Instant::now();
    let uploaded = gcs.upload_object(&upload(&bucket, "slow.bin", &data)).await.expect("a slow upload");
    let elapsed = started.elapsed();
    assert!(elapsed > Duration::from_secs(2 * (2 + 1)), "not slow enough to show anything: {elapsed:?}");
    assert_eq!(connections.load(std::sync::atomic::Ordering::SeqCst), 1, "one attempt");
    assert!(read_all(&emulator, &bucket, "slow.bin", uploaded.size).await == data, "the bytes read back differ");
}

/// A writer that pauses longer than the stall timeout (but less than the
/// idle time that abandons a stream) does not stall the request.
#[tokio::test]
async fn a_streamed_upload_waits_for_a_pausing_writer() {
    let endpoint = GcsConfig::from_env().emulator.expect("emulator");
    let check = gcs().await;
    let bucket = new_bucket(&check, "pausing").await;
    let gcs = gcs_at(&endpoint, quick_stalls(1, 1)).await;
    let data = pattern(2 * MIB);
    let file = Arc::new(tempfile::tempfile().expect("staging file"));
    let (sender, progress) = tokio::sync::watch::channel(Written::default());
    let streamed =
        StreamedUpload { upload: Upload { source: file.clone(), ..upload(&bucket, "p.bin", b"") }, progress };
    let uploading = tokio::spawn(async move { gcs.upload_streamed(streamed).await });
    let pause = async |_| tokio::time::sleep(Duration::from_secs(3)).await;
    write_growing(&file, &data, 2, sender, pause, false).await;
    let uploaded = uploading.await.expect("task").expect("the paused stream goes on");
    assert!(read_all(&check, &bucket, "p.bin", uploaded.size).await == data, "the bytes read back differ");
}

/// A read from a service that takes the request and never answers fails
/// as a stall, within the window and one stall timeout.
#[tokio::test]
async fn a_read_from_a_service_that_never_answers_stalls() {
    let (url, _) = a_service_that_stops_reading();
    let gcs = gcs_at(&url, quick_stalls(2, 3)).await;
    let started = std::time::Instant::now();
    let error = read_range(&gcs, "b", "o", None, 0..10).await.expect_err("nothing answers");
    assert_eq!(error.kind, ErrorKind::Stalled, "{error}");
    assert!(started.elapsed() <= Duration::from_secs(3 + 2 + 1), "failed after {:?}", started.elapsed());
}

/// A service that answers every request with `answer` (then closes).
fn a_service_answering(answer: &'static str) -> String {
    a_service_answering_recorded(answer).0
}

/// `a_service_answering`, keeping the head of every request it was sent
/// (lowercased).
fn a_service_answering_recorded(answer: &'static str) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorded = heads.clone();
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let mut reader = BufReader::new(client.try_clone().unwrap());
            let (mut head, mut line) = (String::new(), String::new());
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                head.push_str(&line.to_ascii_lowercase());
                line.clear();
            }
            recorded.lock().unwrap().push(head);
            let _ = (&client).write_all(answer.as_bytes());
        }
    });
    (url, heads)
}

/// A read that covers the whole object (its size known) is sent without a
/// `Range` header; one of a part of it with one.
#[tokio::test]
async fn a_whole_read_asks_without_a_range_and_a_part_with_one() {
    let retry = RetryPolicy { attempts: 1, ..quick_stalls(2, 3) };
    let whole =
        "HTTP/1.1 200 OK\r\nx-goog-generation: 42\r\ncontent-length: 11\r\nconnection: close\r\n\r\nhello world";
    let (url, heads) = a_service_answering_recorded(whole);
    let gcs = gcs_at(&url, retry).await;
    let request = |range: std::ops::Range<u64>| ReadObject {
        bucket: "b".to_string(),
        name: "o".to_string(),
        range,
        object_size: Some(11),
        ..Default::default()
    };
    for range in [0..11, 0..5] {
        let body = gcs.read_object(&request(range.clone())).await.expect("read");
        let bytes: Vec<Bytes> = body.bytes.try_collect().await.expect("body");
        assert_eq!(bytes.concat(), b"hello world"[range.start as usize..range.end as usize]);
    }
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(!heads[0].contains("\r\nrange:"), "the whole object: {}", heads[0]);
    assert!(heads[1].contains("\r\nrange: bytes=0-4\r\n"), "a part: {}", heads[1]);
}

/// A range answered with the whole object (200, as a server that ignores
/// ranges sends) is cut to the range; an unpinned answer that does not say
/// its generation is refused (whose bytes would they be?), a pinned one is
/// of the generation it named.
#[tokio::test]
async fn a_whole_answer_is_cut_to_the_range_and_an_unnamed_generation_is_refused() {
    let retry = RetryPolicy { attempts: 1, ..quick_stalls(2, 3) };
    let whole =
        "HTTP/1.1 200 OK\r\nx-goog-generation: 42\r\ncontent-length: 11\r\nconnection: close\r\n\r\nhello world";
    let gcs = gcs_at(&a_service_answering(whole), retry).await;
    assert_eq!(read_range(&gcs, "b", "o", None, 4..9).await.expect("read"), (42, b"o wor".to_vec()));
    let unnamed = "HTTP/1.1 206 Partial Content\r\ncontent-range: bytes 4-8/11\r\ncontent-length: 5\r\n\
                   connection: close\r\n\r\no wor";
    let gcs = gcs_at(&a_service_answering(unnamed), retry).await;
    let error = read_range(&gcs, "b", "o", None, 4..9).await.expect_err("no generation");
    assert_eq!(error.kind, ErrorKind::Other, "{error}");
    assert!(error.message.contains("gs://b/o"), "{error}");
    assert_eq!(read_range(&gcs, "b", "o", Some(7), 4..9).await.expect("pinned"), (7, b"o wor".to_vec()));
}

/// A fake Cloud Storage that starts resumable sessions (their URL carries
/// `upload_id=SECRET-SESSION`) and answers every chunk with `chunk_answer`
/// (`None`: closes the connection without an answer).
fn a_service_that_fails_chunks(chunk_answer: Option<&'static str>) -> String {
    use std::io::{BufRead, BufReader, Read};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let session = format!("{url}/upload/storage/v1/b/b/o?uploadType=resumable&upload_id=SECRET-SESSION");
    std::thread::spawn(move || {
        for client in listener.incoming().flatten() {
            let mut reader = BufReader::new(client.try_clone().unwrap());
            let (mut head, mut line) = (String::new(), String::new());
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                head.push_str(&line);
                line.clear();
            }
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_string()))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            let _ = std::io::copy(&mut reader.by_ref().take(length), &mut std::io::sink());
            let answer = if head.starts_with("POST") {
                Some(format!(
                    "HTTP/1.1 200 OK\r\nlocation: {session}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                ))
            } else if head.starts_with("PUT") {
                chunk_answer.map(|body| {
                    let status = if body.starts_with('{') { "503 Service Unavailable" } else { "400 Bad Request" };
                    let body = body.replace("SESSION_URL", &session);
                    format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len())
                })
            } else {
                Some("HTTP/1.1 499 Client Closed Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".into())
            };
            if let Some(answer) = answer {
                let _ = (&client).write_all(answer.as_bytes());
            }
        }
    });
    url
}

/// Whatever way a chunk fails (an HTTP error naming the URL, a service
/// message that quotes it, a connection closed), the error names no
/// session: no `upload_id=`, no session URL.
#[tokio::test]
async fn a_failed_resumable_upload_names_no_session_url() {
    let retry = RetryPolicy { attempts: 2, ..quick_stalls(2, 3) };
    let echoed = r#"{"error": {"code": 503, "message": "session SESSION_URL is gone", "errors": []}}"#;
    for chunk_answer in [Some("plain refusal"), Some(echoed), None] {
        let url = a_service_that_fails_chunks(chunk_answer);
        let gcs = GoogleGcs::connect(GcsConfig { emulator: Some(url), retry, upload_chunk: 256 * 1024 })
            .await
            .expect("client");
        let error = gcs.upload_object(&upload("b", "o", &pattern(300 * 1024))).await.expect_err("chunks fail");
        let text = error.to_string();
        assert!(text.contains("bytes 0..262144"), "the error says which chunk: {text}");
        assert!(!text.contains("upload_id=") && !text.contains("SECRET-SESSION"), "{text}");
        assert!(!text.contains("uploadType=resumable"), "no session URL: {text}");
    }
}
