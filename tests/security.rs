//! Nobody else gets in, and input from outside cannot take ciofs down:
//! the NFS server stays on loopback unless told otherwise, the state
//! directory is the user's alone, `ciofs unmount` signals only its own
//! daemon, and archives and NFS requests are bounded. Each test runs the
//! `ciofs` binary.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// How `ciofs serve-nfs` with `args` started: `Ok(address)` once it
/// served (it is stopped then), or `Err(what it said)` when it exited.
fn serve_nfs_outcome(args: &[&str]) -> Result<String, String> {
    let state = tempfile::tempdir().unwrap();
    let mut child = ciofs()
        .args(["serve-nfs", "--project", PROJECT])
        .args(args)
        .env("CIOFS_STATE_DIR", state.path())
        .env("CIOFS_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ciofs serve-nfs");
    let said = first_lines_until_serving(&mut child);
    let _ = child.kill();
    let _ = child.wait();
    said
}

/// Reads the server's stderr until it serves or ends.
fn first_lines_until_serving(child: &mut Child) -> Result<String, String> {
    let stderr = child.stderr.take().expect("stderr");
    let mut said = String::new();
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if let Some(address) = line.strip_prefix("ciofs: serving NFSv3 on ") {
            return Ok(address.trim().to_string());
        }
        said.push_str(&line);
        said.push('\n');
    }
    Err(said)
}

/// NFS has no authentication: an address other hosts can reach is
/// refused, with a message that says why and what to pass, unless
/// `--allow-remote` is given. Loopback (all of 127.0.0.0/8, and names
/// that resolve to it) is served.
#[test]
fn serve_nfs_refuses_an_address_others_can_reach_unless_allow_remote() {
    let started = Instant::now();
    for listen in ["0.0.0.0:0", "192.0.2.200:0"] {
        let said = serve_nfs_outcome(&["--listen", listen]).expect_err(&format!("{listen} was served"));
        assert!(said.contains("--allow-remote") && said.contains("loopback"), "{listen}: {said}");
    }
    assert!(started.elapsed() < Duration::from_secs(10), "the refusal should come before anything else");
    for listen in ["127.0.0.1:0", "127.0.0.2:0", "localhost:0"] {
        let address = serve_nfs_outcome(&["--listen", listen]).unwrap_or_else(|e| panic!("{listen}: {e}"));
        assert!(address.starts_with("127."), "{listen} served on {address}");
    }
    let address = serve_nfs_outcome(&["--listen", "0.0.0.0:0", "--allow-remote"]).expect("--allow-remote serves");
    assert!(address.starts_with("0.0.0.0:"), "{address}");
}
