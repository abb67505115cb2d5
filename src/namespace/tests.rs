//! The namespace's logic against the in-memory Cloud Storage: which calls
//! a listing makes, paging and cookies, names that cannot be files.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use ciofs_backends::memory::{MemoryBigQuery, MemoryGcs};
use ciofs_frontends::{FileKind, Ino, ROOT_INO, Vfs};

use super::{Namespace, Options, Services};

/// Options with a staging directory of this test's own (staged files and
/// journal records of parallel tests must not meet).
pub(super) fn test_options() -> Options {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("ciofs-unit-{}-{n}", std::process::id()));
    Options { staging_dir: dir, ..Options::default() }
}

pub(super) fn services(gcs: &Arc<MemoryGcs>) -> Services {
    Services {
        gcs: gcs.clone(),
        bigquery: Arc::new(MemoryBigQuery::new()),
        pubsub: Arc::new(ciofs_backends::memory::MemoryPubSub::new()),
    }
}

fn namespace(gcs: &Arc<MemoryGcs>, page_size: u32) -> Namespace {
    let options = Options { page_size, ..test_options() };
    Namespace::new(vec!["p".to_string()], services(gcs), options)
}

/// A namespace on an in-memory Pub/Sub holding topic `topic` and its
/// subscription `sub` in project `p`.
pub(super) fn pubsub_namespace() -> (Arc<ciofs_backends::memory::MemoryPubSub>, Namespace) {
    let pubsub = Arc::new(ciofs_backends::memory::MemoryPubSub::new());
    let settings = ciofs_backends::pubsub::SubscriptionSettings::default();
    pubsub.put_subscription("p", "sub", "topic", settings);
    let services =
        Services { gcs: Arc::new(MemoryGcs::new()), bigquery: Arc::new(MemoryBigQuery::new()), pubsub: pubsub.clone() };
    (pubsub, Namespace::new(vec!["p".to_string()], services, test_options()))
}

/// A namespace that caches no metadata: each call finds what Cloud Storage
/// holds now, as it would once the cache expired.
fn uncached_namespace(gcs: &Arc<MemoryGcs>) -> Namespace {
    let options = Options { metadata_ttl: std::time::Duration::ZERO, ..test_options() };
    Namespace::new(vec!["p".to_string()], services(gcs), options)
}

pub(super) async fn walk(ns: &Namespace, path: &str) -> Ino {
    let mut ino = ROOT_INO;
    for part in path.split('/') {
        ino = ns.lookup(ino, part).await.unwrap_or_else(|e| panic!("{path}: {e}")).ino;
    }
    ino
}

/// Every name of a directory, `max` entries per readdir call.
pub(super) async fn names(ns: &Namespace, dir: Ino, max: usize) -> Vec<String> {
    names_through(ns, dir, 7, max).await
}

/// Every name of a directory read through the handle `fh`, `max` entries
/// per readdir call.
async fn names_through(ns: &Namespace, dir: Ino, fh: u64, max: usize) -> Vec<String> {
    let (mut names, mut after) = (Vec::new(), 0);
    loop {
        let page = ns.readdir(dir, Some(fh), after, max).await.unwrap();
        names.extend(page.entries.iter().map(|e| e.name.clone()));
        match page.entries.last() {
            Some(last) if !page.eof => after = last.attr.ino,
            _ => return names,
        }
    }
}

#[tokio::test]
async fn a_listing_makes_one_call_per_page_and_no_call_per_entry() {
    let gcs = Arc::new(MemoryGcs::new());
    for i in 0..250 {
        gcs.put_object("b", &format!("d/f{i:03}"), vec![0; i]);
    }
    let ns = namespace(&gcs, 100);
    let dir = walk(&ns, "p/storage/b/d").await;
    let before = gcs.calls.list_objects.load(Ordering::SeqCst);
    let listed = names(&ns, dir, 30).await;
    assert_eq!(listed.len(), 251);
    assert_eq!(listed[0], ".meta");
    assert_eq!(gcs.calls.list_objects.load(Ordering::SeqCst) - before, 3, "250 entries, 100 a page");
    // `ls -l` then stats each entry: all from the listing.
    let gets = gcs.calls.get_object.load(Ordering::SeqCst);
    for i in [0, 17, 249] {
        let attr = ns.lookup(dir, &format!("f{i:03}")).await.unwrap();
        assert_eq!((attr.kind, attr.size), (FileKind::File, i as u64));
        ns.getattr(attr.ino).await.unwrap();
    }
    assert_eq!(gcs.calls.get_object.load(Ordering::SeqCst), gets, "no get per entry");
}

#[tokio::test]
async fn a_listing_resumes_from_a_cookie_after_its_stream_is_gone() {
    let gcs = Arc::new(MemoryGcs::new());
    for name in ["a", "b/x", "c", "d/y", "e"] {
        gcs.put_object("b", name, "1");
    }
    let ns = namespace(&gcs, 2);
    let dir = walk(&ns, "p/storage/b").await;
    let first = ns.readdir(dir, None, 0, 3).await.unwrap();
    let got: Vec<&str> = first.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(got, [".meta", "a", "b"]);
    // A new handle (as after an NFS restart) continues from the cookie alone.
    let rest = ns.readdir(dir, Some(99), first.entries[2].attr.ino, 10).await.unwrap();
    let got: Vec<&str> = rest.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(got, ["c", "d", "e"]);
    assert!(rest.eof);
    // A step back within what was handed out does not list again.
    let calls = gcs.calls.list_objects.load(Ordering::SeqCst);
    let again = ns.readdir(dir, Some(99), rest.entries[0].attr.ino, 10).await.unwrap();
    let got: Vec<&str> = again.entries.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(got, ["d", "e"]);
    assert_eq!(gcs.calls.list_objects.load(Ordering::SeqCst), calls);
}

#[tokio::test]
async fn odd_names_are_left_out_and_a_prefix_wins_over_an_object() {
    let gcs = Arc::new(MemoryGcs::new());
    let long = "l".repeat(256);
    for name in ["ok", "both", "both/in", "x//y", "dot/./z", ".meta/q", long.as_str(), "empty/"] {
        gcs.put_object("b", name, "1");
    }
    let ns = namespace(&gcs, 1000);
    let root = walk(&ns, "p/storage/b").await;
    assert_eq!(names(&ns, root, 100).await, [".meta", "both", "dot", "empty", "ok", "x"]);
    assert_eq!(ns.lookup(root, "both").await.unwrap().kind, FileKind::Directory);
    let x = walk(&ns, "p/storage/b/x").await;
    assert_eq!(names(&ns, x, 100).await, [".meta"]);
    assert_eq!(ns.lookup(x, "").await.unwrap_err().errno(), libc::ENOENT);
    assert_eq!(ns.lookup(root, &long).await.unwrap_err().errno(), libc::ENAMETOOLONG);
    let empty = walk(&ns, "p/storage/b/empty").await;
    assert_eq!(names(&ns, empty, 100).await, [".meta"], "the placeholder is not a file");
}

#[tokio::test]
async fn meta_documents_list_after_the_bucket_document_with_exact_sizes() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.put_object("b", "one.txt", "1");
    gcs.put_object("b", "sub/two.txt", "22");
    let ns = namespace(&gcs, 1000);
    let meta = walk(&ns, "p/storage/b/.meta").await;
    assert_eq!(names(&ns, meta, 100).await, ["_bucket.json", "one.txt.json"]);
    let attr = ns.lookup(meta, "one.txt.json").await.unwrap();
    let (bytes, eof) = ns.read(attr.ino, None, 0, 1 << 20).await.unwrap();
    assert!(eof);
    assert_eq!(bytes.len() as u64, attr.size);
    let sub_meta = walk(&ns, "p/storage/b/sub/.meta").await;
    assert_eq!(names(&ns, sub_meta, 100).await, ["two.txt.json"]);
    assert_eq!(ns.lookup(sub_meta, "_bucket.json").await.unwrap_err().errno(), libc::ENOENT);
}

#[tokio::test]
async fn dot_and_dotdot_resolve_for_nfs_and_unknown_inodes_are_stale() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.put_object("b", "a/b/c", "1");
    let ns = namespace(&gcs, 1000);
    let b = walk(&ns, "p/storage/b/a/b").await;
    let a = walk(&ns, "p/storage/b/a").await;
    assert_eq!(ns.lookup(b, "..").await.unwrap().ino, a);
    assert_eq!(ns.lookup(b, ".").await.unwrap().ino, b);
    assert_eq!(ns.getattr(12345).await.unwrap_err().errno(), libc::ESTALE);
}

/// `tar x` over an existing file through FUSE: unlink, create again, and
/// the kernel's FORGET of the removed file's inode arriving only after the
/// create (FUSE sends forgets on its own queue). The new file stays named:
/// its GETATTR and a LOOKUP of its name answer it, not ESTALE.
#[tokio::test]
async fn a_late_forget_of_a_replaced_file_leaves_the_new_file_named() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.put_object("b", "a/1", "old");
    let ns = namespace(&gcs, 1000);
    let dir = walk(&ns, "p/storage/b/a").await;
    let old = ns.lookup(dir, "1").await.unwrap().ino;
    ns.unlink(dir, "1").await.unwrap();
    let (attr, opened) = ns.create(dir, "1", 0o644).await.unwrap();
    ns.write(attr.ino, Some(opened.fh), 0, b"new").await.unwrap();
    ns.flush(attr.ino, opened.fh).await.unwrap();
    ns.release(attr.ino, opened.fh).await.unwrap();
    ns.forget(old, 1);
    let stat = ns.getattr(attr.ino).await.unwrap_or_else(|e| panic!("getattr of the new file: {e}"));
    assert_eq!(stat.size, 3);
    let found = ns.lookup(dir, "1").await.unwrap();
    assert_eq!((found.ino, found.size), (attr.ino, 3), "a lookup finds the new file's inode");
}

#[tokio::test]
async fn an_object_and_its_prefix_twin_on_different_pages_show_once_as_a_directory() {
    let gcs = Arc::new(MemoryGcs::new());
    // `a` on the first page, `a/` only after a page boundary.
    gcs.put_object("b", "a", "object");
    for i in 0..9 {
        gcs.put_object("b", &format!("a-{i}"), "1");
    }
    gcs.put_object("b", "a/inside", "1");
    gcs.put_object("b", "b", "1");
    let ns = namespace(&gcs, 4);
    let root = walk(&ns, "p/storage/b").await;
    let listed = names(&ns, root, 3).await;
    let expected: Vec<String> = [".meta"]
        .into_iter()
        .map(String::from)
        .chain((0..9).map(|i| format!("a-{i}")))
        .chain(["a".to_string(), "b".to_string()])
        .collect();
    // Key order: `a-0` .. `a-8` sort before `a/`.
    assert_eq!(listed, expected);
    let a = ns.lookup(root, "a").await.unwrap();
    assert_eq!(a.kind, FileKind::Directory);
}

#[tokio::test]
async fn a_cached_listing_lists_as_its_pages_did_in_every_slicing() {
    let gcs = Arc::new(MemoryGcs::new());
    // Objects and prefixes interleaved, and an object whose prefix twin
    // sorts after names that start with it.
    for name in ["a", "a-0", "a-1", "a/x", "b/y", "c", "c.d", "c0/z", "d", "e/f", "g"] {
        gcs.put_object("b", name, "1");
    }
    for page_size in 1..5 {
        let ns = namespace(&gcs, page_size);
        let root = walk(&ns, "p/storage/b").await;
        let lists = || gcs.calls.list_objects.load(Ordering::SeqCst);
        let cold = listed(&ns, root).await;
        assert_eq!(cold, [".meta", "a-0", "a-1", "a", "b", "c", "c.d", "c0", "d", "e", "g"], "page size {page_size}");
        let calls = lists();
        for max in 1..4 {
            assert_eq!(names_through(&ns, root, 100 + max as u64, max).await, cold, "page size {page_size}, {max}");
        }
        // Resumed from each cookie with a new handle, as after a restart.
        let inodes: Vec<Ino> = {
            let fh = ns.opendir(root).await.unwrap();
            ns.readdir(root, Some(fh), 0, 100).await.unwrap().entries.iter().map(|e| e.attr.ino).collect()
        };
        for (at, cookie) in inodes.iter().enumerate() {
            let rest = ns.readdir(root, Some(1000 + at as u64), *cookie, 100).await.unwrap();
            let names: Vec<&str> = rest.entries.iter().map(|e| e.name.as_str()).collect();
            assert_eq!(names, cold[at + 1..], "page size {page_size}, after {}", cold[at]);
        }
        assert_eq!(lists(), calls, "page size {page_size}: all from the cached listing");
    }
}

#[tokio::test]
async fn a_stream_of_a_cached_listing_holds_one_page_at_a_time() {
    let gcs = Arc::new(MemoryGcs::new());
    for i in 0..500 {
        gcs.put_object("b", &format!("d/f{i:03}"), "1");
    }
    let ns = namespace(&gcs, 10);
    let dir = walk(&ns, "p/storage/b/d").await;
    // Listing `.meta/` caches the listing and makes no inode of an object.
    assert_eq!(listed(&ns, walk(&ns, "p/storage/b/d/.meta").await).await.len(), 500);
    let before = ns.cx.inodes.count();
    let first = ns.readdir(dir, Some(1), 0, 3).await.unwrap();
    assert_eq!(first.entries.len(), 3);
    let made = ns.cx.inodes.count() - before;
    assert!(made <= 10, "{made} entries made for 3 read: the stream took more than a page");
    let rest = ns.readdir(dir, Some(1), first.entries[2].attr.ino, 1000).await.unwrap();
    assert_eq!(rest.entries.len(), 498, "the rest, after the first 2 objects");
}

#[tokio::test]
async fn a_cookie_from_another_directory_is_refused() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.put_object("b", "x/1", "1");
    gcs.put_object("b", "y/2", "1");
    let ns = namespace(&gcs, 1000);
    let x = walk(&ns, "p/storage/b/x").await;
    let y = walk(&ns, "p/storage/b/y").await;
    let in_x = ns.lookup(x, "1").await.unwrap().ino;
    assert_eq!(ns.readdir(y, Some(5), in_x, 10).await.unwrap_err().errno(), libc::EINVAL);
}

#[tokio::test]
async fn a_directory_rename_past_the_limit_is_exdev_and_moves_nothing() {
    let gcs = Arc::new(MemoryGcs::new());
    for i in 0..5 {
        gcs.put_object("b", &format!("d/{i}"), "1");
    }
    let options = Options { rename_limit: 4, ..test_options() };
    let ns = Namespace::new(vec!["p".to_string()], services(&gcs), options);
    let root = walk(&ns, "p/storage/b").await;
    ns.lookup(root, "d").await.unwrap();
    assert_eq!(ns.rename(root, "d", root, "e").await.unwrap_err().errno(), libc::EXDEV);
    assert_eq!(gcs.calls.copy_object.load(Ordering::SeqCst), 0);
    let options = Options { rename_limit: 5, ..test_options() };
    let ns = Namespace::new(vec!["p".to_string()], services(&gcs), options);
    let root = walk(&ns, "p/storage/b").await;
    ns.rename(root, "d", root, "e").await.unwrap();
    assert_eq!(gcs.calls.copy_object.load(Ordering::SeqCst), 5);
    let e = walk(&ns, "p/storage/b/e").await;
    assert_eq!(names(&ns, e, 10).await, [".meta", "0", "1", "2", "3", "4"]);
}

#[tokio::test]
async fn renaming_a_directory_onto_a_non_empty_one_is_enotempty_and_changes_nothing() {
    let gcs = Arc::new(MemoryGcs::new());
    for (name, data) in [("a/f", "1"), ("b/f", "2"), ("b/g", "3"), ("c/", ""), ("x", "file")] {
        gcs.put_object("b", name, data);
    }
    let ns = namespace(&gcs, 1000);
    let root = walk(&ns, "p/storage/b").await;
    assert_eq!(ns.rename(root, "a", root, "b").await.unwrap_err().errno(), libc::ENOTEMPTY);
    assert_eq!(gcs.calls.copy_object.load(Ordering::SeqCst), 0);
    assert_eq!(ns.rename(root, "a", root, "x").await.unwrap_err().errno(), libc::ENOTDIR);
    assert_eq!(ns.rename(root, "x", root, "b").await.unwrap_err().errno(), libc::EISDIR);
    // An empty directory is replaced.
    ns.rename(root, "a", root, "c").await.unwrap();
    let c = walk(&ns, "p/storage/b/c").await;
    assert_eq!(names(&ns, c, 10).await, [".meta", "f"]);
}

/// What `ls` shows in a directory is in it: a file being written there that
/// Cloud Storage does not have (here: removed by another client, so the
/// directory is gone from Cloud Storage) makes it non-empty for a rename.
#[tokio::test]
async fn a_directory_rename_onto_one_holding_a_file_being_written_is_enotempty() {
    use ciofs_frontends::OpenFlags;
    let gcs = Arc::new(MemoryGcs::new());
    gcs.put_object("b", "d/z", "old");
    gcs.put_object("b", "e/z", "moved");
    let ns = uncached_namespace(&gcs);
    let z = walk(&ns, "p/storage/b/d/z").await;
    let opened = ns.open(z, OpenFlags { write: true, ..OpenFlags::default() }).await.unwrap();
    ns.write(z, Some(opened.fh), 0, b"new").await.unwrap();
    gcs.remove_object("b", "d/z");
    let root = walk(&ns, "p/storage/b").await;
    assert_eq!(ns.rename(root, "e", root, "d").await.unwrap_err().errno(), libc::ENOTEMPTY);
    assert_eq!(gcs.object_data("b", "e/z").as_deref(), Some(&b"moved"[..]), "nothing moved");
    assert_eq!(gcs.calls.copy_object.load(Ordering::SeqCst), 0);
}

/// A file open for write moves as its handles hold it: if another client
/// changed the object since, the rename is ESTALE and both names stay.
#[tokio::test]
async fn a_rename_of_an_open_file_changed_behind_is_estale_and_moves_nothing() {
    use ciofs_frontends::OpenFlags;
    let gcs = Arc::new(MemoryGcs::new());
    gcs.put_object("b", "f", "first");
    let ns = uncached_namespace(&gcs);
    let f = walk(&ns, "p/storage/b/f").await;
    let opened = ns.open(f, OpenFlags { write: true, ..OpenFlags::default() }).await.unwrap();
    gcs.put_object("b", "f", "theirs");
    let root = walk(&ns, "p/storage/b").await;
    assert_eq!(ns.rename(root, "f", root, "g").await.unwrap_err().errno(), libc::ESTALE);
    assert_eq!(gcs.object_data("b", "f").as_deref(), Some(&b"theirs"[..]));
    assert_eq!(gcs.object_data("b", "g"), None);
    ns.release(f, opened.fh).await.unwrap();
}

#[tokio::test]
async fn an_upload_over_a_version_changed_meanwhile_is_estale_and_keeps_the_other() {
    use ciofs_frontends::OpenFlags;
    let gcs = Arc::new(MemoryGcs::new());
    gcs.put_object("b", "f", "first");
    let ns = namespace(&gcs, 1000);
    let f = walk(&ns, "p/storage/b/f").await;
    let opened = ns.open(f, OpenFlags { write: true, truncate: true, append: false }).await.unwrap();
    ns.write(f, Some(opened.fh), 0, b"mine").await.unwrap();
    // Someone else writes the object while this handle is open.
    gcs.put_object("b", "f", "theirs");
    assert_eq!(ns.flush(f, opened.fh).await.unwrap_err().errno(), libc::ESTALE);
    assert_eq!(gcs.object_data("b", "f").as_deref(), Some(&b"theirs"[..]));
    ns.release(f, opened.fh).await.unwrap();
    assert_eq!(gcs.object_data("b", "f").as_deref(), Some(&b"theirs"[..]), "nothing retried at release");
}

/// FUSE sends RELEASE after close() returned: a change made through the
/// closed handle's file before its release (an ftruncate on another
/// descriptor) must not make the next open EBUSY (pjdfstest's
/// ftruncate::shrink_not_empty). A writer that stays busy still is.
#[tokio::test]
async fn an_open_for_write_waits_for_a_release_in_flight() {
    use ciofs_frontends::{OpenFlags, SetAttr};
    let gcs = Arc::new(MemoryGcs::new());
    gcs.put_object("b", "f", "0123456789");
    let ns = Arc::new(namespace(&gcs, 100));
    let ino = walk(&ns, "p/storage/b/f").await;
    let write = OpenFlags { write: true, ..OpenFlags::default() };
    let first = ns.open(ino, write).await.unwrap();
    ns.flush(ino, first.fh).await.unwrap();
    // Closed, its release not yet here; the file shrinks meanwhile.
    ns.setattr(ino, SetAttr { size: Some(3), ..SetAttr::default() }).await.unwrap();
    let releasing = {
        let ns = ns.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            ns.release(ino, first.fh).await
        })
    };
    let second = ns.open(ino, write).await.expect("the open waits for the release");
    releasing.await.unwrap().unwrap();
    assert_eq!(gcs.object_data("b", "f").unwrap().as_ref(), b"012");
    // A handle that keeps unflushed data makes the next open EBUSY.
    ns.write(ino, Some(second.fh), 0, b"x").await.unwrap();
    let busy = ns.open(ino, write).await.err().map(|e| e.errno());
    assert_eq!(busy, Some(libc::EBUSY));
}

/// `.meta/` before its object (tar x's order): kept, then given to the
/// upload; for an existing object: a patch, which also removes keys.
#[tokio::test]
async fn a_meta_document_sets_the_metadata_of_its_object() {
    use ciofs_frontends::OpenFlags;
    let gcs = Arc::new(MemoryGcs::new());
    gcs.put_object("b", "old", "x");
    let ns = namespace(&gcs, 1000);
    let meta_dir = walk(&ns, "p/storage/b/.meta").await;
    let doc = br#"{"content_type": "text/csv", "custom_metadata": {"k": "v"}}"#;
    let (attr, opened) = ns.create(meta_dir, "new.csv.json", 0o644).await.unwrap();
    ns.write(attr.ino, Some(opened.fh), 0, doc).await.unwrap();
    ns.flush(attr.ino, opened.fh).await.unwrap();
    ns.release(attr.ino, opened.fh).await.unwrap();
    assert_eq!(gcs.calls.patch_object.load(Ordering::SeqCst), 0, "no object yet: nothing to patch");
    assert_eq!(ns.lookup(meta_dir, "new.csv.json").await.unwrap().size, 0, "visible until its object comes");

    let bucket = walk(&ns, "p/storage/b").await;
    let (attr, opened) = ns.create(bucket, "new.csv", 0o644).await.unwrap();
    ns.write(attr.ino, Some(opened.fh), 0, b"a,b\n").await.unwrap();
    ns.flush(attr.ino, opened.fh).await.unwrap();
    ns.release(attr.ino, opened.fh).await.unwrap();
    let uploaded = gcs.object_meta("b", "new.csv").unwrap();
    assert_eq!(uploaded.content_type.as_deref(), Some("text/csv"));
    assert_eq!(uploaded.custom_metadata.get("k").map(String::as_str), Some("v"));

    let old = walk(&ns, "p/storage/b/.meta/old.json").await;
    let write = OpenFlags { write: true, truncate: true, append: false };
    let opened = ns.open(old, write).await.unwrap();
    ns.write(old, Some(opened.fh), 0, br#"{"custom_metadata": {"a": "1"}}"#).await.unwrap();
    ns.flush(old, opened.fh).await.unwrap();
    ns.release(old, opened.fh).await.unwrap();
    assert_eq!(gcs.object_meta("b", "old").unwrap().custom_metadata.get("a").map(String::as_str), Some("1"));
    // A key left out of `custom_metadata` is removed; a document without
    // it keeps them all.
    let opened = ns.open(old, write).await.unwrap();
    ns.write(old, Some(opened.fh), 0, br#"{"custom_metadata": {"b": "2"}}"#).await.unwrap();
    ns.flush(old, opened.fh).await.unwrap();
    ns.release(old, opened.fh).await.unwrap();
    let metadata = |gcs: &MemoryGcs| gcs.object_meta("b", "old").unwrap().custom_metadata;
    assert_eq!(metadata(&gcs), BTreeMap::from([("b".to_string(), "2".to_string())]));
    let opened = ns.open(old, write).await.unwrap();
    ns.write(old, Some(opened.fh), 0, br#"{"content_type": "text/plain"}"#).await.unwrap();
    ns.flush(old, opened.fh).await.unwrap();
    ns.release(old, opened.fh).await.unwrap();
    assert_eq!(metadata(&gcs).len(), 1);
}

/// Every name of `dir`, read from a fresh handle (as each `ls` opens one).
async fn listed(ns: &Namespace, dir: Ino) -> Vec<String> {
    let fh = ns.opendir(dir).await.unwrap();
    let names = names_through(ns, dir, fh, 100).await;
    ns.releasedir(dir, fh).await.unwrap();
    names
}

#[tokio::test]
async fn a_directory_and_its_meta_are_listed_once_within_the_ttl() {
    let gcs = Arc::new(MemoryGcs::new());
    for i in 0..25 {
        gcs.put_object("b", &format!("d/f{i:02}"), vec![0; i]);
    }
    gcs.put_object("b", "d/sub/x", "1");
    let ns = namespace(&gcs, 10);
    let dir = walk(&ns, "p/storage/b/d").await;
    let meta = walk(&ns, "p/storage/b/d/.meta").await;
    let lists = || gcs.calls.list_objects.load(Ordering::SeqCst);
    let before = lists();
    let first = listed(&ns, dir).await;
    assert_eq!(first.len(), 27, "{first:?}");
    assert_eq!(lists() - before, 3, "26 children, 10 a page");
    assert_eq!(listed(&ns, dir).await, first);
    let documents = listed(&ns, meta).await;
    assert_eq!(documents.len(), 25);
    assert!(documents.iter().all(|d| d.ends_with(".json")), "{documents:?}");
    assert_eq!(lists() - before, 3, "the second listing and .meta/'s come from the first");
    // And `.meta/` listed first serves the directory.
    let other = walk(&ns, "p/storage/b/d/sub/.meta").await;
    listed(&ns, other).await;
    let calls = lists();
    assert_eq!(listed(&ns, walk(&ns, "p/storage/b/d/sub").await).await, [".meta", "x"]);
    assert_eq!(lists(), calls);

    let uncached = uncached_namespace(&gcs);
    let dir = walk(&uncached, "p/storage/b/d").await;
    let before = lists();
    listed(&uncached, dir).await;
    listed(&uncached, dir).await;
    assert_eq!(lists() - before, 2, "--metadata-ttl 0 lists every time (one page each)");
}

#[tokio::test]
async fn changes_through_the_mount_show_in_a_cached_listing_at_once() {
    let gcs = Arc::new(MemoryGcs::new());
    gcs.put_object("b", "d/old", "1");
    gcs.put_object("b", "d/gone", "1");
    let ns = namespace(&gcs, 1000);
    let bucket = walk(&ns, "p/storage/b").await;
    let dir = walk(&ns, "p/storage/b/d").await;
    let meta = walk(&ns, "p/storage/b/d/.meta").await;
    assert_eq!(listed(&ns, dir).await, [".meta", "gone", "old"]);
    assert_eq!(listed(&ns, bucket).await, [".meta", "d"]);

    // Being written, then uploaded at close.
    let (attr, opened) = ns.create(dir, "new", 0o644).await.unwrap();
    assert_eq!(listed(&ns, dir).await, [".meta", "gone", "old", "new"], "not uploaded yet: after the listing");
    ns.write(attr.ino, Some(opened.fh), 0, b"abc").await.unwrap();
    ns.flush(attr.ino, opened.fh).await.unwrap();
    ns.release(attr.ino, opened.fh).await.unwrap();
    assert_eq!(listed(&ns, dir).await, [".meta", "gone", "new", "old"]);
    assert_eq!(listed(&ns, meta).await, ["gone.json", "new.json", "old.json"]);

    ns.unlink(dir, "gone").await.unwrap();
    ns.rename(dir, "old", dir, "renamed").await.unwrap();
    ns.mkdir(dir, "made", 0o755).await.unwrap();
    assert_eq!(listed(&ns, dir).await, [".meta", "made", "new", "renamed"]);
    assert_eq!(listed(&ns, meta).await, ["new.json", "renamed.json"]);
    ns.rmdir(dir, "made").await.unwrap();
    assert_eq!(listed(&ns, dir).await, [".meta", "new", "renamed"]);
    // A directory above shows a change below it too: the last object of
    // an implicit directory gone, the directory goes.
    ns.mkdir(bucket, "e", 0o755).await.unwrap();
    assert_eq!(listed(&ns, bucket).await, [".meta", "d", "e"]);
    ns.rmdir(bucket, "e").await.unwrap();
    assert_eq!(listed(&ns, bucket).await, [".meta", "d"]);

    // Behind the mount's back: not shown until `touch DIR`.
    gcs.put_object("b", "d/behind", "1");
    assert_eq!(listed(&ns, dir).await, [".meta", "new", "renamed"]);
    let touch = ciofs_frontends::SetAttr { mtime: Some(std::time::SystemTime::now()), ..Default::default() };
    ns.setattr(dir, touch).await.unwrap();
    assert_eq!(listed(&ns, dir).await, [".meta", "behind", "new", "renamed"]);
    assert_eq!(listed(&ns, meta).await, ["behind.json", "new.json", "renamed.json"]);
}

/// What FUSE is told at opendir (FOPEN_CACHE_DIR, FOPEN_KEEP_CACHE): the
/// kernel may keep a storage directory's listing, and what it kept is
/// still good while it was read whole from the listing cached now.
#[tokio::test]
async fn the_kernel_keeps_a_listing_only_while_ciofs_keeps_the_same_one() {
    use ciofs_frontends::DirCaching;
    let gcs = Arc::new(MemoryGcs::new());
    gcs.put_object("b", "d/a", "1");
    let ns = namespace(&gcs, 1000);
    let dir = walk(&ns, "p/storage/b/d").await;
    let meta = walk(&ns, "p/storage/b/d/.meta").await;
    let storage = walk(&ns, "p/storage").await;
    assert_eq!(ns.dir_caching(dir), DirCaching { cache: true, keep: false }, "nothing read yet");
    listed(&ns, dir).await;
    assert_eq!(ns.dir_caching(dir), DirCaching { cache: true, keep: true });
    assert_eq!(ns.dir_caching(meta), DirCaching { cache: true, keep: false }, "its .meta/ was not read");
    listed(&ns, meta).await;
    assert_eq!(ns.dir_caching(meta), DirCaching { cache: true, keep: true });
    // A change through the mount: both are read again.
    ns.unlink(dir, "a").await.unwrap();
    assert!(!ns.dir_caching(dir).keep);
    assert!(!ns.dir_caching(meta).keep);
    listed(&ns, dir).await;
    assert!(ns.dir_caching(dir).keep);
    // A file being written is listed from the writer, not the cache.
    let (attr, opened) = ns.create(dir, "new", 0o644).await.unwrap();
    listed(&ns, dir).await;
    assert!(!ns.dir_caching(dir).keep);
    ns.release(attr.ino, opened.fh).await.unwrap();
    // `touch DIR`.
    listed(&ns, dir).await;
    assert!(ns.dir_caching(dir).keep);
    let touch = ciofs_frontends::SetAttr { mtime: Some(std::time::SystemTime::now()), ..Default::default() };
    ns.setattr(dir, touch).await.unwrap();
    assert!(!ns.dir_caching(dir).keep);
    // The buckets of storage/ are listed every time; so is all with a zero TTL.
    assert_eq!(ns.dir_caching(storage), DirCaching::default());
    let uncached = uncached_namespace(&gcs);
    let dir = walk(&uncached, "p/storage/b/d").await;
    listed(&uncached, dir).await;
    assert_eq!(uncached.dir_caching(dir), DirCaching::default());
}

/// No call that changes Cloud Storage was made.
pub(super) fn assert_no_gcs_writes(gcs: &MemoryGcs) {
    let calls = &gcs.calls;
    for (what, count) in [
        ("uploads", &calls.upload_object),
        ("deletes", &calls.delete_object),
        ("copies", &calls.copy_object),
        ("patches", &calls.patch_object),
        ("buckets made", &calls.create_bucket),
    ] {
        assert_eq!(count.load(Ordering::SeqCst), 0, "{what}: no write reached Cloud Storage");
    }
}

/// The whole of a file, read through a handle of its own.
pub(super) async fn read_all(ns: &Namespace, ino: Ino) -> Vec<u8> {
    let opened = ns.open(ino, ciofs_frontends::OpenFlags::default()).await.expect("open");
    let (data, _) = ns.read(ino, Some(opened.fh), 0, 1 << 20).await.expect("read");
    ns.release(ino, opened.fh).await.expect("release");
    data.to_vec()
}

fn is_erofs<T>(result: ciofs_frontends::VfsResult<T>) -> bool {
    result.err().map(|e| e.errno()) == Some(libc::EROFS)
}

/// `--read-only`: every change is refused with EROFS before the services
/// are asked anything but reads; a `_stream` is neither opened nor read
/// without an open (reading it acknowledges); reads go on.
#[tokio::test]
async fn a_read_only_namespace_refuses_every_change_and_sends_only_reads() {
    use ciofs_backends::memory::PubSubOp;
    use ciofs_frontends::{OpenFlags, SetAttr};
    let gcs = Arc::new(MemoryGcs::new());
    gcs.put_object("b", "d/f", "kept");
    let pubsub = Arc::new(ciofs_backends::memory::MemoryPubSub::new());
    pubsub.put_subscription("p", "sub", "topic", ciofs_backends::pubsub::SubscriptionSettings::default());
    let services = Services { gcs: gcs.clone(), bigquery: Arc::new(MemoryBigQuery::new()), pubsub: pubsub.clone() };
    let ns = Namespace::new(vec!["p".to_string()], services, Options { read_only: true, ..test_options() });
    let (bucket, dir, file) =
        (walk(&ns, "p/storage/b").await, walk(&ns, "p/storage/b/d").await, walk(&ns, "p/storage/b/d/f").await);
    let stream = walk(&ns, "p/pubsub/topics/topic/subscriptions/sub/_stream").await;
    let write = OpenFlags { write: true, ..OpenFlags::default() };

    assert!(is_erofs(ns.create(dir, "new", 0o644).await));
    assert!(is_erofs(ns.write(file, None, 0, b"x").await));
    assert!(is_erofs(ns.setattr(file, SetAttr { size: Some(0), ..SetAttr::default() }).await));
    assert!(is_erofs(
        ns.setattr(dir, SetAttr { mtime: Some(std::time::SystemTime::now()), ..SetAttr::default() }).await
    ));
    assert!(is_erofs(ns.mkdir(dir, "sub", 0o755).await));
    assert!(is_erofs(ns.mkdir(walk(&ns, "p/pubsub/topics").await, "t2", 0o755).await));
    assert!(is_erofs(ns.unlink(dir, "f").await));
    assert!(is_erofs(ns.rmdir(bucket, "d").await));
    assert!(is_erofs(ns.rename(dir, "f", dir, "g").await));
    assert!(is_erofs(ns.open(file, write).await));
    assert!(is_erofs(ns.open(walk(&ns, "p/storage/b/d/.meta/f.json").await, write).await));
    assert!(is_erofs(ns.open(stream, OpenFlags::default()).await));
    assert!(is_erofs(ns.read(stream, None, 0, 100).await), "an NFS read of a _stream");

    let opened = ns.open(file, OpenFlags::default()).await.unwrap();
    assert_eq!(ns.read(file, Some(opened.fh), 0, 100).await.unwrap().0, "kept");
    assert_no_gcs_writes(&gcs);
    for op in [PubSubOp::Pull, PubSubOp::Acknowledge, PubSubOp::ModifyAckDeadline, PubSubOp::CreateTopic] {
        assert_eq!(pubsub.calls.get(op), 0, "{op:?}");
    }
}

/// Draining (a shutdown): a write through a handle open before goes on;
/// a new open for write, a create, a write without a handle and a read of
/// a `_stream` are refused with EROFS; reads go on.
#[tokio::test]
async fn a_draining_namespace_takes_writes_only_through_handles_open_before() {
    use ciofs_frontends::{OpenFlags, SetAttr};
    let gcs = Arc::new(MemoryGcs::new());
    gcs.put_object("b", "d/f", "kept");
    let ns = namespace(&gcs, 1000);
    let (dir, file) = (walk(&ns, "p/storage/b/d").await, walk(&ns, "p/storage/b/d/f").await);
    let write = OpenFlags { write: true, truncate: true, ..OpenFlags::default() };
    let open = ns.open(file, write).await.unwrap();
    ns.write(file, Some(open.fh), 0, b"new ").await.unwrap();

    ns.begin_draining();
    assert_eq!(ns.write(file, Some(open.fh), 4, b"bytes").await.unwrap(), 5, "through the open handle");
    let truncate = SetAttr { size: Some(9), fh: Some(open.fh), ..SetAttr::default() };
    ns.setattr(file, truncate).await.unwrap();
    assert!(is_erofs(ns.open(file, write).await));
    assert!(is_erofs(ns.create(dir, "new", 0o644).await));
    assert!(is_erofs(ns.write(file, None, 0, b"x").await), "an NFS write has no handle");
    assert!(is_erofs(ns.write(file, Some(open.fh + 1000), 0, b"x").await), "a handle not open");
    assert!(is_erofs(ns.unlink(dir, "f").await));
    ns.flush(file, open.fh).await.unwrap();
    ns.release(file, open.fh).await.unwrap();
    assert_eq!(gcs.object_data("b", "d/f").as_deref(), Some(&b"new bytes"[..]));
    let reading = ns.open(file, OpenFlags::default()).await.unwrap();
    assert_eq!(ns.read(file, Some(reading.fh), 0, 100).await.unwrap().0, "new bytes");
}
