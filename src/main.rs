//! `ciofs`: mount, unmount, serve-nfs, fuse-helper, export, import,
//! config show, demo.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use ciofs::cli::{
    Cli, Command, ExportArgs, ImportArgs, MountArgs, OperatorArgs, ServeNfsArgs, TreeArgs, ViewArgs, WatchArgs,
};
use ciofs::core::printable::printable;
use ciofs::daemon::{self, PidFile, ReadyPipe};
use ciofs::fuse_handoff::{self, Mounted};
use ciofs::mount_point;
use ciofs::namespace::{Namespace, Services, Watching};
use ciofs::operations::{self, Readiness};
use ciofs::shutdown::{self, Signals, Waited};
use ciofs_backends::bigquery::{BigQueryConfig, GoogleBigQuery};
use ciofs_backends::gcs::{GcsConfig, GoogleGcs};
use ciofs_backends::observed::Observed;
use ciofs_backends::pubsub::{GooglePubSub, PubSubConfig};
use ciofs_backends::retry::RetryPolicy;
use ciofs_frontends::fuse::{DevFuse, FuseMount, FuseTarget};
use clap::{CommandFactory, Parser};
use tokio::net::UnixStream;
use tokio::time::Instant;
use tracing_subscriber::EnvFilter;

/// NFS has no close: what a client wrote is uploaded once it has not
/// written to the file for this long.
const COMMIT_IDLE: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    return_freed_blocks_to_the_system();
    let (cli, args) = match command_line() {
        Ok(Some(parsed)) => parsed,
        // mount(8)'s fake mode: nothing to do.
        Ok(None) => return ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("ciofs: {}", printable(&message));
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Mount(mount) if !mount.foreground => mount_in_background(&mount, &args[1..]),
        Command::Mount(args) => run(|| mount_foreground(args)),
        Command::Unmount { mountpoint, state_dir } => {
            let mut tell = |notice: &str| eprintln!("ciofs: {notice}");
            ciofs::cli::state_dir(state_dir.as_ref()).and_then(|dir| daemon::unmount(&dir, &mountpoint, &mut tell))
        }
        Command::ServeNfs(args) => run(|| serve_nfs(args)),
        Command::FuseHelper(args) => run(|| ciofs::fuse_helper::run(args)),
        Command::Export(args) => run(|| export(args)),
        Command::Import(args) => run(|| import(args)),
        Command::Config(ciofs::cli::ConfigCommand::Show { command, args }) => {
            ciofs::config::show(cli.config.as_deref(), &command, &args).map(|text| print!("{text}"))
        }
        Command::Demo(args) => run(|| demo(args)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            // Messages quote names from outside (archives, objects).
            eprintln!("ciofs: {}", printable(&message));
            ExitCode::FAILURE
        }
    }
}

/// The command line, with mount(8)'s forms turned into ciofs's own (see
/// `mount_options`), parsed under the configuration file (`config`), and
/// as it was turned (a background mount starts its daemon with it, which
/// reads the same file); clap exits on a command line it refuses.
fn command_line() -> Result<Option<(Cli, Vec<std::ffi::OsString>)>, String> {
    let command = Cli::command();
    let args = ciofs::mount_options::normalize(std::env::args_os().collect(), &command)?;
    let Some(args) = args else { return Ok(None) };
    Ok(Some((ciofs::config::parse_cli(&command, args.clone())?, args)))
}

/// Sets up logging and the runtime, then runs `body` on it.
fn run<F, Fut>(body: F) -> Result<(), String>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_env("CIOFS_LOG").unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ciofs")
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let result = runtime.block_on(body());
    // The API log's last lines are written by a thread that ends with us.
    ciofs_backends::observed::flush_api_log(std::time::Duration::from_secs(5));
    result
}

/// `ciofs mount` without --foreground: its daemon is this command line
/// (`command`, without the program) run again in the foreground.
fn mount_in_background(args: &MountArgs, command: &[std::ffi::OsString]) -> Result<(), String> {
    let (log, in_state_dir) = match &args.log_file {
        Some(log) => (log.clone(), false),
        None => (daemon::pid_file(&args.tree.state_dir()?, args.place()).with_extension("log"), true),
    };
    let file = daemon::open_log(&log, in_state_dir)?;
    let detail = daemon::spawn_and_wait(command, &["--foreground"], file, &log)?;
    eprintln!("ciofs: mounted {} ({detail}); log: {}", args.place().display(), log.display());
    Ok(())
}

/// The content cache allocates a megabyte per block and frees it when the
/// block leaves memory. glibc's malloc raises its mmap threshold past such
/// sizes after the first free, and then keeps freed blocks in its arenas:
/// reading 1 GiB grew the process ~100 MiB past the cache's memory tier.
/// A fixed threshold keeps large buffers in their own mappings, returned to
/// the system when freed (measured: 405 MB peak RSS down to 312 MB).
fn return_freed_blocks_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a tunable of the allocator, before any
    // thread is started.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

/// Where a namespace keeps what it must find again; None: in memory (the
/// inode numbers, the content cache), or the state directory's default
/// (staging files).
#[derive(Default)]
struct Placement {
    inode_journal: Option<PathBuf>,
    /// The content cache's disk tier, unless `--cache-dir` says otherwise.
    cache_dir: Option<PathBuf>,
    /// Staging files, and the journal of what is yet to be uploaded.
    staging_dir: Option<PathBuf>,
}

/// The namespace over the services `--backend` names, its content cache
/// open: its disk tier in `--cache-dir`, else in `placement.cache_dir`,
/// else memory only.
async fn namespace(tree: &TreeArgs, view: ViewArgs, placement: Placement) -> Result<Arc<Namespace>, String> {
    let services = match ciofs::demo::memory_services(&tree.backend).await? {
        Some(services) => services,
        None => google_services(tree).await?,
    };
    let projects = tree.projects.clone();
    let content_cache = tree.cache_options(placement.cache_dir);
    let ViewArgs { config_only, read_only } = view;
    let mut options = ciofs::namespace::Options { config_only, read_only, content_cache, ..tree.options()? };
    if let Some(staging_dir) = placement.staging_dir {
        options.staging_dir = staging_dir;
    }
    let namespace = match placement.inode_journal.as_deref() {
        Some(journal) => Namespace::persistent(projects, services, options, journal)
            .map_err(|e| format!("cannot open the inode journal {}: {e}", journal.display()))?,
        None => Namespace::new(projects, services, options),
    };
    namespace.open_content_cache().await?;
    Ok(Arc::new(namespace))
}

/// Google's services (or the emulators the environment names), each
/// counted and logged (`--metrics-addr`, `--api-log`).
async fn google_services(tree: &TreeArgs) -> Result<Services, String> {
    google_services_with(tree.retry_policy()).await
}

async fn google_services_with(retry: RetryPolicy) -> Result<Services, String> {
    let gcs = GoogleGcs::connect(GcsConfig { retry, ..GcsConfig::from_env() })
        .await
        .map_err(|e| format!("cannot reach Cloud Storage: {e}"))?;
    let bigquery = GoogleBigQuery::connect(BigQueryConfig { retry, ..BigQueryConfig::from_env() })
        .await
        .map_err(|e| format!("cannot reach BigQuery: {e}"))?;
    let pubsub = GooglePubSub::connect(PubSubConfig { retry, ..PubSubConfig::from_env() })
        .await
        .map_err(|e| format!("cannot reach Pub/Sub: {e}"))?;
    Ok(Services {
        gcs: Arc::new(Observed::new(Arc::new(gcs))),
        bigquery: Arc::new(Observed::new(Arc::new(bigquery))),
        pubsub: Arc::new(Observed::new(Arc::new(pubsub))),
    })
}

async fn mount_foreground(args: MountArgs) -> Result<(), String> {
    let mut ready = ReadyPipe::from_fd(args.ready_fd);
    let result = mount_and_wait(&args, &mut ready).await;
    if let Err(message) = &result {
        ready.failed(message);
    }
    result
}

async fn mount_and_wait(args: &MountArgs, ready: &mut ReadyPipe) -> Result<(), String> {
    if args.nfs {
        return nfs_mount_and_wait(args, ready).await;
    }
    let mut signals = Signals::install()?;
    // Taken (or refused) before anything else is set up. Resolved before
    // mounting: a stat of our own mount point from the daemon would wait on
    // the daemon. A passed descriptor's `/dev/fd/N` (or the helper's
    // socket) names the mount (its state) as it is.
    let (connection, helper) = tokio::select! {
        connection = fuse_connection(args) => connection?,
        // Stopped while it waited for its helper: nothing served yet.
        () = signals.recv() => return Ok(()),
    };
    let canonical = match &connection {
        FuseConnection::Mount(canonical) => canonical.clone(),
        FuseConnection::Passed(_) => args.place().to_path_buf(),
    };
    // A helper that mounted with allow_other has the kernel let every user
    // in: the session must answer them too.
    let allow_other = args.allow_other || helper.as_ref().is_some_and(|(_, mounted)| mounted.allow_other);
    // One it mounted read-only: the kernel refuses writes, and ciofs's own
    // view says so (EROFS at the core, nothing but reads sent to Google).
    let mut view = args.view;
    view.read_only |= helper.as_ref().is_some_and(|(_, mounted)| mounted.read_only);
    let readiness = operator_endpoint(&args.operator).await?;
    // A mount's own: what its last run could not upload is found again by
    // the next mount at the same place.
    let state_dir = args.tree.state_dir()?;
    let placement = Placement {
        cache_dir: Some(daemon::mount_state(&state_dir.join("cache"), &canonical)),
        staging_dir: Some(daemon::mount_state(&state_dir.join("staging"), &canonical)),
        ..Placement::default()
    };
    let namespace = namespace(&args.tree, view, placement).await?;
    if !view.read_only {
        namespace.resume_journaled_uploads().await;
    }
    // Edits written without close (a truncate alone, say) settle when idle.
    let _idle = namespace.spawn_idle_commits(COMMIT_IDLE);
    // Cloud Storage's entries are kept by the kernel as long as ciofs keeps
    // their metadata (what changes through the mount tells it at once).
    let options = ciofs_frontends::fuse::FuseOptions {
        allow_other,
        read_only: view.read_only,
        cacheable_ttl: std::time::Duration::from_secs(args.tree.metadata_ttl),
        ..Default::default()
    };
    let target = match connection {
        FuseConnection::Passed(fd) => FuseTarget::Descriptor(fd),
        FuseConnection::Mount(_) => FuseTarget::Path(args.place()),
    };
    let mount = ciofs_frontends::fuse::mount(namespace.clone(), target, &options)
        .map_err(|e| format!("cannot mount {}: {e}", args.place().display()))?;
    let _pid = PidFile::create(daemon::pid_file(&state_dir, args.place()))
        .map_err(|e| format!("cannot write the pid file: {e}"))?;
    // Once nothing else can fail to start: a subscription is not left behind.
    let watching = start_watching(&namespace, &args.watch).await?;
    tracing::info!(mountpoint = %args.place().display(), projects = ?args.tree.projects, "mounted");
    ready.ready(&format!("FUSE, projects {}", args.tree.projects.join(",")));
    readiness.ready();
    let timeout = args.operator.shutdown_timeout();
    let serving = Serving { mountpoint: &canonical, readiness: &readiness, namespace: &namespace, timeout };
    let deadline = serve_until_unmounted(Some(mount), serving, &mut signals).await;
    stop_watching(watching).await;
    let finished = shutdown::finish(&namespace, deadline, signals.recv()).await;
    namespace.close_content_cache().await;
    finished
}

/// Where a FUSE session's connection to the kernel comes from.
enum FuseConnection {
    /// A mount ciofs makes at this (canonical) path.
    Mount(PathBuf),
    /// A /dev/fuse descriptor someone else mounted.
    Passed(DevFuse),
}

/// How long `--fuse-socket` waits for its helper to listen (its container
/// may start after ours).
const HELPER_WAIT: Duration = Duration::from_secs(60);

/// The mount's connection, and with a `--fuse-socket` helper's the stream
/// to keep open while serving (its end tells the helper to unmount) and
/// what it mounted.
async fn fuse_connection(args: &MountArgs) -> Result<(FuseConnection, Option<(UnixStream, Mounted)>), String> {
    if let Some(socket) = &args.fuse_socket {
        let (stream, fd, mounted) = fuse_handoff::receive(socket, HELPER_WAIT).await?;
        let fuse = DevFuse::check(fd).map_err(|e| format!("the descriptor from {}: {e}", socket.display()))?;
        tracing::info!(socket = %socket.display(), mountpoint = %mounted.mountpoint.display(), "the helper mounted");
        return Ok((FuseConnection::Passed(fuse), Some((stream, mounted))));
    }
    let place = args.place();
    match passed_descriptor(place) {
        Some(fd) => Ok((FuseConnection::Passed(take_descriptor(fd)?), None)),
        None => Ok((FuseConnection::Mount(mount_point::prepare(place, args.mkdir)?), None)),
    }
}

/// The descriptor `/dev/fd/N` names, if the mount point is one: /dev/fuse
/// opened and mounted by a privileged helper and inherited, so that this
/// process serves the mount without privileges (libfuse's convention).
fn passed_descriptor(mountpoint: &Path) -> Option<RawFd> {
    mountpoint.to_str()?.strip_prefix("/dev/fd/")?.parse().ok().filter(|fd| *fd > 2)
}

/// Takes the inherited descriptor `fd` as this process's to serve, once it
/// is known to be /dev/fuse.
fn take_descriptor(fd: RawFd) -> Result<DevFuse, String> {
    // SAFETY: F_GETFD only reads the descriptor's flags; any number is safe
    // to ask about.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(format!("/dev/fd/{fd}: no such open descriptor (the helper passes one it mounted)"));
    }
    // SAFETY: the descriptor is open (checked above), and the command line
    // hands it to this process to serve: nothing else here owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    DevFuse::check(owned).map_err(|e| format!("/dev/fd/{fd}: {e}"))
}

/// What a mount serves with, for `serve_until_unmounted`.
struct Serving<'a> {
    mountpoint: &'a Path,
    readiness: &'a Readiness,
    namespace: &'a Namespace,
    /// `--shutdown-timeout`.
    timeout: Duration,
}

/// Serves until the mount is gone: unmounted from outside, or by us on a
/// signal once the files being written were uploaded or the shutdown's
/// deadline passed. `fuse` is None for an NFS mount. The deadline the rest
/// of the shutdown has.
async fn serve_until_unmounted(mut fuse: Option<FuseMount>, serving: Serving<'_>, signals: &mut Signals) -> Instant {
    let Serving { mountpoint, readiness, namespace, timeout } = serving;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            () = signals.recv() => {
                let until = begin_shutdown(readiness, namespace, timeout);
                let waited = shutdown::wait_for_unsaved(namespace, until, signals.recv()).await;
                let deadline = if waited == Waited::Saved { until } else { Instant::now() };
                let ours = match &fuse {
                    Some(mount) => mount.mountpoint().map(|path| Unmount::Fuse(path.to_path_buf())),
                    None => Some(Unmount::Nfs(mountpoint.to_path_buf())),
                };
                // A passed descriptor's mount is its helper's to unmount.
                if let Some(ours) = ours {
                    ours.unmount_by(deadline, signals).await;
                }
                if let Some(mount) = fuse.take() {
                    let_the_session_end(mount, deadline, signals).await;
                }
                return deadline;
            }
            _ = tick.tick() => {
                let gone = match &fuse {
                    Some(mount) => mount.is_finished(),
                    None => !daemon::is_mounted_at(mountpoint),
                };
                if gone {
                    tracing::info!("unmounted from outside");
                    return begin_shutdown(readiness, namespace, timeout);
                }
            }
        }
    }
}

/// Stops taking changes and says so; the shutdown's deadline.
fn begin_shutdown(readiness: &Readiness, namespace: &Namespace, timeout: Duration) -> Instant {
    readiness.draining();
    namespace.begin_draining();
    let unsaved = namespace.unsaved_files().len();
    tracing::info!(unsaved, "shutting down: new changes are refused; waiting up to {timeout:?} for uploads");
    Instant::now() + timeout
}

/// How often a busy mount is tried again.
const UNMOUNT_RETRY: Duration = Duration::from_millis(200);

/// A mount of ours to take down at shutdown.
#[derive(Clone)]
enum Unmount {
    Fuse(PathBuf),
    Nfs(PathBuf),
}

impl Unmount {
    /// Unmounts, trying again while the mount is busy (a file open, a
    /// shell's working directory) until `deadline`, then detaching it:
    /// whatever holds it sees it go. A second signal detaches at once.
    async fn unmount_by(self, deadline: Instant, signals: &mut Signals) {
        tracing::info!("unmounting");
        let mut said = false;
        loop {
            let error = match self.once(false).await {
                Ok(()) => return,
                Err(error) => error,
            };
            if Instant::now() >= deadline {
                break;
            }
            if !said {
                tracing::warn!("cannot unmount yet ({error}); trying again until the deadline, then detaching");
                said = true;
            }
            tokio::select! {
                () = tokio::time::sleep(UNMOUNT_RETRY) => {}
                () = signals.recv() => break,
            }
        }
        if let Err(e) = self.once(true).await {
            tracing::error!("cannot detach the mount: {e}");
        }
    }

    /// One unmount (`lazy`: a detach), off the runtime: it may wait on the
    /// kernel, which may wait on our own session.
    async fn once(&self, lazy: bool) -> Result<(), String> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || match (this, lazy) {
            (Unmount::Fuse(path), _) => {
                ciofs_frontends::fuse::unmount(&path, lazy).map_err(|e| format!("{}: {e}", path.display()))
            }
            (Unmount::Nfs(path), false) => daemon::umount(&path),
            (Unmount::Nfs(path), true) => daemon::detach(&path),
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|unmounted| unmounted)
    }
}

/// Waits, until `deadline` or a second signal, for the FUSE session to
/// end. The kernel ends it once the last copy of the mount is gone: a copy
/// in another mount namespace (an app container without mount
/// propagation) keeps it serving, and is not waited for past the deadline;
/// once ciofs exits it answers ENOTCONN. A passed descriptor's session
/// ends with the process.
async fn let_the_session_end(mount: FuseMount, deadline: Instant, signals: &mut Signals) {
    if mount.mountpoint().is_some() {
        let ended = async {
            while !mount.is_finished() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::select! {
            () = ended => {}
            () = tokio::time::sleep_until(deadline) => {}
            () = signals.recv() => {}
        }
        if !mount.is_finished() {
            tracing::warn!("the mount is still held by a copy in another mount namespace: it fails once ciofs ends");
        }
    }
    mount.abandon();
}

async fn nfs_mount_and_wait(args: &MountArgs, ready: &mut ReadyPipe) -> Result<(), String> {
    let mut signals = Signals::install()?;
    let canonical = mount_point::prepare(args.place(), args.mkdir)?;
    let readiness = operator_endpoint(&args.operator).await?;
    let loopback = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
    let (service, address) = NfsService::start(&args.tree, loopback, args.view, &args.watch).await?;
    let port = address.port();
    let (target, read_only) = (canonical.clone(), args.view.read_only);
    // The mount command talks to our own server: keep it off the runtime.
    let mounted = tokio::task::spawn_blocking(move || os_nfs_mount(port, &target, read_only))
        .await
        .map_err(|e| format!("the NFS mount command failed: {e}"))?;
    if let Err(message) = mounted {
        let _nothing_written = service.stop(Instant::now(), &mut signals).await;
        let projects = args.tree.projects.join(",");
        return Err(format!(
            "{message}\nThis system cannot mount NFS. Run `ciofs serve-nfs --project {projects} --listen 127.0.0.1:12049` \
             and use a userspace NFS client, or mount with FUSE (without --nfs)"
        ));
    }
    let _pid = PidFile::create(daemon::pid_file(&args.tree.state_dir()?, args.place()))
        .map_err(|e| format!("cannot write the pid file: {e}"))?;
    ready.ready(&format!("NFS on 127.0.0.1:{port}"));
    readiness.ready();
    let timeout = args.operator.shutdown_timeout();
    let serving = Serving { mountpoint: &canonical, readiness: &readiness, namespace: &service.namespace, timeout };
    let deadline = serve_until_unmounted(None, serving, &mut signals).await;
    service.stop(deadline, &mut signals).await
}

/// Starts `--watch` if it is asked for.
async fn start_watching(namespace: &Arc<Namespace>, watch: &WatchArgs) -> Result<Option<Watching>, String> {
    match watch.options() {
        Some(options) => namespace.start_watching(&options).await.map(Some),
        None => Ok(None),
    }
}

/// Stops `--watch` (its subscriptions are deleted) once nothing is served.
async fn stop_watching(watching: Option<Watching>) {
    if let Some(watching) = watching {
        watching.stop().await;
    }
}

/// Starts the operator's endpoint if `--metrics-addr` asks for one, and the
/// API log if `--api-log` does; the readiness the endpoint reports (kept,
/// and unused, without one).
async fn operator_endpoint(args: &OperatorArgs) -> Result<Arc<Readiness>, String> {
    let readiness = Arc::new(Readiness::default());
    if let Some(path) = &args.api_log {
        operations::open_api_log(path)?;
    }
    if let Some(addr) = args.metrics_addr {
        let bound = operations::serve(addr, readiness.clone()).await?;
        tracing::info!(address = %bound, "serving metrics at /metrics, /healthz and /readyz");
    }
    Ok(readiness)
}

/// Runs the OS's NFS mount command for a server on loopback.
fn os_nfs_mount(port: u16, mountpoint: &Path, read_only: bool) -> Result<(), String> {
    let ro = if read_only { ",ro" } else { "" };
    let mut command = if cfg!(target_os = "macos") {
        let mut c = std::process::Command::new("mount_nfs");
        let options = format!("nolocks,vers=3,tcp,rsize=1048576,port={port},mountport={port}{ro}");
        c.arg("-o").arg(options).arg("localhost:/");
        c
    } else {
        let mut c = std::process::Command::new("mount");
        let options = format!("nolock,vers=3,tcp,port={port},mountport={port}{ro}");
        c.args(["-t", "nfs", "-o"]).arg(options).arg("127.0.0.1:/");
        c
    };
    let output = command.arg(mountpoint).output().map_err(|e| format!("cannot run the NFS mount command: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(format!("the NFS mount failed ({}): {}", output.status, stderr.trim().trim_end_matches('.')))
}

/// The name in the state dir of what belongs to an NFS server of these
/// projects alone: `<name>.inodes.jsonl` is its journal, `<name>.cache`
/// its content cache.
fn nfs_state(tree: &TreeArgs) -> Result<std::path::PathBuf, String> {
    // A memory backend's server keeps apart: what it left to upload is not Google's.
    let memory = if tree.backend.backend == ciofs::demo::Backend::Memory { "\0memory" } else { "" };
    let key = ciofs::core::inodes::path_hash(&(tree.projects.join("\0") + memory));
    Ok(tree.state_dir()?.join("nfs").join(format!("{key:016x}")))
}

async fn serve_nfs(args: ServeNfsArgs) -> Result<(), String> {
    let mut ready = ReadyPipe::from_fd(args.ready_fd);
    let mut signals = match Signals::install() {
        Ok(signals) => signals,
        Err(error) => {
            ready.failed(&error);
            return Err(error);
        }
    };
    let started = match (args.listen_address(), operator_endpoint(&args.operator).await) {
        (Ok(listen), Ok(readiness)) => {
            NfsService::start(&args.tree, listen, args.view, &args.watch).await.map(|(s, a)| (s, a, readiness))
        }
        (Err(refused), _) | (_, Err(refused)) => Err(refused),
    };
    let (service, address, readiness) = match started {
        Ok(started) => started,
        Err(error) => {
            ready.failed(&error);
            return Err(error);
        }
    };
    readiness.ready();
    // The one line a script or a user reads to find the port.
    eprintln!("ciofs: serving NFSv3 on {address}");
    tracing::info!(%address, projects = ?args.tree.projects, "serving NFS");
    ready.ready(&address.to_string());
    signals.recv().await;
    tracing::info!("stopping");
    let deadline = begin_shutdown(&readiness, &service.namespace, args.operator.shutdown_timeout());
    service.stop(deadline, &mut signals).await
}

/// The NFS server on a journaled namespace, with what NFS needs for having
/// no close: uploads after an idle time, and of what a crash left behind.
struct NfsService {
    namespace: Arc<Namespace>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    watching: Option<Watching>,
}

impl NfsService {
    async fn start(
        tree: &TreeArgs,
        listen: std::net::SocketAddr,
        view: ViewArgs,
        watch: &WatchArgs,
    ) -> Result<(Self, std::net::SocketAddr), String> {
        let state = nfs_state(tree)?;
        let (journal, cache_dir) = (state.with_extension("inodes.jsonl"), state.with_extension("cache"));
        if tree.backend.backend == ciofs::demo::Backend::Memory {
            // What an earlier run served from memory is gone, and its handles
            // with it: loading them would only cost memory (1M in a run of 10k).
            let _ = std::fs::remove_file(&journal);
        }
        let placement = Placement { inode_journal: Some(journal), cache_dir: Some(cache_dir), ..Placement::default() };
        let namespace = namespace(tree, view, placement).await?;
        // What an earlier run left to upload waits for a run that may write.
        if !view.read_only {
            namespace.resume_journaled_uploads().await;
            namespace.resume_journaled_edits().await;
        }
        // Both end by themselves when the namespace goes.
        namespace.spawn_idle_commits(COMMIT_IDLE);
        namespace.spawn_stream_log_tending();
        let (port_tx, port_rx) = tokio::sync::oneshot::channel();
        let served = namespace.clone();
        let server = tokio::spawn(async move { ciofs_frontends::nfs::serve(served, listen, Some(port_tx)).await });
        match port_rx.await {
            Ok(address) => {
                // Once serving: a subscription is not left behind by a
                // server that could not listen.
                let watching = start_watching(&namespace, watch).await?;
                Ok((NfsService { namespace, server, watching }, address))
            }
            Err(_) => Err(match server.await {
                Ok(Err(e)) => format!("cannot listen on {listen}: {e}"),
                _ => "the NFS server did not start".to_string(),
            }),
        }
    }

    /// Stops serving; what NFS clients wrote and did not go up yet goes up
    /// now, by the deadline (what does not stays journaled for the next
    /// start, and the error names it).
    async fn stop(self, deadline: Instant, signals: &mut Signals) -> Result<(), String> {
        self.server.abort();
        stop_watching(self.watching).await;
        let finished = shutdown::finish(&self.namespace, deadline, signals.recv()).await;
        self.namespace.close_content_cache().await;
        finished
    }
}

/// `ciofs demo`: a foreground mount (or NFS server) of the sample project
/// served from memory, as `mount` or `serve-nfs` with `--backend memory`;
/// with `--seed`, the sample project made on Google's services (the
/// emulators the environment names) instead.
async fn demo(args: ciofs::demo::DemoArgs) -> Result<(), String> {
    if args.seed {
        let services = google_services_with(RetryPolicy::default()).await?;
        ciofs::demo::seed(&services, args.seed_objects).await?;
        tracing::info!("made the sample project {} on Google's services", ciofs::demo::PROJECT);
        return Ok(());
    }
    let line = ciofs::demo::command_line(&args)?;
    match Cli::try_parse_from(line).map_err(|e| e.to_string())?.command {
        Command::Mount(mount) => mount_foreground(mount).await,
        Command::ServeNfs(serve) => serve_nfs(serve).await,
        other => Err(format!("the demo cannot run as {other:?}")),
    }
}

/// `ciofs export`: the archive is written next to FILE and renamed onto it
/// once complete, so a failed export leaves no partial archive behind.
async fn export(args: ExportArgs) -> Result<(), String> {
    let [project] = args.tree.projects.as_slice() else {
        return Err("export takes exactly one --project".to_string());
    };
    let project = project.clone();
    // Configuration only: the tree a `--config-only` mount shows.
    // Reads only, whatever the tree holds.
    let view = ViewArgs { config_only: args.config_only, read_only: true };
    let namespace = namespace(&args.tree, view, Placement::default()).await?;
    let partial = args.file.with_extension("partial");
    let file = std::fs::File::create(&partial).map_err(|e| format!("{}: {e}", partial.display()))?;
    let name = args.file.to_string_lossy().to_string();
    let gzip = name.ends_with(".gz") || name.ends_with(".tgz");
    let progress = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        indicatif::ProgressBar::new_spinner()
    } else {
        indicatif::ProgressBar::hidden()
    };
    let runtime = tokio::runtime::Handle::current();
    let options = ciofs::archive::ExportOptions { progress };
    let exported = tokio::task::spawn_blocking(move || {
        let out = std::io::BufWriter::new(file);
        if gzip {
            let encoder = flate2::write::GzEncoder::new(out, flate2::Compression::default());
            let (encoder, summary) = ciofs::archive::export_project(namespace, runtime, &project, encoder, options)?;
            finish(encoder.finish())?;
            Ok(summary)
        } else {
            let (out, summary) = ciofs::archive::export_project(namespace, runtime, &project, out, options)?;
            finish(Ok(out))?;
            Ok(summary)
        }
    })
    .await
    .map_err(|e| format!("the export stopped: {e}"))
    .and_then(|result: Result<_, String>| result);
    let summary = match exported {
        Ok(summary) => summary,
        Err(message) => {
            let _ = std::fs::remove_file(&partial);
            return Err(message);
        }
    };
    std::fs::rename(&partial, &args.file).map_err(|e| format!("{}: {e}", args.file.display()))?;
    eprintln!(
        "ciofs: exported {} to {}: {} directories, {} files, {} bytes",
        args.tree.projects[0],
        args.file.display(),
        summary.directories,
        summary.files,
        summary.bytes
    );
    Ok(())
}

/// Flushes a finished archive to its file and to disk.
fn finish(out: std::io::Result<std::io::BufWriter<std::fs::File>>) -> Result<(), String> {
    let out = out.map_err(|e| format!("writing the archive: {e}"))?;
    let file = out.into_inner().map_err(|e| format!("writing the archive: {}", e.error()))?;
    file.sync_all().map_err(|e| format!("writing the archive: {e}"))
}

/// `ciofs import`: the plan, then (unless --dry-run, or conflicts with
/// --on-conflict fail) the changes; a non-zero exit when anything was in
/// conflict, invalid or failed.
async fn import(args: ImportArgs) -> Result<(), String> {
    use ciofs::archive::import::{self, Action, ImportOptions, OnConflict};
    let [project] = args.tree.projects.as_slice() else {
        return Err("import takes exactly one --project".to_string());
    };
    let project = project.clone();
    let namespace = namespace(&args.tree, ViewArgs::default(), Placement::default()).await?;
    // Subscriptions waiting for a dead-letter topic are created by it.
    let _idle = namespace.spawn_idle_commits(COMMIT_IDLE);
    let file = import::ArchiveFile::new(&args.file)?;
    let options = ImportOptions {
        dry_run: args.dry_run,
        on_conflict: args.on_conflict,
        map_bucket: args.map_bucket,
        upload_macos_files: args.tree.upload_macos_files,
    };
    let runtime = tokio::runtime::Handle::current();
    let outcome = tokio::task::spawn_blocking(move || {
        let mut planned = import::read_archive(&file, &options)?;
        import::plan(&namespace, &runtime, &project, &mut planned)?;
        for item in &planned {
            let (verb, detail) = match &item.action {
                Action::Create => ("create", String::new()),
                Action::Update(diffs) => ("update", diffs.join("; ")),
                Action::Unchanged => ("unchanged", String::new()),
                Action::Conflict(why) => ("conflict", why.clone()),
                Action::Invalid(why) => ("invalid", why.clone()),
                Action::Ignored => continue,
            };
            let (path, detail) = (printable(&item.entry.path), printable(&detail));
            println!("{verb:<9} {path}{}{detail}", if detail.is_empty() { "" } else { "  " });
        }
        let mut summary = import::summarize(&planned);
        let blocked = options.on_conflict == OnConflict::Fail && summary.conflicts + summary.invalid > 0;
        if !options.dry_run && !blocked {
            let mut report =
                |path: &str, what: &str| println!("{:<9} {}  {}", "error", printable(path), printable(what));
            let progress = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                indicatif::ProgressBar::new(0)
            } else {
                indicatif::ProgressBar::hidden()
            };
            let on_conflict = options.on_conflict;
            summary.failed =
                import::apply(&namespace, &runtime, &project, &file, &planned, on_conflict, &progress, &mut report)?;
            // What waits for settings the archive did not have is made now.
            for (path, error) in runtime.block_on(namespace.settle()) {
                report(&path, &format!("failed: {error}"));
                summary.failed += 1;
            }
        }
        Ok::<_, String>((summary, blocked, options.dry_run))
    })
    .await
    .map_err(|e| format!("the import stopped: {e}"))??;
    let (summary, blocked, dry_run) = outcome;
    let done = if dry_run {
        "planned (dry run, nothing changed)"
    } else if blocked {
        "nothing applied (conflicts, --on-conflict fail)"
    } else {
        "applied"
    };
    eprintln!(
        "ciofs: {done}: {} to create, {} to update, {} unchanged, {} conflicts, {} invalid, {} failed",
        summary.created, summary.updated, summary.unchanged, summary.conflicts, summary.invalid, summary.failed
    );
    if summary.conflicts + summary.invalid + summary.failed > 0 {
        return Err("the archive was not imported whole (see above)".to_string());
    }
    Ok(())
}
