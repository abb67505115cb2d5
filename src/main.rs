//! `ciofs`: mount, unmount, serve-nfs, export, import, demo.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use ciofs::cli::{Cli, Command, ExportArgs, ImportArgs, MountArgs, OperatorArgs, ServeNfsArgs, TreeArgs, ViewArgs};
use ciofs::core::printable::printable;
use ciofs::daemon::{self, PidFile, ReadyPipe};
use ciofs::namespace::{Namespace, Services};
use ciofs::operations::{self, Readiness};
use ciofs_backends::bigquery::{BigQueryConfig, GoogleBigQuery};
use ciofs_backends::gcs::{GcsConfig, GoogleGcs};
use ciofs_backends::pubsub::{GooglePubSub, PubSubConfig};
use ciofs_frontends::fuse::FuseMount;
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// NFS has no close: what a client wrote is uploaded once it has not
/// written to the file for this long.
const COMMIT_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

fn main() -> ExitCode {
    return_freed_blocks_to_the_system();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Mount(args) if !args.foreground => mount_in_background(&args),
        Command::Mount(args) => run(|| mount_foreground(args)),
        Command::Unmount { mountpoint, state_dir } => {
            let mut tell = |notice: &str| eprintln!("ciofs: {notice}");
            ciofs::cli::state_dir(state_dir.as_ref()).and_then(|dir| daemon::unmount(&dir, &mountpoint, &mut tell))
        }
        Command::ServeNfs(args) => run(|| serve_nfs(args)),
        Command::Export(args) => run(|| export(args)),
        Command::Import(args) => run(|| import(args)),
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
    runtime.block_on(body())
}

fn mount_in_background(args: &MountArgs) -> Result<(), String> {
    let (log, in_state_dir) = match &args.log_file {
        Some(log) => (log.clone(), false),
        None => (daemon::pid_file(&args.tree.state_dir()?, &args.mountpoint).with_extension("log"), true),
    };
    let file = daemon::open_log(&log, in_state_dir)?;
    let detail = daemon::spawn_and_wait(&["--foreground"], file, &log)?;
    eprintln!("ciofs: mounted {} ({detail}); log: {}", args.mountpoint.display(), log.display());
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

/// Google's services (or the emulators the environment names).
async fn google_services(tree: &TreeArgs) -> Result<Services, String> {
    let retry = tree.retry_policy();
    let gcs = GoogleGcs::connect(GcsConfig { retry, ..GcsConfig::from_env() })
        .await
        .map_err(|e| format!("cannot reach Cloud Storage: {e}"))?;
    let bigquery = GoogleBigQuery::connect(BigQueryConfig { retry, ..BigQueryConfig::from_env() })
        .await
        .map_err(|e| format!("cannot reach BigQuery: {e}"))?;
    let pubsub = GooglePubSub::connect(PubSubConfig { retry, ..PubSubConfig::from_env() })
        .await
        .map_err(|e| format!("cannot reach Pub/Sub: {e}"))?;
    Ok(Services { gcs: Arc::new(gcs), bigquery: Arc::new(bigquery), pubsub: Arc::new(pubsub) })
}

/// The namespace over the services `--backend` names, its content cache open: its disk
/// tier in `--cache-dir`, else in `cache_dir` (a mount's or server's own
/// directory of the state dir), else memory only.
async fn namespace(
    tree: &TreeArgs,
    journal: Option<&Path>,
    view: ViewArgs,
    cache_dir: Option<PathBuf>,
) -> Result<Arc<Namespace>, String> {
    let services = match ciofs::demo::memory_services(&tree.backend) {
        Some(services) => services,
        None => google_services(tree).await?,
    };
    let projects = tree.projects.clone();
    let content_cache = tree.cache_options(cache_dir);
    let ViewArgs { config_only, read_only } = view;
    let options = ciofs::namespace::Options { config_only, read_only, content_cache, ..tree.options()? };
    let namespace = match journal {
        Some(journal) => Namespace::persistent(projects, services, options, journal)
            .map_err(|e| format!("cannot open the inode journal {}: {e}", journal.display()))?,
        None => Namespace::new(projects, services, options),
    };
    namespace.open_content_cache().await?;
    Ok(Arc::new(namespace))
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
    // Resolved before mounting: a stat of our own mount point from the
    // daemon would wait on the daemon.
    let canonical = canonical(&args.mountpoint)?;
    let readiness = operator_endpoint(&args.operator).await?;
    let cache_dir = daemon::mount_state(&args.tree.state_dir()?.join("cache"), &canonical);
    let namespace = namespace(&args.tree, None, args.view, Some(cache_dir)).await?;
    // Edits written without close (a truncate alone, say) settle when idle.
    let _idle = namespace.spawn_idle_commits(COMMIT_IDLE);
    // Cloud Storage's entries are kept by the kernel as long as ciofs keeps
    // their metadata (what changes through the mount tells it at once).
    let options = ciofs_frontends::fuse::FuseOptions {
        allow_other: args.allow_other,
        read_only: args.view.read_only,
        cacheable_ttl: std::time::Duration::from_secs(args.tree.metadata_ttl),
        ..Default::default()
    };
    let mount = ciofs_frontends::fuse::mount(namespace.clone(), &args.mountpoint, &options)
        .map_err(|e| format!("cannot mount {}: {e}", args.mountpoint.display()))?;
    let _pid = PidFile::create(daemon::pid_file(&args.tree.state_dir()?, &args.mountpoint))
        .map_err(|e| format!("cannot write the pid file: {e}"))?;
    tracing::info!(mountpoint = %args.mountpoint.display(), projects = ?args.tree.projects, "mounted");
    ready.ready(&format!("FUSE, projects {}", args.tree.projects.join(",")));
    readiness.ready();
    serve_until_unmounted(Some(mount), &canonical, &readiness).await;
    let _logged = namespace.settle().await;
    namespace.close_content_cache().await;
    Ok(())
}

fn canonical(mountpoint: &Path) -> Result<PathBuf, String> {
    mountpoint.canonicalize().map_err(|e| format!("mount point {}: {e}", mountpoint.display()))
}

/// Serves until the mount is gone: unmounted from outside, or by us on a
/// signal. An unmount that fails (a busy mount) is logged and serving goes
/// on until the next signal. `fuse` is None for an NFS mount.
async fn serve_until_unmounted(mut fuse: Option<FuseMount>, mountpoint: &Path, readiness: &Readiness) {
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
    let mut signal = std::pin::pin!(shutdown_signal());
    loop {
        tokio::select! {
            _ = &mut signal => {
                signal.set(shutdown_signal());
                tracing::info!("unmounting");
                readiness.draining();
                let unmounted = match fuse.take() {
                    Some(mount) => tokio::task::spawn_blocking(move || mount.unmount()).await,
                    None => {
                        let path = mountpoint.to_path_buf();
                        tokio::task::spawn_blocking(move || daemon::umount(&path).map_err(std::io::Error::other)).await
                    }
                };
                match unmounted {
                    Ok(Ok(())) => return,
                    Ok(Err(e)) => tracing::error!("cannot unmount ({e}); still serving"),
                    Err(e) => tracing::error!("the unmount failed ({e}); still serving"),
                }
            }
            _ = tick.tick() => {
                let gone = match &fuse {
                    Some(mount) => mount.is_finished(),
                    None => !daemon::is_mounted_at(mountpoint),
                };
                if gone {
                    tracing::info!("unmounted from outside");
                    readiness.draining();
                    return;
                }
            }
        }
    }
}

async fn nfs_mount_and_wait(args: &MountArgs, ready: &mut ReadyPipe) -> Result<(), String> {
    let canonical = canonical(&args.mountpoint)?;
    let readiness = operator_endpoint(&args.operator).await?;
    let loopback = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
    let (service, address) = NfsService::start(&args.tree, loopback, args.view).await?;
    let port = address.port();
    let (target, read_only) = (canonical.clone(), args.view.read_only);
    // The mount command talks to our own server: keep it off the runtime.
    let mounted = tokio::task::spawn_blocking(move || os_nfs_mount(port, &target, read_only))
        .await
        .map_err(|e| format!("the NFS mount command failed: {e}"))?;
    if let Err(message) = mounted {
        service.stop().await;
        let projects = args.tree.projects.join(",");
        return Err(format!(
            "{message}\nThis system cannot mount NFS. Run `ciofs serve-nfs --project {projects} --listen 127.0.0.1:12049` \
             and use a userspace NFS client, or mount with FUSE (without --nfs)"
        ));
    }
    let _pid = PidFile::create(daemon::pid_file(&args.tree.state_dir()?, &args.mountpoint))
        .map_err(|e| format!("cannot write the pid file: {e}"))?;
    ready.ready(&format!("NFS on 127.0.0.1:{port}"));
    readiness.ready();
    serve_until_unmounted(None, &canonical, &readiness).await;
    service.stop().await;
    Ok(())
}

/// Starts the operator's endpoint if `--metrics-addr` asks for one; the
/// readiness it reports (kept, and unused, without one).
async fn operator_endpoint(args: &OperatorArgs) -> Result<Arc<Readiness>, String> {
    let readiness = Arc::new(Readiness::default());
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
    let started = match (args.listen_address(), operator_endpoint(&args.operator).await) {
        (Ok(listen), Ok(readiness)) => {
            NfsService::start(&args.tree, listen, args.view).await.map(|(s, a)| (s, a, readiness))
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
    shutdown_signal().await;
    tracing::info!("stopping");
    readiness.draining();
    service.stop().await;
    Ok(())
}

/// The NFS server on a journaled namespace, with what NFS needs for having
/// no close: uploads after an idle time, and of what a crash left behind.
struct NfsService {
    namespace: Arc<Namespace>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl NfsService {
    async fn start(
        tree: &TreeArgs,
        listen: std::net::SocketAddr,
        view: ViewArgs,
    ) -> Result<(Self, std::net::SocketAddr), String> {
        let state = nfs_state(tree)?;
        let (journal, cache_dir) = (state.with_extension("inodes.jsonl"), state.with_extension("cache"));
        if tree.backend.backend == ciofs::demo::Backend::Memory {
            // What an earlier run served from memory is gone, and its handles
            // with it: loading them would only cost memory (1M in a run of 10k).
            let _ = std::fs::remove_file(&journal);
        }
        let namespace = namespace(tree, Some(&journal), view, Some(cache_dir)).await?;
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
            Ok(address) => Ok((NfsService { namespace, server }, address)),
            Err(_) => Err(match server.await {
                Ok(Err(e)) => format!("cannot listen on {listen}: {e}"),
                _ => "the NFS server did not start".to_string(),
            }),
        }
    }

    /// Stops serving; what NFS clients wrote and did not go up yet goes up now.
    async fn stop(self) {
        self.server.abort();
        let _logged = self.namespace.settle().await;
        self.namespace.close_content_cache().await;
    }
}

/// Resolves on SIGTERM, SIGINT or SIGHUP.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hangup = signal(SignalKind::hangup()).ok();
    let wait = |s: &mut Option<tokio::signal::unix::Signal>| {
        let s = s.take();
        async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending().await,
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = wait(&mut term) => {}
        _ = wait(&mut hangup) => {}
    }
}

/// `ciofs demo`: a foreground mount (or NFS server) of the sample project
/// served from memory, as `mount` or `serve-nfs` with `--backend memory`.
async fn demo(args: ciofs::demo::DemoArgs) -> Result<(), String> {
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
    let namespace = namespace(&args.tree, None, view, None).await?;
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
    let namespace = namespace(&args.tree, None, ViewArgs::default(), None).await?;
    // Subscriptions waiting for a dead-letter topic are created by it.
    let _idle = namespace.spawn_idle_commits(COMMIT_IDLE);
    let file = import::ArchiveFile::new(&args.file)?;
    let options = ImportOptions { dry_run: args.dry_run, on_conflict: args.on_conflict, map_bucket: args.map_bucket };
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
