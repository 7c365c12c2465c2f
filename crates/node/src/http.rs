//! The node's HTTP port (`--metrics-listen`): `/metrics` (Prometheus text),
//! `/livez` and `/readyz` (200 with what the node does, 503 with why not;
//! see [`crate::health`]). Plain HTTP: it carries no timestamps and no
//! control; keep it on a management network.
//!
//! It serves from the start of [`crate::Node::start`], before the storage
//! is open: a node that waits to be admitted (`join`) or restores an
//! export is live (its process runs) and not ready, which is what a
//! supervisor's probes must see during a long start.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::metrics::Observer;

/// How long [`HttpServer::shutdown`] lets requests finish.
const DRAIN: Duration = Duration::from_secs(2);

/// The node's observer once the node runs (empty while it starts).
pub(crate) type ObserverCell = Arc<OnceLock<Arc<Observer>>>;

#[derive(Clone)]
struct Shared {
    observer: ObserverCell,
    metrics: PrometheusHandle,
}

/// The running HTTP port. Dropping it stops it at once; [`shutdown`]
/// (Self::shutdown) lets requests finish first.
pub(crate) struct HttpServer {
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl HttpServer {
    /// Serves the HTTP port on `listener`.
    pub(crate) fn serve(
        listener: TcpListener,
        observer: ObserverCell,
        metrics: PrometheusHandle,
    ) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let app = Router::new()
            .route("/metrics", get(render))
            .route("/livez", get(livez))
            .route("/readyz", get(readyz))
            .with_state(Shared { observer, metrics });
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(err) = served {
                tracing::warn!(%err, "the HTTP port (metrics, health) stopped");
            }
        });
        Self {
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops taking requests and waits (at most 2 s) for those in flight.
    pub(crate) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(DRAIN, &mut task).await.is_err()
        {
            task.abort();
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn render(State(shared): State<Shared>) -> String {
    shared.metrics.render()
}

async fn livez(State(shared): State<Shared>) -> (StatusCode, String) {
    match shared.observer.get() {
        Some(observer) => answer(observer.live()),
        None => answer(Ok(
            "starting (opening its storage, waiting to be admitted, or restoring an export)"
                .to_owned(),
        )),
    }
}

async fn readyz(State(shared): State<Shared>) -> (StatusCode, String) {
    match shared.observer.get() {
        Some(observer) => answer(observer.ready()),
        None => answer(Err(
            "starting: the client service does not run yet".to_owned()
        )),
    }
}

fn answer(decision: Result<String, String>) -> (StatusCode, String) {
    match decision {
        Ok(what) => (StatusCode::OK, format!("ok: {what}\n")),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ok: {why}\n")),
    }
}
