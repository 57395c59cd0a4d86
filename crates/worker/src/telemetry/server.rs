//! The worker's HTTP endpoints, on `METRICS_ADDR`:
//! - `GET /metrics`: the Prometheus metrics (OpenMetrics text);
//! - `GET /healthz`: 200 while the process and its loops are alive, 503
//!   when the receive loop or a job's heartbeat is wedged (for a container
//!   or instance health check: restart it);
//! - `GET /readyz`: 200 when PostgreSQL, the queue and the bucket answer, the
//!   worker is not draining and its last job met no configuration error,
//!   503 otherwise (for a load balancer or an orchestrator: send it no
//!   work). It answers within about 1.5 s whatever the services do: one
//!   check runs at a time, on a database connection of its own (the pool's
//!   may all be stuck), each service with a short deadline, and its answer
//!   is reused for a few seconds.
//!
//! Probes and scrapers are trusted but bounded: at most
//! [`MAX_CONNECTIONS`] connections at once (more are closed on accept), a
//! request's head must arrive within [`HEADER_TIMEOUT`], and connections
//! are not kept alive.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;

use super::Stats;
use super::health::HealthLimits;
use crate::db::Db;
use crate::queue::Queue;
use crate::storage::Storage;

/// How long a readiness answer is reused: probes come every few seconds
/// from several places, the services need not be asked each time.
const READY_CACHE: Duration = Duration::from_secs(5);
/// How long each readiness check may take: probes time out at 1 to 5 s.
const CHECK_TIMEOUT: Duration = Duration::from_millis(1500);
/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a client may take to send a request's head.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoints look at.
pub(crate) struct Endpoints {
    pub stats: Arc<Stats>,
    pub registry: Registry,
    pub limits: HealthLimits,
    pub db: Db,
    pub queue: Queue,
    pub storage: Storage,
    /// Where the worker writes: the readiness check lists it.
    pub processed_prefix: String,
    /// Cancelled once the worker stops taking jobs.
    pub draining: CancellationToken,
    /// The last answer; its lock is held while a check runs, so checks
    /// never pile up.
    cached: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Endpoints {
    pub(crate) fn new(
        stats: Arc<Stats>,
        limits: HealthLimits,
        db: Db,
        queue: Queue,
        storage: Storage,
        processed_prefix: String,
        draining: CancellationToken,
    ) -> Self {
        Endpoints {
            registry: stats.metrics.registry(),
            stats,
            limits,
            db,
            queue,
            storage,
            processed_prefix,
            draining,
            cached: Mutex::new(None),
        }
    }

    /// Whether the worker should get work: not draining, configured, and
    /// its services answer (asked at most every few seconds, one check at
    /// a time).
    async fn ready(&self) -> Result<(), String> {
        if self.draining.is_cancelled() {
            return Err("draining: the worker takes no new jobs".into());
        }
        if let Some(reason) = self.stats.health.configuration_error() {
            return Err(format!("configuration error: {reason}"));
        }
        let wait = CHECK_TIMEOUT + Duration::from_millis(200);
        let Ok(mut cached) = tokio::time::timeout(wait, self.cached.lock()).await else {
            return Err("the services did not answer the readiness check in time".into());
        };
        if let Some((at, result)) = cached.as_ref()
            && at.elapsed() < READY_CACHE
        {
            return result.clone();
        }
        let result = self.check_services().await;
        *cached = Some((Instant::now(), result.clone()));
        result
    }

    async fn check_services(&self) -> Result<(), String> {
        let timed = |what: &'static str| move |_| format!("{what}: no answer within {:?}", CHECK_TIMEOUT);
        let (db, queue, bucket) = tokio::join!(
            tokio::time::timeout(CHECK_TIMEOUT, self.db.check_within(CHECK_TIMEOUT)),
            tokio::time::timeout(CHECK_TIMEOUT, self.queue.depth()),
            tokio::time::timeout(CHECK_TIMEOUT, self.storage.check(&self.processed_prefix)),
        );
        db.map_err(timed("database"))?.map_err(|e| e.to_string())?;
        queue.map_err(timed("queue"))?.map_err(|e| e.to_string())?;
        bucket.map_err(timed("bucket"))?.map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn respond(&self, req: &Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n".into());
        }
        match req.uri().path() {
            "/metrics" => {
                let mut body = String::new();
                match prometheus_client::encoding::text::encode(&mut body, &self.registry) {
                    Ok(()) => {
                        let mut response = text(StatusCode::OK, body);
                        response.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static(
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            ),
                        );
                        response
                    }
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")),
                }
            }
            "/healthz" => match self.stats.health.check(self.limits) {
                Ok(()) => text(StatusCode::OK, "ok\n".into()),
                Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
            },
            "/readyz" => match self.ready().await {
                Ok(()) => text(StatusCode::OK, "ready\n".into()),
                Err(why) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
            },
            _ => text(StatusCode::NOT_FOUND, "/metrics, /healthz or /readyz\n".into()),
        }
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Serves the endpoints on `listener` until `stop`.
pub(crate) fn spawn(
    listener: TcpListener,
    endpoints: Arc<Endpoints>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot accept a connection on the metrics port");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                () = stop.cancelled() => return,
            };
            let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
                tracing::debug!("too many connections on the metrics port; closing one");
                continue;
            };
            let endpoints = Arc::clone(&endpoints);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let endpoints = Arc::clone(&endpoints);
                    async move { Ok::<_, std::convert::Infallible>(endpoints.respond(&req).await) }
                });
                let served = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(false)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(error = %e, "metrics connection ended");
                }
                drop(permit);
            });
        }
    })
}

/// Binds the endpoints' address (at start, so a taken port is a start-up
/// error, not a silent gap in monitoring).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
