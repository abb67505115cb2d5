//! The configuration file through the real binary: a FUSE mount against
//! the emulator that takes its project, metadata TTL and read-only view
//! from the file; flags and environment over the file; the default place;
//! a wrong file refused at start; `ciofs config show`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A scratch directory with the config file, the mount point, an empty
/// XDG_CONFIG_HOME (so no config of the machine's is read) and state
/// directories.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("config.toml"), config).expect("write config");
        std::fs::create_dir(dir.path().join("mnt")).expect("mount dir");
        std::fs::create_dir(dir.path().join("xdg")).expect("xdg dir");
        Scratch { dir }
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.dir.path().join(relative)
    }

    fn config(&self) -> PathBuf {
        self.path("config.toml")
    }

    /// `ciofs` with an environment of nothing but the emulators' and `env`.
    fn ciofs(&self, env: &[(&str, &str)]) -> Command {
        let mut command = ciofs();
        command
            .env_remove("CIOFS_CONFIG")
            .env_remove("CIOFS_PROJECT")
            .env_remove("CIOFS_STATE_DIR")
            .env("XDG_CONFIG_HOME", self.path("xdg"))
            .env("CIOFS_LOG", "info")
            .envs(env.iter().copied());
        command
    }
}

/// A `ciofs mount --foreground` child, unmounted and stopped on drop.
struct Mount {
    dir: PathBuf,
    child: Child,
    log: PathBuf,
}

impl Mount {
    fn start(scratch: &Scratch, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = scratch.path("mnt");
        let log = scratch.path("ciofs.log");
        let child = scratch
            .ciofs(env)
            .args(["mount", "--foreground"])
            .args(args)
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start ciofs");
        let mut mount = Mount { dir, child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&mount.dir) {
            if let Ok(Some(status)) = mount.child.try_wait() {
                panic!("ciofs exited ({status}) before mounting:\n{}", mount.log_text());
            }
            assert!(Instant::now() < deadline, "not mounted in time:\n{}", mount.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        mount
    }

    fn bucket(&self, bucket: &str) -> PathBuf {
        self.dir.join(PROJECT).join("storage").join(bucket)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ls(dir: &Path) -> String {
    ok(&format!("ls {}", dir.display()))
}

/// What the shell said when writing `file` failed (it must fail).
fn write_refused(file: &Path) -> String {
    let output = sh(&format!("echo new > {}", file.display()));
    assert!(!output.status.success(), "writing {} succeeded", file.display());
    String::from_utf8_lossy(&output.stderr).to_string()
}

fn stdout_of(output: &Output) -> String {
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).to_string()
}

const READ_ONLY_NO_CACHE: &str = "project = [\"test-project\"]\n\
                                  [metadata]\n\
                                  metadata_ttl = 0\n\
                                  [view]\n\
                                  read_only = true\n";

#[test]
fn a_mount_takes_its_project_metadata_ttl_and_read_only_from_the_config_file() {
    let bucket = bucket_name("config-file");
    create_bucket(&bucket);
    upload(&bucket, "first.txt", b"first\n");
    let scratch = Scratch::new(READ_ONLY_NO_CACHE);
    let state = scratch.path("state").display().to_string();
    let config = scratch.config().display().to_string();
    let mount = Mount::start(&scratch, &["--config", &config], &[("CIOFS_STATE_DIR", &state)]);
    let dir = mount.bucket(&bucket);

    assert_eq!(ok(&format!("cat {}/first.txt", dir.display())), "first\n", "the file's project is shown");
    assert!(write_refused(&dir.join("new.txt")).contains("Read-only file system"), "read_only = true");
    assert_eq!(ls(&dir), "first.txt\n");
    upload(&bucket, "second.txt", b"second\n");
    assert_eq!(ls(&dir), "first.txt\nsecond.txt\n", "metadata_ttl = 0: every listing asks Google");
}

#[test]
fn a_flag_wins_over_the_file_and_the_environment_over_its_state_dir() {
    let bucket = bucket_name("config-flag");
    create_bucket(&bucket);
    upload(&bucket, "first.txt", b"first\n");
    let scratch = Scratch::new("");
    let state_in_file = scratch.path("state-from-file");
    let text = format!("state_dir = \"{}\"\n{READ_ONLY_NO_CACHE}", state_in_file.display());
    std::fs::write(scratch.config(), text).expect("write config");
    let state = scratch.path("state-from-env");
    let config = scratch.config();
    let env = [("CIOFS_STATE_DIR", state.to_str().expect("utf-8")), ("CIOFS_CONFIG", config.to_str().expect("utf-8"))];
    let mount = Mount::start(&scratch, &["--metadata-ttl", "600"], &env);
    let dir = mount.bucket(&bucket);

    assert_eq!(ls(&dir), "first.txt\n");
    upload(&bucket, "second.txt", b"second\n");
    assert_eq!(ls(&dir), "first.txt\n", "--metadata-ttl 600 over the file's 0: the listing is kept");
    assert!(write_refused(&dir.join("new.txt")).contains("Read-only file system"), "the file still says read_only");
    assert!(state.is_dir(), "CIOFS_STATE_DIR over the file's state_dir:\n{}", mount.log_text());
    assert!(!state_in_file.exists(), "the file's state_dir is not used");
}

#[test]
fn a_wrong_file_is_refused_at_start_with_its_file_line_and_key() {
    let scratch = Scratch::new("project = [\"test-project\"]\n\n[metadata]\nmetadata_ttl = 5\n\n\nmetadata_tll = 3\n");
    let config = scratch.config().display().to_string();
    let output = run(scratch.ciofs(&[]).args(["--config", &config, "mount", "--foreground"]).arg(scratch.path("mnt")));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "a wrong file was taken: {stderr}");
    assert_eq!(stderr, format!("ciofs: {config}:7:1: metadata_tll: unknown key (did you mean metadata_ttl?)\n"));
    assert!(!is_mounted(&scratch.path("mnt")));

    std::fs::write(scratch.config(), "[cache]\ncache_memory = \"lots\"\n").expect("rewrite");
    let output = run(scratch.ciofs(&[]).args(["--config", &config, "config", "show"]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.starts_with(&format!("ciofs: {config}:2:1: cache_memory: invalid value 'lots'")), "{stderr}");

    let output = run(scratch.ciofs(&[]).args(["--config", "/nonexistent/config.toml", "config", "show"]));
    assert!(!output.status.success(), "a named file must exist");
}

#[test]
fn the_file_in_xdg_config_home_or_else_in_home_is_read_without_config() {
    let scratch = Scratch::new("");
    let in_xdg = scratch.path("xdg/ciofs/config.toml");
    std::fs::create_dir_all(in_xdg.parent().expect("parent")).expect("xdg/ciofs");
    std::fs::write(&in_xdg, "project = [\"from-xdg\"]\n").expect("write");
    let shown = stdout_of(&run(scratch.ciofs(&[]).args(["config", "show", "mount"])));
    assert!(shown.contains(&format!("project = [\"from-xdg\"]  # file {}:1\n", in_xdg.display())), "{shown}");

    let home = scratch.path("home");
    let in_home = home.join(".config/ciofs/config.toml");
    std::fs::create_dir_all(in_home.parent().expect("parent")).expect("home/.config/ciofs");
    std::fs::write(&in_home, "project = [\"from-home\"]\n").expect("write");
    let no_xdg = [("HOME", home.to_str().expect("utf-8")), ("XDG_CONFIG_HOME", "")];
    let shown = stdout_of(&run(scratch.ciofs(&no_xdg).args(["config", "show"])));
    assert!(shown.contains(&format!("project = [\"from-home\"]  # file {}:1\n", in_home.display())), "{shown}");
}

#[test]
fn config_show_prints_every_key_of_the_command_with_its_source() {
    let scratch = Scratch::new(
        "state_dir = \"/from/file\"\n[metadata]\nmetadata_ttl = 30\nnegative_ttl = 2\n[nfs_server]\nlisten = \"127.0.0.1:0\"\n",
    );
    let config = scratch.config().display().to_string();
    let env = [("CIOFS_STATE_DIR", "/from/env"), ("CIOFS_CONFIG", config.as_str())];
    let shown = stdout_of(&run(scratch.ciofs(&env).args(["config", "show", "mount", "--metadata-ttl", "5"])));
    for line in [
        "metadata_ttl = 5  # flag".to_string(),
        "state_dir = \"/from/env\"  # env CIOFS_STATE_DIR".to_string(),
        format!("negative_ttl = 2  # file {config}:4"),
        "cache_memory = \"256M\"  # default".to_string(),
        "# project is unset  # default".to_string(),
    ] {
        assert!(shown.lines().any(|shown| shown == line), "no {line:?} in:\n{shown}");
    }
    let serve = stdout_of(&run(scratch.ciofs(&[]).args(["config", "show", "serve-nfs", "--config", &config])));
    assert!(serve.contains(&format!("listen = \"127.0.0.1:0\"  # file {config}:6\n")), "{serve}");
    assert!(serve.contains(&format!("state_dir = \"/from/file\"  # file {config}:1\n")), "{serve}");
    let keys = |text: &str| text.lines().filter(|l| l.contains(" = ") || l.ends_with("unset  # default")).count();
    let help = stdout_of(&run(scratch.ciofs(&[]).args(["serve-nfs", "--help"])));
    let flags = help.lines().filter(|l| l.trim_start().starts_with("--") && !l.contains("--config <FILE>")).count();
    assert_eq!(keys(&serve), flags, "one key per flag of serve-nfs --help:\n{serve}\n{help}");
}

/// `ciofs config show COMMAND FLAGS --config FILE` shows FILE even when
/// the default file is broken (the first parse of the command line read
/// the default file, and refused it, before `config show` saw its
/// `--config`).
#[test]
fn config_show_s_own_config_is_read_whatever_the_default_file_holds() {
    let scratch = Scratch::new("[nfs_server]\nlisten = \"127.0.0.1:0\"\n");
    let in_xdg = scratch.path("xdg/ciofs/config.toml");
    std::fs::create_dir_all(in_xdg.parent().expect("parent")).expect("xdg/ciofs");
    std::fs::write(&in_xdg, "[metadata]\nmetadata_tll = 3\n").expect("write");
    let config = scratch.config().display().to_string();
    // After another flag, `--config` is among `config show`'s trailing args.
    let output =
        run(scratch.ciofs(&[]).args(["config", "show", "serve-nfs", "--negative-ttl", "1", "--config", &config]));
    let shown = stdout_of(&output);
    assert!(shown.contains(&format!("listen = \"127.0.0.1:0\"  # file {config}:2\n")), "{shown}");
    assert!(shown.contains("negative_ttl = 1  # flag\n"), "{shown}");
    let output = run(scratch.ciofs(&[]).args(["config", "show", "serve-nfs"]));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success() && stderr.contains("metadata_tll: unknown key"), "the default is read: {stderr}");
}

/// Flags, then environment, then the file: what the file sets and the
/// environment too is the environment's, unless a flag says.
#[test]
fn the_environment_wins_over_the_file_and_a_flag_over_the_environment() {
    let scratch = Scratch::new("project = [\"file-a\"]\nstate_dir = \"/from/file\"\n[metadata]\nmetadata_ttl = 7\n");
    let config = scratch.config().display().to_string();
    let env = [("CIOFS_PROJECT", "env-a,env-b"), ("CIOFS_STATE_DIR", "/from/env"), ("CIOFS_CONFIG", config.as_str())];
    let shown = stdout_of(&run(scratch.ciofs(&env).args(["config", "show", "mount"])));
    for line in [
        "project = [\"env-a\", \"env-b\"]  # env CIOFS_PROJECT".to_string(),
        "state_dir = \"/from/env\"  # env CIOFS_STATE_DIR".to_string(),
        format!("metadata_ttl = 7  # file {config}:4"),
    ] {
        assert!(shown.lines().any(|shown| shown == line), "no {line:?} in:\n{shown}");
    }
    let flags = ["config", "show", "mount", "--project", "flag", "--state-dir", "/flag"];
    let shown = stdout_of(&run(scratch.ciofs(&env).args(flags)));
    for line in ["project = [\"flag\"]  # flag", "state_dir = \"/flag\"  # flag"] {
        assert!(shown.lines().any(|shown| shown == line), "no {line:?} in:\n{shown}");
    }
}
