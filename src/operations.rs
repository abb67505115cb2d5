//! The operator's endpoint (`--metrics-addr`): what the layers record
//! through the `metrics` facade, as Prometheus text at `/metrics`;
//! `/healthz`, 200 while the process serves; `/readyz`, 200 once the mount
//! serves and 503 before and while it drains. The same readiness goes to
//! systemd (`Type=notify`) when it started the process: READY=1, then
//! STOPPING=1. And the API log (`--api-log`), which
//! `ciofs_backends::observed` writes.
//!
//! Off by default: without it no recorder is installed and every
//! `metrics::counter!` in the layers is a no-op.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

/// A client that has not sent its request's head within this is dropped.
const HEAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// How often recorded samples are folded in (`upkeep`).
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
/// Connections served at once; more are closed as soon as accepted, so
/// that clients holding every slot stall no one queued behind them.
const MAX_CONNECTIONS: usize = 16;

/// Latency buckets, in seconds: from a cached answer to a stalled call.
const SECONDS_BUCKETS: &[f64] = &[0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0];

/// Whether the mount takes requests: `/readyz` says it. It starts at 0,
/// starting.
#[derive(Default)]
pub struct Readiness(AtomicU8);

const READY: u8 = 1;
const DRAINING: u8 = 2;

impl Readiness {
    pub fn ready(&self) {
        self.0.store(READY, Ordering::SeqCst);
        tell_systemd(sd_notify::NotifyState::Ready);
    }

    pub fn draining(&self) {
        if self.0.swap(DRAINING, Ordering::SeqCst) != DRAINING {
            tell_systemd(sd_notify::NotifyState::Stopping);
        }
    }

    fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst) == READY
    }
}

/// Tells systemd (the service manager at $NOTIFY_SOCKET, if any) how the
/// mount is; nothing without one.
fn tell_systemd(state: sd_notify::NotifyState) {
    // The variable stays: STOPPING=1 follows READY=1.
    if let Err(e) = sd_notify::notify(false, &[state]) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Installs the Prometheus recorder and serves the endpoint on `addr`
/// until the process ends; returns the address bound (port 0 picks one).
pub async fn serve(addr: SocketAddr, readiness: Arc<Readiness>) -> Result<SocketAddr, String> {
    let handle = PrometheusBuilder::new()
        .set_buckets(SECONDS_BUCKETS)
        .and_then(|builder| builder.install_recorder())
        .map_err(|e| format!("cannot record metrics: {e}"))?;
    ciofs_frontends::metered::start_recording();
    ciofs_backends::observed::start_recording();
    let listener = TcpListener::bind(addr).await.map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
    let handle = Arc::new(handle);
    tokio::spawn(upkeep(handle.clone()));
    tokio::spawn(accept(listener, handle, readiness));
    Ok(bound)
}

/// Folds recorded histogram samples into their buckets: without it they
/// pile up until a scrape (about 24 bytes a FUSE operation).
async fn upkeep(handle: Arc<PrometheusHandle>) {
    let mut tick = tokio::time::interval(UPKEEP_EVERY);
    loop {
        tick.tick().await;
        handle.run_upkeep();
    }
}

async fn accept(listener: TcpListener, handle: Arc<PrometheusHandle>, readiness: Arc<Readiness>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: the next accept may succeed.
                tracing::warn!(error = %e, "metrics endpoint: cannot accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!("metrics endpoint: every connection slot is taken; closing a new one");
            continue;
        };
        let (handle, readiness) = (handle.clone(), readiness.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |request| {
                let answer = answer(&request, &handle, &readiness);
                async move { Ok::<_, Infallible>(answer) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "metrics endpoint: connection ended");
            }
        });
    }
}

fn answer(request: &Request<Incoming>, handle: &PrometheusHandle, readiness: &Readiness) -> Response<Full<Bytes>> {
    match request.uri().path() {
        "/metrics" => {
            record_process_memory();
            record_uploads();
            text(StatusCode::OK, handle.render())
        }
        "/healthz" => text(StatusCode::OK, "ok\n".to_string()),
        "/readyz" if readiness.is_ready() => text(StatusCode::OK, "ready\n".to_string()),
        "/readyz" => text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n".to_string()),
        _ => text(StatusCode::NOT_FOUND, "not found: /metrics, /healthz, /readyz\n".to_string()),
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}

/// The process's resident memory, read at each scrape
/// (`process_resident_memory_bytes`, as Prometheus's own clients name it).
fn record_process_memory() {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else { return };
    let Some(pages) = statm.split_whitespace().nth(1).and_then(|p| p.parse::<f64>().ok()) else { return };
    // SAFETY: sysconf only reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as f64;
    metrics::gauge!("process_resident_memory_bytes").set(pages * page);
}

/// Uploads sent to Cloud Storage and not answered yet, and staged files
/// whose bytes are not uploaded yet (written, or being uploaded), read at
/// each scrape. The latter is counted as a writer's published state turns
/// busy or idle (`storage::writer::pending_uploads`), not at every write.
fn record_uploads() {
    metrics::gauge!("ciofs_uploads_in_flight").set(ciofs_backends::observed::uploads_in_flight() as f64);
    metrics::gauge!("ciofs_uploads_pending").set(crate::storage::writer::pending_uploads() as f64);
}

/// Opens `--api-log`: FILE appended to, made 0600 and never through a
/// link, or stderr for `-`; every observed backend made after this logs
/// its calls there.
pub fn open_api_log(path: &std::path::Path) -> Result<(), String> {
    let opened = if path.as_os_str() == "-" {
        ciofs_backends::observed::ApiLog::to_writer(std::io::stderr())
    } else {
        crate::core::private_files::open(path, crate::core::private_files::Open::Append)
            .and_then(ciofs_backends::observed::ApiLog::to_writer)
    };
    let log = opened.map_err(|e| format!("--api-log {}: {e}", path.display()))?;
    ciofs_backends::observed::install_api_log(log)
}
