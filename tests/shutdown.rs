//! A bounded shutdown through the real binary, against a private emulator
//! that is paused (SIGSTOP) while a file's upload is under way: SIGTERM
//! refuses new changes at once, waits for the upload, and exits 0 once it
//! is done; past `--shutdown-timeout` (or at a second signal) it exits
//! non-zero naming the file, which is kept in the state directory and
//! uploaded by the next mount at the same place. A handle open at the
//! SIGTERM goes on writing while a new open for write is refused.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BUCKET: &str = "draining";

/// A private emulator holding the bucket `BUCKET` with the objects
/// `names` (each "old\n"): the files the tests write over while the
/// service is paused, when a new name could not even be looked up.
fn emulator(names: &[&str]) -> PrivateGcs {
    // On disk: it keeps its objects across a restart.
    let gcs = PrivateGcs::start();
    let url = format!("{}/storage/v1/b?project={PROJECT}", gcs.url());
    curl(&["-X", "POST", &url, "-d", &format!("{{\"name\":\"{BUCKET}\"}}")]);
    for name in names {
        let url = format!("{}/upload/storage/v1/b/{BUCKET}/o?uploadType=media&name={name}", gcs.url());
        curl(&["-X", "POST", &url, "--data-binary", "old\n"]);
    }
    gcs
}

/// `ciofs mount --foreground` at `dir` with its state in `state`, logging
/// to `log`; returns once mounted.
fn mount(gcs: &PrivateGcs, dir: &Path, state: &Path, log: &Path, extra: &[&str]) -> Child {
    let log_file = std::fs::File::create(log).unwrap();
    let mut child = ciofs()
        .args(["mount", "--foreground", "--project", PROJECT])
        .args(extra)
        .arg(dir)
        .env("CIOFS_STATE_DIR", state)
        .env("CIOFS_LOG", "info,ciofs=debug")
        .env("STORAGE_EMULATOR_HOST", gcs.url())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !is_mounted(dir) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("ciofs exited ({status}):\n{}", std::fs::read_to_string(log).unwrap_or_default());
        }
        assert!(Instant::now() < deadline, "not mounted in time");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// A scratch place: a mount point, a state directory and a log.
struct Place {
    /// First, so that it unmounts before `_root` goes.
    _unmount: UnmountOnDrop,
    _root: tempfile::TempDir,
    dir: PathBuf,
    state: PathBuf,
    log: PathBuf,
}

impl Place {
    fn new() -> Self {
        let root = tempfile::tempdir().unwrap();
        let (dir, state, log) = (root.path().join("mnt"), root.path().join("state"), root.path().join("ciofs.log"));
        std::fs::create_dir(&dir).unwrap();
        Place { _unmount: UnmountOnDrop(dir.clone()), _root: root, dir, state, log }
    }

    fn file(&self, name: &str) -> String {
        format!("{}/{PROJECT}/storage/{BUCKET}/{name}", self.dir.display())
    }

    /// Lists the bucket, so that the names in it are known while the
    /// service is paused (a name not there would be asked for).
    fn list_bucket(&self) {
        ok(&format!("ls -l {}/{PROJECT}/storage/{BUCKET}", self.dir.display()));
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts writing `data` into `path` with cat, whose close then waits for
/// the upload; returns once the shutdown could find the file being written.
fn write_in_background(path: &str, data: &[u8]) -> (Child, tempfile::NamedTempFile) {
    let source = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(source.path(), data).unwrap();
    let writer = Command::new("bash")
        .args(["-c", &format!("cat {} > {path}", source.path().display())])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The bytes reach ciofs at once; its close then waits on the service.
    std::thread::sleep(Duration::from_millis(700));
    (writer, source)
}

fn object(gcs: &PrivateGcs, name: &str) -> Option<Vec<u8>> {
    let url = format!("{}/storage/v1/b/{BUCKET}/o/{}?alt=media", gcs.url(), encode(name));
    let output = run(Command::new("curl").args(["-sS", "--fail", &url]));
    output.status.success().then_some(output.stdout)
}

#[test]
fn sigterm_refuses_new_changes_waits_for_a_paused_upload_and_exits_0() {
    let gcs = emulator(&["slow.bin", "other.txt"]);
    let place = Place::new();
    let mut ciofs = mount(&gcs, &place.dir, &place.state, &place.log, &["--shutdown-timeout", "30"]);
    let data = pattern(300_000, 3);
    place.list_bucket();
    gcs.freeze();
    let (writer, _source) = write_in_background(&place.file("slow.bin"), &data);
    signal(&ciofs, libc::SIGTERM);
    wait_until("the shutdown began", Duration::from_secs(10), || place.log_text().contains("shutting down"));
    let refused = sh(&format!("echo new > {}", place.file("other.txt")));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && stderr.contains("Read-only file system"),
        "a new file: {stderr}\n{}",
        place.log_text()
    );
    assert!(ciofs.try_wait().unwrap().is_none(), "still waiting for the upload");

    gcs.thaw();
    let status = exit_within(&mut ciofs, Duration::from_secs(30), || place.log_text());
    assert!(status.success(), "{status}:\n{}", place.log_text());
    let written = writer.wait_with_output().unwrap();
    assert!(written.status.success(), "the close succeeded: {}", String::from_utf8_lossy(&written.stderr));
    assert!(object(&gcs, "slow.bin") == Some(data), "uploaded before the exit");
    assert_eq!(object(&gcs, "other.txt").unwrap(), b"old\n", "nothing new was taken while draining");
    assert!(!is_mounted(&place.dir));
}

/// Opens `path` for write as a new open would; the errno it was refused with.
fn open_for_write_errno(path: &str) -> Option<i32> {
    std::fs::OpenOptions::new().write(true).open(path).err().and_then(|e| e.raw_os_error())
}

#[test]
fn a_handle_open_at_sigterm_goes_on_writing_while_new_opens_are_refused() {
    let gcs = emulator(&["open.bin", "other.txt"]);
    let place = Place::new();
    let mut ciofs = mount(&gcs, &place.dir, &place.state, &place.log, &["--shutdown-timeout", "30"]);
    let (first, second) = (pattern(100_000, 6), pattern(60_000, 7));
    place.list_bucket();
    let mut file = std::fs::OpenOptions::new().write(true).truncate(true).open(place.file("open.bin")).unwrap();
    file.write_all(&first).unwrap();
    signal(&ciofs, libc::SIGTERM);
    wait_until("the shutdown began", Duration::from_secs(10), || place.log_text().contains("shutting down"));

    assert_eq!(open_for_write_errno(&place.file("other.txt")), Some(libc::EROFS), "{}", place.log_text());
    assert_eq!(open_for_write_errno(&place.file("open.bin")), Some(libc::EROFS), "a second open of the same file");
    file.write_all(&second).unwrap_or_else(|e| panic!("the open handle writes on: {e}\n{}", place.log_text()));
    assert!(ciofs.try_wait().unwrap().is_none(), "still waiting for the open file");
    file.sync_all().unwrap();
    drop(file);

    let status = exit_within(&mut ciofs, Duration::from_secs(30), || place.log_text());
    assert!(status.success(), "{status}:\n{}", place.log_text());
    let all = [first, second].concat();
    assert!(object(&gcs, "open.bin") == Some(all), "every byte, those written after SIGTERM too");
    assert_eq!(object(&gcs, "other.txt").unwrap(), b"old\n", "nothing new was taken while draining");
    assert!(!is_mounted(&place.dir));
}

#[test]
fn past_the_deadline_the_file_is_kept_named_and_uploaded_by_the_next_start() {
    let mut gcs = emulator(&["kept.bin"]);
    let place = Place::new();
    let mut ciofs = mount(&gcs, &place.dir, &place.state, &place.log, &["--shutdown-timeout", "2"]);
    let data = pattern(200_000, 4);
    place.list_bucket();
    gcs.freeze();
    let (writer, _source) = write_in_background(&place.file("kept.bin"), &data);
    signal(&ciofs, libc::SIGTERM);
    let started = Instant::now();
    let status = exit_within(&mut ciofs, Duration::from_secs(15), || place.log_text());
    let took = started.elapsed();
    assert!(!status.success(), "nothing uploaded, yet it exited 0:\n{}", place.log_text());
    assert!(took < Duration::from_secs(8), "bounded by --shutdown-timeout 2: took {took:?}");
    let log = place.log_text();
    assert!(log.contains("kept.bin") && log.contains("the next start uploads it"), "named in the log:\n{log}");
    let records = journal_records(&place.state);
    assert_eq!(records.len(), 1, "one journal record in the state directory: {records:?}");
    assert!(std::fs::read_to_string(&records[0]).unwrap().contains("kept.bin"));
    let _ = writer.wait_with_output();

    // A service that never answered: what it was sent is gone with it.
    gcs.stop();
    gcs.resume();
    assert_eq!(object(&gcs, "kept.bin").unwrap(), b"old\n", "nothing reached the service");
    let mut again = mount(&gcs, &place.dir, &place.state, &place.log, &[]);
    wait_until("the kept file is uploaded", Duration::from_secs(20), || {
        object(&gcs, "kept.bin").as_deref() == Some(data.as_slice())
    });
    wait_until("its journal record goes", Duration::from_secs(10), || journal_records(&place.state).is_empty());
    signal(&again, libc::SIGTERM);
    let status = exit_within(&mut again, Duration::from_secs(30), || place.log_text());
    assert!(status.success(), "{status}");
}

#[test]
fn a_second_signal_stops_waiting_at_once() {
    let gcs = emulator(&["second.bin"]);
    let place = Place::new();
    let mut ciofs = mount(&gcs, &place.dir, &place.state, &place.log, &["--shutdown-timeout", "60"]);
    place.list_bucket();
    gcs.freeze();
    let (writer, _source) = write_in_background(&place.file("second.bin"), &pattern(50_000, 5));
    signal(&ciofs, libc::SIGTERM);
    wait_until("the shutdown began", Duration::from_secs(10), || place.log_text().contains("shutting down"));
    signal(&ciofs, libc::SIGINT);
    let started = Instant::now();
    let status = exit_within(&mut ciofs, Duration::from_secs(20), || place.log_text());
    let took = started.elapsed();
    assert!(!status.success(), "{status}");
    assert!(took < Duration::from_secs(10), "not the 60 s timeout: took {took:?}");
    assert_eq!(journal_records(&place.state).len(), 1, "kept for the next start");
    let _ = writer.wait_with_output();
    gcs.thaw();
}

/// The journal records under the state directory's staging files.
fn journal_records(state: &Path) -> Vec<PathBuf> {
    let mut records = Vec::new();
    let mut dirs = vec![state.join("staging")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "json") && path.parent().is_some_and(|p| p.ends_with("nfs"))
            {
                records.push(path);
            }
        }
    }
    records
}

/// A mount kept busy at SIGTERM only by a reader (nothing to upload) is
/// unmounted as soon as the reader lets go, not at the deadline: a pod
/// whose app has just closed its files stops at once.
#[test]
fn a_mount_busy_at_sigterm_is_unmounted_once_it_is_let_go_not_at_the_deadline() {
    let gcs = emulator(&["held.txt"]);
    let place = Place::new();
    let mut ciofs = mount(&gcs, &place.dir, &place.state, &place.log, &["--shutdown-timeout", "60"]);
    // A reader holding the file (and so the mount) until it is let go.
    let (opened, go) = (place.state.with_file_name("opened"), place.state.with_file_name("go"));
    ok(&format!("mkfifo {}", go.display()));
    let script =
        format!("exec 3< {} && touch {} && read line < {}", place.file("held.txt"), opened.display(), go.display());
    let reader = Command::new("bash").args(["-c", &script]).spawn().unwrap();
    wait_until("the file is held", Duration::from_secs(10), || opened.exists());
    signal(&ciofs, libc::SIGTERM);
    wait_until("ciofs finds the mount busy", Duration::from_secs(20), || {
        place.log_text().contains("cannot unmount yet")
    });
    let let_go = Instant::now();
    std::fs::write(&go, b"go\n").unwrap();
    let status = exit_within(&mut ciofs, Duration::from_secs(30), || place.log_text());
    let took = let_go.elapsed();
    assert!(status.success(), "{status}:\n{}", place.log_text());
    assert!(took < Duration::from_secs(10), "not the 60 s timeout: took {took:?} after the reader let go");
    assert!(!is_mounted(&place.dir), "unmounted");
    let _ = reader.wait_with_output();
}
