//! What a close() or an import promises when something fails, through a
//! real FUSE mount and the real `ciofs import`, against a private emulator
//! (so that it can be stopped): a reader's close never decides the fate of
//! a writer's data, and a write that failed never uploads what was left.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;

/// A private emulator whose bucket `faults` holds `f.bin` = "previous".
fn faults_gcs() -> PrivateGcs {
    let gcs = PrivateGcs::start();
    let url = gcs.url();
    curl(&["-X", "POST", &format!("{url}/storage/v1/b?project={PROJECT}"), "-d", "{\"name\":\"faults\"}"]);
    curl(&["-X", "POST", &format!("{url}/upload/storage/v1/b/faults/o?uploadType=media&name=f.bin"), "-d", "previous"]);
    gcs
}

fn stored(gcs: &PrivateGcs, name: &str) -> Vec<u8> {
    curl(&[&format!("{}/storage/v1/b/faults/o/{}?alt=media", gcs.url(), encode(name))])
}

/// A Python program that runs `steps` (lines of Python), printing what
/// each `say(...)` says, and waits for a line on stdin at each `wait()`.
struct Script {
    child: std::process::Child,
    out: BufReader<std::process::ChildStdout>,
}

impl Script {
    fn start(steps: &str) -> Self {
        let program = format!(
            "import os, sys\n\
             def say(x):\n    sys.stdout.write(str(x) + '\\n'); sys.stdout.flush()\n\
             def wait():\n    sys.stdin.readline()\n\
             def close(fd):\n    try:\n        os.close(fd); say(0)\n    except OSError as e:\n        say(e.errno)\n\
             {steps}"
        );
        let mut child = Command::new("python3")
            .args(["-c", &program])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let out = BufReader::new(child.stdout.take().expect("stdout"));
        Script { child, out }
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.out.read_line(&mut line).expect("read the script's output");
        line.trim().to_string()
    }

    fn go_on(&mut self) {
        writeln!(self.child.stdin.as_mut().expect("stdin")).expect("write to the script");
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A file being written, opened for reading by another program: that
/// reader's close uploads nothing, so a failure there cannot mark the
/// writer's data as done; the writer's close uploads it.
#[test]
fn a_reader_s_close_does_not_decide_for_the_writer() {
    let mut gcs = faults_gcs();
    let mount = FuseMount::start_with_env(&[], &[("STORAGE_EMULATOR_HOST", &gcs.url())]);
    let path = mount.path(&format!("{PROJECT}/storage/faults/f.bin")).display().to_string();
    let mut script = Script::start(&format!(
        "w = os.open('{path}', os.O_WRONLY | os.O_TRUNC)\n\
         os.write(w, b'the writer wrote this')\n\
         r = os.open('{path}', os.O_RDONLY)\n\
         say(os.read(r, 100))\n\
         wait()\n\
         close(r)\n\
         wait()\n\
         close(w)\n"
    ));
    assert_eq!(script.line(), "b'the writer wrote this'", "the reader sees the staged bytes");
    // The service is away when the reader closes.
    gcs.stop();
    script.go_on();
    assert_eq!(script.line(), "0", "a reader's close has nothing to upload");
    gcs.resume();
    script.go_on();
    assert_eq!(script.line(), "0", "the writer's close uploads");
    assert_eq!(stored(&gcs, "f.bin"), b"the writer wrote this");
}

/// A tmpfs of `size`, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn new(size: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        ok(&format!("mount -t tmpfs -o size={size},mode=0700 tmpfs {}", dir.path().display()));
        SmallDisk { dir }
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// `ciofs import` over an existing object, its staging disk full halfway:
/// the write fails, the import says so, and the object keeps its previous
/// version (before, release uploaded the truncated staging file).
#[test]
fn an_import_whose_write_fails_leaves_the_object_as_it_was() {
    let gcs = faults_gcs();
    let work = tempfile::tempdir().unwrap();
    let w = work.path().display();
    let archive_root = work.path().join("archive/p/storage/faults");
    std::fs::create_dir_all(&archive_root).unwrap();
    std::fs::write(archive_root.join("f.bin"), pattern(4 << 20, 7)).unwrap();
    ok(&format!("tar cf {w}/p.tar -C {w}/archive p"));
    let state = SmallDisk::new("1m");
    let output = ciofs()
        .args(["import", "--project", PROJECT, "--on-conflict", "overwrite", &format!("{w}/p.tar")])
        .env("STORAGE_EMULATOR_HOST", gcs.url())
        .env("CIOFS_STATE_DIR", state.dir.path())
        .output()
        .expect("ciofs import runs");
    let said = output_text(&output);
    assert!(!output.status.success(), "the failed write is reported: {said}");
    let now = stored(&gcs, "f.bin");
    assert!(now == b"previous", "a half-written object ({} bytes) replaced it: {said}", now.len());
}

/// `rm -r d; cp -r src d` makes new objects: their `.meta/` documents show
/// (a removed document stayed hidden forever, so `tar c` then lost the
/// objects' content types).
#[test]
fn documents_of_objects_made_again_are_shown() {
    let bucket = bucket_name("docs_again");
    create_bucket(&bucket);
    upload(&bucket, "d/a.txt", b"alpha");
    let mount = FuseMount::start(&[]);
    let d = mount.path(&format!("{PROJECT}/storage/{bucket}/d")).display().to_string();
    let src = tempfile::tempdir().unwrap();
    std::fs::write(src.path().join("a.txt"), b"alpha again").unwrap();
    assert_eq!(ok(&format!("ls {d}/.meta")).trim(), "a.txt.json");
    ok(&format!("rm -r {d} && cp -r {} {d}", src.path().display()));
    assert_eq!(read_object(&bucket, "d/a.txt"), b"alpha again");
    assert_eq!(ok(&format!("ls {d}/.meta")).trim(), "a.txt.json", "the new object's document shows");
    let tarred = ok(&format!("tar cf - -C {d} . | tar tf -"));
    assert!(tarred.contains("./.meta/a.txt.json"), "{tarred}");
}
