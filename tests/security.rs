//! Nobody else gets in, and input from outside cannot take ciofs down:
//! the NFS server stays on loopback unless told otherwise, the state
//! directory is the user's alone, `ciofs unmount` signals only its own
//! daemon, and archives and NFS requests are bounded. Each test runs the
//! `ciofs` binary.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// How `ciofs serve-nfs` with `args` started: `Ok(address)` once it
/// served (it is stopped then), or `Err(what it said)` when it exited.
fn serve_nfs_outcome(args: &[&str]) -> Result<String, String> {
    let state = tempfile::tempdir().unwrap();
    let mut command = ciofs();
    command.args(["serve-nfs", "--project", PROJECT]).args(args).env("CIOFS_STATE_DIR", state.path());
    outcome(command)
}

/// How a `ciofs serve-nfs` command started, as `serve_nfs_outcome` says.
fn outcome(mut command: Command) -> Result<String, String> {
    let mut child = command
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

/// `serve-nfs` on loopback with the state directory left to ciofs: the
/// variables that could name it are removed, then `env` set.
fn serve_nfs_with_default_state(env: &[(&str, &Path)]) -> Result<String, String> {
    let mut command = ciofs();
    command.args(["serve-nfs", "--project", PROJECT, "--listen", "127.0.0.1:0"]);
    for name in ["CIOFS_STATE_DIR", "XDG_STATE_HOME", "HOME", "XDG_RUNTIME_DIR"] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    outcome(command)
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// With nowhere to keep its state ($CIOFS_STATE_DIR, $XDG_STATE_HOME,
/// $HOME and $XDG_RUNTIME_DIR unset) ciofs refuses and says to pass
/// --state-dir; it never falls back to a directory under /tmp, whose name
/// anyone can guess and take first. $XDG_RUNTIME_DIR is the last place
/// tried; the directory made there is the user's alone (0700).
#[test]
fn without_a_state_directory_ciofs_refuses_and_never_uses_tmp() {
    let scratch = tempfile::tempdir().unwrap();
    let tmp = scratch.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let said = serve_nfs_with_default_state(&[("TMPDIR", &tmp)]).expect_err("served without a state directory");
    assert!(said.contains("--state-dir"), "{said}");
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "nothing is made in the temporary directory");

    let runtime = scratch.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    serve_nfs_with_default_state(&[("TMPDIR", &tmp), ("XDG_RUNTIME_DIR", &runtime)])
        .expect("$XDG_RUNTIME_DIR/ciofs serves");
    assert_eq!(mode(&runtime.join("ciofs")), 0o700);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0, "nothing is made in the temporary directory");
}

/// A background mount's state directory, the directory of its pid file
/// and log, and those files are the user's alone (0700, 0600) whatever the
/// umask, and a link planted where the log goes is not followed: the mount
/// is refused and the link's target is left as it was.
#[test]
fn a_background_mount_keeps_its_state_private_and_follows_no_link() {
    let scratch = tempfile::tempdir().unwrap();
    let (state, mnt) = (scratch.path().join("state"), scratch.path().join("mnt"));
    std::fs::create_dir(&mnt).unwrap();
    let _unmount = UnmountOnDrop(mnt.clone());
    let pid_file = ciofs::daemon::pid_file(&state, &mnt);
    let log = pid_file.with_extension("log");
    let mounts = log.parent().unwrap();
    std::fs::create_dir_all(mounts).unwrap();
    std::fs::set_permissions(mounts, std::fs::Permissions::from_mode(0o755)).unwrap();
    let victim = scratch.path().join("victim");
    std::fs::write(&victim, "keep").unwrap();
    std::os::unix::fs::symlink(&victim, &log).unwrap();
    let mount = || {
        let script = "umask 0; exec \"$0\" \"$@\"";
        let output = run(Command::new("sh")
            .args(["-c", script, env!("CARGO_BIN_EXE_ciofs"), "mount", "--project", PROJECT])
            .arg(&mnt)
            .env("CIOFS_STATE_DIR", &state));
        (output.status.success(), String::from_utf8_lossy(&output.stderr).to_string())
    };

    let (mounted, said) = mount();
    assert!(!mounted, "mounted with a link where the log goes: {said}");
    assert!(said.contains(&log.display().to_string()), "{said}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep", "written through the link");

    std::fs::remove_file(&log).unwrap();
    let (mounted, said) = mount();
    assert!(mounted, "{said}");
    assert_eq!((mode(&state), mode(mounts)), (0o700, 0o700), "directories");
    assert_eq!((mode(&pid_file), mode(&log)), (0o600, 0o600), "pid file and log");
    let unmounted = run(ciofs().arg("unmount").arg(&mnt).env("CIOFS_STATE_DIR", &state));
    assert!(unmounted.status.success(), "{}", String::from_utf8_lossy(&unmounted.stderr));
    assert!(!is_mounted(&mnt));
}

/// A pid file left by a daemon that died (killed, a crash) can name a
/// process that has nothing to do with ciofs once the pid is reused:
/// `ciofs unmount` must not signal it, and says so.
#[test]
fn unmount_never_signals_a_process_a_stale_pid_file_names() {
    let scratch = tempfile::tempdir().unwrap();
    let (state, mnt) = (scratch.path().join("state"), scratch.path().join("mnt"));
    std::fs::create_dir(&mnt).unwrap();
    let mut sleep = Command::new("sleep").arg("300").spawn().expect("sleep");
    let pid_file = ciofs::daemon::pid_file(&state, &mnt);
    std::fs::create_dir_all(pid_file.parent().unwrap()).unwrap();
    std::fs::write(&pid_file, format!("{}\n", sleep.id())).unwrap();

    let output = run(ciofs().arg("unmount").arg(&mnt).env("CIOFS_STATE_DIR", &state));
    let said = String::from_utf8_lossy(&output.stderr).to_string();
    std::thread::sleep(Duration::from_millis(200));
    let survived = sleep.try_wait().expect("wait").is_none();
    let _ = sleep.kill();
    let _ = sleep.wait();
    assert!(survived, "ciofs unmount killed an unrelated process: {said}");
    assert!(said.contains(&sleep.id().to_string()) && said.contains("not signalled"), "{said}");
}

/// `ciofs import` with `args`, run by a Python parent that reads the
/// process's peak resident memory: (peak MiB, exit code, stdout and stderr).
fn import_peak_mib(args: &[&str], state: &Path) -> (u64, String) {
    let script = "import resource, subprocess, sys\n\
                  done = subprocess.run(sys.argv[1:], capture_output=True, text=True, errors='replace')\n\
                  print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)\n\
                  print(done.returncode, done.stdout, done.stderr)";
    let output = run(Command::new("python3")
        .args(["-c", script])
        .arg(env!("CARGO_BIN_EXE_ciofs"))
        .arg("import")
        .args(args)
        .env("CIOFS_STATE_DIR", state));
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (peak, said) = text.split_once('\n').unwrap_or_default();
    (peak.trim().parse::<u64>().unwrap_or_else(|_| panic!("no peak: {text}")), said.to_string())
}

/// A tar archive at `path` of `count` regular files of `size` bytes each
/// (all zero), named by `name(i)`. The data are holes: the file takes no
/// room on disk and is read at memory speed.
fn sparse_archive(path: &Path, count: usize, size: u64, name: impl Fn(usize) -> String) {
    let entries: Vec<_> = (0..count).map(|i| (tar::EntryType::Regular, name(i), size)).collect();
    sparse_entries(path, &entries);
}

/// A tar archive at `path` of `(type, name, size)` entries whose data are
/// holes (zeros).
fn sparse_entries(path: &Path, entries: &[(tar::EntryType, String, u64)]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut file = std::fs::File::create(path).unwrap();
    let mut offset = 0u64;
    for (kind, name, size) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_path(name).unwrap();
        header.set_size(*size);
        header.set_mode(0o644);
        header.set_entry_type(*kind);
        header.set_cksum();
        file.seek(SeekFrom::Start(offset)).unwrap();
        file.write_all(header.as_bytes()).unwrap();
        offset += 512 + size.div_ceil(512) * 512;
    }
    // The two zero blocks that end an archive.
    file.set_len(offset + 1024).unwrap();
}

/// The plan of `ciofs import` holds the archive's documents in memory:
/// their total is bounded (512 MiB), each one too (16 MiB), and an archive
/// past the bound is refused with an error naming it, before it is all
/// held. Crafted: 33 documents of 16 MiB.
#[test]
fn ciofs_import_bounds_the_documents_it_holds() {
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("many-documents.tar");
    sparse_archive(&archive, 33, 16 << 20, |i| format!("p/bigquery/ds/t{i}/schema.json"));
    let state = work.path().join("state");
    let archive = archive.to_str().unwrap();
    let (peak, said) = import_peak_mib(&["--dry-run", "--project", PROJECT, archive], &state);
    assert!(said.starts_with("1 "), "refused: {said}");
    assert!(said.contains("512 MiB"), "the error names the limit: {said}");
    assert!(peak < 560, "held {peak} MiB");

    // One document past its own bound is invalid, and not read.
    let one = work.path().join("one-large-document.tar");
    sparse_archive(&one, 1, (16 << 20) + 1, |_| "p/bigquery/ds/t/schema.json".to_string());
    let (peak, said) = import_peak_mib(&["--dry-run", "--project", PROJECT, one.to_str().unwrap()], &state);
    assert!(said.contains("invalid   bigquery/ds/t/schema.json") && said.contains("16 MiB"), "{said}");
    assert!(peak < 64, "held {peak} MiB");
}

/// The tar reader holds an entry's long name (GNU `L`, `K`) and PAX
/// extended header (`x`) in memory, whatever their declared size: ciofs
/// import refuses one over 1 MiB before it is held. Crafted: a 256 MiB
/// long name.
#[test]
fn ciofs_import_bounds_the_extended_headers_of_an_entry() {
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    for kind in [tar::EntryType::GNULongName, tar::EntryType::XHeader] {
        let archive = work.path().join("long-header.tar");
        let entries =
            [(kind, "././@LongLink".to_string(), 256 << 20), (tar::EntryType::Regular, "p/pubsub/x".to_string(), 0)];
        sparse_entries(&archive, &entries);
        let (peak, said) = import_peak_mib(&["--dry-run", "--project", PROJECT, archive.to_str().unwrap()], &state);
        assert!(said.starts_with("1 ") && said.contains("1 MiB"), "{kind:?}: {said}");
        assert!(peak < 64, "{kind:?}: held {peak} MiB");
    }
}

/// Characters a terminal acts on: C0 controls but newline, DEL, C1
/// controls (U+0080..U+009F: U+009B is a CSI) and the bidirectional
/// overrides that reorder what is shown.
fn terminal_controls(text: &str) -> Vec<char> {
    text.chars()
        .filter(|c| (c.is_control() && *c != '\n') || matches!(*c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
        .collect()
}

/// Names in an archive are the archive author's: the plan `ciofs import`
/// prints shows their control characters escaped (`\u{1b}`), so a
/// terminal never receives an escape sequence from a name, and a newline
/// in a name cannot fake a line of the plan.
#[test]
fn ciofs_import_prints_names_with_control_characters_escaped() {
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("names.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&archive).unwrap());
    let names = [
        "p/storage/b-esc/\x1b[31mred\x1b[0m.txt",
        "p/bigquery/ds/\u{9b}2J/schema.json",
        "p/pubsub/topics/t\u{202e}gnp.exe/config.json",
        "p/\x1b]0;title\x07/x",
        "p/storage/b-esc/two\nlines",
    ];
    for name in names {
        let mut header = tar::Header::new_gnu();
        header.set_size(2);
        header.set_mode(0o644);
        builder.append_data(&mut header, name, &b"{}"[..]).unwrap();
    }
    builder.finish().unwrap();
    let output = run(ciofs()
        .args(["import", "--dry-run", "--project", PROJECT])
        .arg(&archive)
        .env("CIOFS_STATE_DIR", work.path()));
    let said = output_text(&output);
    assert_eq!(terminal_controls(&said), Vec::<char>::new(), "{said:?}");
    assert!(said.contains(r"storage/b-esc/\u{1b}[31mred\u{1b}[0m.txt"), "{said}");
    assert!(said.contains(r"storage/b-esc/two\u{a}lines"), "{said}");
    assert!(said.contains(r"bigquery/ds/\u{9b}2J/schema.json"), "{said}");
    assert!(said.contains(r"t\u{202e}gnp.exe"), "{said}");
}

/// The most memory a process has held (VmHWM), in MiB.
fn peak_mib_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the process runs");
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse::<u64>().ok()).expect("a number") / 1024
}

/// Sends `bytes` on a new connection to `port`; whether the server then
/// closed it within five seconds.
fn closed_after_sending(port: u16, bytes: &[u8]) -> bool {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A write may fail once the server has closed: that is an answer too.
    let _ = stream.write_all(bytes);
    let mut buffer = [0u8; 64];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return false;
            }
            Err(_) => return true,
        }
    }
}

/// RPC record marking lets a client announce a fragment of up to 2 GiB,
/// and nfsserve allocates what is announced before reading it. The server
/// closes a connection whose fragment, or record of fragments, is longer
/// than the largest NFS request (a 1 MiB WRITE), without allocating it,
/// and goes on serving the other clients.
#[tokio::test]
async fn serve_nfs_closes_a_connection_announcing_a_huge_fragment() {
    let state = tempfile::tempdir().unwrap();
    let server = NfsServer::start(state.path());
    let mut client = common::nfs::connect(server.port).await;
    let before = peak_mib_of(server.pid());
    // Not last, then last: 2^31 - 1 bytes announced.
    for header in [0x7fff_ffffu32, 0xffff_ffff] {
        assert!(closed_after_sending(server.port, &header.to_be_bytes()), "{header:#x}: the connection stays open");
    }
    // A record of small fragments that never ends.
    let mut fragments = Vec::new();
    for _ in 0..40 {
        fragments.extend_from_slice(&(64u32 << 10).to_be_bytes());
        fragments.resize(fragments.len() + (64 << 10), 0);
    }
    assert!(closed_after_sending(server.port, &fragments), "a 2.5 MiB record was taken");
    let after = peak_mib_of(server.pid());
    assert!(after < before + 64, "the server's peak memory went from {before} MiB to {after} MiB");
    // The others are still served, the connection made before included.
    common::nfs::walk(&mut client, PROJECT).await;
    let mut again = common::nfs::connect(server.port).await;
    common::nfs::walk(&mut again, PROJECT).await;
}

/// A READ call of `count` bytes at offset 0 of the file with handle
/// `file`, as one record (AUTH_NONE).
fn read_call(xid: u32, file: &[u8], count: u32) -> Vec<u8> {
    let words = |words: &[u32]| words.iter().flat_map(|w| w.to_be_bytes()).collect::<Vec<u8>>();
    let padding = vec![0; (4 - file.len() % 4) % 4];
    let body = [
        words(&[xid, 0, 2, 100_003, 3, 6, 0, 0, 0, 0, file.len() as u32]),
        file.to_vec(),
        padding,
        words(&[0, 0, count]),
    ]
    .concat();
    [(body.len() as u32 | 0x8000_0000).to_be_bytes().to_vec(), body].concat()
}

/// nfsserve answers each call in a task of its own and queues the answers
/// without bound: 2,000 READs of 1 MiB pipelined in 200 KB on a connection
/// whose client reads no answer would have it hold 2 GiB. The server
/// takes only a few calls at a time from a connection, the next once
/// answers pass back: its peak memory stays put, the calls are answered
/// as the client reads, and the other clients are served meanwhile.
#[tokio::test]
async fn serve_nfs_bounds_the_calls_in_flight_on_a_connection() {
    use std::io::{Read, Write};
    let bucket = bucket_name("in_flight");
    create_bucket(&bucket);
    upload(&bucket, "big.bin", &pattern(1 << 20, 5));
    let state = tempfile::tempdir().unwrap();
    let server = NfsServer::start(state.path());
    let mut client = common::nfs::connect(server.port).await;
    let file = common::nfs::walk(&mut client, &format!("{PROJECT}/storage/{bucket}/big.bin")).await;
    let (data, _) = common::nfs::read(&mut client, &file, 0, 1 << 20).await;
    assert_eq!(data.len(), 1 << 20);
    let before = peak_mib_of(server.pid());
    let calls: Vec<u8> = (1..=2000).flat_map(|xid| read_call(xid, &file.data.0, 1 << 20)).collect();
    let mut pipelined = std::net::TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    let writer = pipelined.try_clone().unwrap();
    std::thread::spawn(move || {
        let _ = (&writer).write_all(&calls);
    });
    let mut after = before;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        after = peak_mib_of(server.pid());
        if after >= before + 64 {
            break;
        }
    }
    assert!(after < before + 64, "the server's peak memory went from {before} MiB to {after} MiB");
    common::nfs::walk(&mut client, PROJECT).await;
    // Read, the answers come, past the few calls taken at first.
    pipelined.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut answers = vec![0u8; 40 << 20];
    pipelined.read_exact(&mut answers).expect("40 answers of 1 MiB");
    let mut again = common::nfs::connect(server.port).await;
    common::nfs::walk(&mut again, PROJECT).await;
}

/// Clients are relayed to nfsserve on a port of its own; the portmapper's
/// answer still names the port clients connect to, so a client that asks
/// it (no mount or nfs port given) is served through the same checks.
#[tokio::test]
async fn serve_nfs_portmapper_names_the_port_clients_connect_to() {
    use nfs3_client::nfs3_types::{mount, nfs3, portmap};
    let state = tempfile::tempdir().unwrap();
    let server = NfsServer::start(state.path());
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port)).await.unwrap();
    let mut portmapper = nfs3_client::PortmapperClient::new(nfs3_client::tokio::TokioIo::new(stream));
    for (program, version) in [(mount::PROGRAM, mount::VERSION), (nfs3::PROGRAM, nfs3::VERSION)] {
        let port = portmapper.getport(program, version, portmap::IPPROTO_TCP).await.expect("getport");
        assert_eq!(port, server.port, "program {program}");
    }
    let mut client = nfs3_client::Nfs3ConnectionBuilder::new(nfs3_client::tokio::TokioConnector, "127.0.0.1", "/")
        .portmapper_port(server.port)
        .connect_from_privileged_port(false)
        .mount()
        .await
        .expect("mounted through the portmapper's answers");
    common::nfs::walk(&mut client, PROJECT).await;
}

/// serve-nfs under a limit of 128 open files, on a port of its choosing:
/// its state directory, what stops it, and the port.
fn serve_nfs_with_128_files() -> (tempfile::TempDir, Stop, u16) {
    let state = tempfile::tempdir().unwrap();
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -n 128 && exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_ciofs")])
        .args(["serve-nfs", "--project", PROJECT, "--listen", "127.0.0.1:0"])
        .env("CIOFS_STATE_DIR", state.path())
        .env("CIOFS_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ciofs serve-nfs");
    let address = first_lines_until_serving(&mut child).expect("serving");
    let _stop = Stop(child);
    let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
    (state, _stop, port)
}

/// Clients that open connections until the server has no file descriptor
/// left (here: a limit of 128 open files) must not stop it serving: once
/// they are gone, a new client is served. Connections past what the
/// server takes at once are closed at once.
#[tokio::test]
async fn serve_nfs_keeps_serving_after_running_out_of_connections() {
    let (_state, _stop, port) = serve_nfs_with_128_files();
    let mut held = Vec::new();
    for _ in 0..300 {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => held.push(stream),
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let closed = held.iter().filter(|stream| closed_within(stream, Duration::from_millis(10))).count();
    drop(held);
    std::thread::sleep(Duration::from_millis(500));
    let served = tokio::time::timeout(Duration::from_secs(20), async {
        let mut client = common::nfs::connect(port).await;
        common::nfs::walk(&mut client, PROJECT).await;
    })
    .await;
    assert!(served.is_ok(), "a new client is not served after a flood of connections");
    assert!(closed > 0, "every connection was kept open");
}

/// Whether a new client can mount and look up the project on `port`.
async fn served(port: u16) -> bool {
    let mount = nfs3_client::Nfs3ConnectionBuilder::new(nfs3_client::tokio::TokioConnector, "127.0.0.1", "/")
        .portmapper_port(port)
        .mount_port(port)
        .nfs3_port(port)
        .connect_from_privileged_port(false)
        .mount();
    let Ok(Ok(mut client)) = tokio::time::timeout(Duration::from_secs(20), mount).await else { return false };
    let root = client.root_nfs_fh3();
    common::nfs::lookup(&mut client, &root, PROJECT).await.is_ok()
}

/// NFS clients keep a connection open while mounted and connect again
/// when it is closed. Connections left idle must not lock other clients
/// out: with every connection the server takes (here, under a limit of
/// 128 open files) held idle for some seconds, a new client is served,
/// and the connection idle longest is closed to make room for it.
#[tokio::test]
async fn serve_nfs_closes_an_idle_connection_to_serve_a_new_client() {
    let (_state, _stop, port) = serve_nfs_with_128_files();
    let mut held: Vec<_> = (0..40).map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(500));
    // Past the limit, a connection is closed at once: no other is idle yet.
    held.retain(|stream| !closed_within(stream, Duration::from_millis(10)));
    assert!(!held.is_empty() && held.len() < 40, "{} of 40 connections kept", held.len());
    std::thread::sleep(Duration::from_secs(12));
    assert!(served(port).await, "a new client is not served while idle connections fill every slot");
    let closed = held.iter().filter(|stream| closed_within(stream, Duration::from_millis(10))).count();
    assert!(closed > 0, "no idle connection was closed");
}

/// Stops a child process when dropped, whatever the test did.
struct Stop(Child);

impl Drop for Stop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether the other side closed `stream` (a read gives end of file or an
/// error) within `wait`.
fn closed_within(mut stream: &std::net::TcpStream, wait: Duration) -> bool {
    use std::io::Read;
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
    }
}

/// The TCP ports process `pid` listens on (its sockets' inodes found in
/// /proc/net/tcp in state LISTEN).
fn listening_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the process runs")
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|link| link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']').map(str::to_string))
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
            (*state == "0A" && inodes.iter().any(|i| i == inode)).then_some(())?;
            u16::from_str_radix(local.rsplit(':').next()?, 16).ok()
        })
        .collect()
}

/// Clients reach nfsserve only through the relay that bounds what they
/// send: a connection made straight to the loopback port nfsserve
/// listens on never gets through (on Linux, a socket filter on that port
/// passes only the relay's own connections).
#[tokio::test]
async fn serve_nfs_lets_nobody_but_its_relay_into_nfsserve() {
    let state = tempfile::tempdir().unwrap();
    let server = NfsServer::start(state.path());
    let ports = listening_ports(server.pid());
    let inner = *ports.iter().find(|port| **port != server.port).unwrap_or_else(|| panic!("{ports:?}"));
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], inner));
    let straight = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(3));
    assert!(straight.is_err(), "connected straight to nfsserve on {inner}");
    let mut client = common::nfs::connect(server.port).await;
    common::nfs::walk(&mut client, PROJECT).await;
}
