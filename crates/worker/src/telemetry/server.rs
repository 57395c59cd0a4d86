//! The worker's HTTP endpoints, on `METRICS_ADDR`:
//! - `GET /metrics`: the Prometheus metrics (OpenMetrics text);
//! - `GET /healthz`: 200 while the process and its loops are alive, 503
//!   when the receive loop or a job's heartbeat is wedged (for a container
//!   or instance health check: restart it);
//! - `GET /readyz`: 200 when PostgreSQL, the queue and the bucket answer and
//!   the worker is not draining, 503 otherwise (for a load balancer or an
//!   orchestrator: send it no work).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::Stats;
use super::health::HealthLimits;
use crate::db::Db;
use crate::queue::Queue;
use crate::storage::Storage;

/// How long a readiness answer is reused: probes come every few seconds
/// from several places, the services need not be asked each time.
const READY_CACHE: Duration = Duration::from_secs(5);
/// How long each readiness check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// What the endpoints look at.
pub(crate) struct Endpoints {
    pub stats: Arc<Stats>,
    pub registry: Registry,
    pub limits: HealthLimits,
    pub db: Db,
    pub queue: Queue,
    pub storage: Storage,
    /// Cancelled once the worker stops taking jobs.
    pub draining: CancellationToken,
    cached: Mutex<Option<(Instant, Result<(), String>)>>,
}

impl Endpoints {
    pub(crate) fn new(
        stats: Arc<Stats>,
        limits: HealthLimits,
        db: Db,
        queue: Queue,
        storage: Storage,
        draining: CancellationToken,
    ) -> Self {
        Endpoints {
            registry: stats.metrics.registry(),
            stats,
            limits,
            db,
            queue,
            storage,
            draining,
            cached: Mutex::new(None),
        }
    }

    /// Whether the services answer, asked at most every few seconds.
    async fn ready(&self) -> Result<(), String> {
        if self.draining.is_cancelled() {
            return Err("draining: the worker takes no new jobs".into());
        }
        if let Ok(c) = self.cached.lock()
            && let Some((at, result)) = c.as_ref()
            && at.elapsed() < READY_CACHE
        {
            return result.clone();
        }
        let result = self.check_services().await;
        if let Ok(mut c) = self.cached.lock() {
            *c = Some((Instant::now(), result.clone()));
        }
        result
    }

    async fn check_services(&self) -> Result<(), String> {
        let timed = |what: &'static str| move |_| format!("{what}: no answer within {} s", CHECK_TIMEOUT.as_secs());
        let (db, queue, bucket) = tokio::join!(
            tokio::time::timeout(CHECK_TIMEOUT, self.db.ping()),
            tokio::time::timeout(CHECK_TIMEOUT, self.queue.depth()),
            tokio::time::timeout(CHECK_TIMEOUT, self.storage.check()),
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
            let endpoints = Arc::clone(&endpoints);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let endpoints = Arc::clone(&endpoints);
                    async move { Ok::<_, std::convert::Infallible>(endpoints.respond(&req).await) }
                });
                if let Err(e) = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %e, "metrics connection ended");
                }
            });
        }
    })
}

/// Binds the endpoints' address (at start, so a taken port is a start-up
/// error, not a silent gap in monitoring).
pub(crate) async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}
