//! The node's HTTP port (`--metrics-listen`): `/metrics` (Prometheus text),
//! `/livez` and `/readyz` (200 with what the node does, 503 with why not;
//! see [`crate::health`]). Plain HTTP: it carries no timestamps and no
//! control; keep it on a management network.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::metrics::Observer;

#[derive(Clone)]
struct Shared {
    observer: Arc<Observer>,
    metrics: PrometheusHandle,
}

/// Serves the HTTP port on `listener` until `stop` fires (or is dropped).
pub(crate) fn serve(
    listener: TcpListener,
    observer: Arc<Observer>,
    metrics: PrometheusHandle,
    stop: oneshot::Receiver<()>,
) -> JoinHandle<()> {
    let app = Router::new()
        .route("/metrics", get(render))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(Shared { observer, metrics });
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.await;
            })
            .await;
        if let Err(err) = served {
            tracing::warn!(%err, "the HTTP port (metrics, health) stopped");
        }
    })
}

async fn render(State(shared): State<Shared>) -> String {
    shared.metrics.render()
}

async fn livez(State(shared): State<Shared>) -> (StatusCode, String) {
    answer(shared.observer.live())
}

async fn readyz(State(shared): State<Shared>) -> (StatusCode, String) {
    answer(shared.observer.ready())
}

fn answer(decision: Result<String, String>) -> (StatusCode, String) {
    match decision {
        Ok(what) => (StatusCode::OK, format!("ok: {what}\n")),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("not ok: {why}\n")),
    }
}
