//! The health actor: owns the HTTP server on the health port (`health.port`, `PORT`).
//!
//! - `GET /health`: liveness; 200 while the tree runs, 503 once shutdown began or the tree
//!   is gone.
//! - `GET /ready`: JSON with database, Redis and hub reachability (as this process needs them),
//!   the tree's status, each shard's cursor and backfill flag, and the backfill's progress
//!   where backfill workers run; 503 when not ready.
//! - `GET /metrics`: Prometheus text exposition.
//! - `GET /admin/tree`, `POST /admin/actors/{path}/restart`: need
//!   `Authorization: Bearer <health.admin_token>`; disabled (404) without a token.
//!
//! The server runs as a task the actor owns, as every server here does (`api::server`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State as AxumState};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use waypoint_actors::{Actor, ActorError, Context, NodeStatus};

use super::server::{Msg, Served};
use crate::runtime::Runtime;

/// Longest a dependency check may take before it counts as down.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// This server's own path in the tree.
const HEALTH_PATH: &str = "root/api/health";
/// How long `POST /admin/actors/.../restart` waits for the restart before answering 202.
const ADMIN_RESTART_WAIT: Duration = Duration::from_secs(10);

/// The health server actor.
pub struct HealthServer {
    pub runtime: Runtime,
}

impl Actor for HealthServer {
    type Msg = Msg;
    type State = Served;
    type Args = ();

    async fn init(&self, ctx: &Context<Msg>, _args: ()) -> Result<Served, ActorError> {
        let config = self.runtime.config();
        let addr = SocketAddr::new(config.health.bind_address, config.health.port);
        Served::start(ctx, "health", addr, |_| router(self.runtime.clone())).await
    }

    async fn handle(
        &self,
        _ctx: &Context<Msg>,
        msg: Msg,
        _state: &mut Served,
    ) -> Result<(), ActorError> {
        msg.into_crash()
    }

    async fn stopping(&self, _ctx: &Context<Msg>, state: &mut Served) -> Result<(), ActorError> {
        state.stop().await;
        Ok(())
    }
}

/// The routes of the health port.
pub fn router(runtime: Runtime) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/admin/tree", get(admin_tree))
        .route("/admin/actors/{*path}", post(admin_restart))
        .with_state(runtime)
}

async fn health(AxumState(runtime): AxumState<Runtime>) -> Response {
    let running = runtime.tree().is_some_and(|tree| tree.is_running());
    if runtime.is_shutting_down() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "shutting_down"})),
        )
            .into_response()
    } else if !running {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "not_running"})),
        )
            .into_response()
    } else {
        (StatusCode::OK, axum::Json(json!({"status": "ok"}))).into_response()
    }
}

async fn ready(AxumState(runtime): AxumState<Runtime>) -> Response {
    let (body, is_ready) = readiness(&runtime).await;
    let status = if is_ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// The readiness report and whether it means ready.
pub async fn readiness(runtime: &Runtime) -> (Value, bool) {
    let mut checks = serde_json::Map::new();
    let mut ready = !runtime.is_shutting_down();

    if let Some(pg) = runtime.pg() {
        let check = timed(async { pg.ping().await.map_err(|error| error.to_string()) }).await;
        ready &= check["ok"] == true;
        checks.insert("database".into(), check);
    }
    let redis = runtime.redis();
    let check = timed(async { redis.ping().await.map_err(|error| error.to_string()) }).await;
    ready &= check["ok"] == true;
    checks.insert("redis".into(), check);

    if runtime.produces() {
        let hub = runtime.hub_health();
        ready &= hub.reachable;
        checks.insert(
            "hub".into(),
            json!({
                "ok": hub.reachable,
                "error": hub.error,
                "version": hub.version,
                "checked_seconds_ago": hub.checked_at.and_then(|at| at.elapsed().ok()).map(|age| age.as_secs()),
            }),
        );
    }

    let tree = match runtime.tree() {
        Some(tree) => {
            let snapshot = tree.snapshot();
            let unhealthy: Vec<Value> = snapshot
                .nodes()
                .into_iter()
                .filter(|node| node.status != NodeStatus::Running)
                .map(|node| {
                    json!({
                        "path": node.path,
                        "status": node.status,
                        "last_failure": node.last_failure,
                    })
                })
                .collect();
            let running = tree.is_running();
            ready &= running;
            // A producing process is ready once its subscribers run (the produce subtree is
            // added after the hub's shards are known).
            if runtime.produces() {
                let producing = snapshot
                    .find(crate::supervision::PRODUCE)
                    .is_some_and(|node| node.status == NodeStatus::Running);
                ready &= producing;
                checks.insert(
                    "producer".into(),
                    json!({"ok": producing, "shards": runtime.shards().len()}),
                );
            }
            json!({"ok": running, "status": snapshot.status, "not_running": unhealthy})
        }
        None => {
            ready = false;
            json!({"ok": false, "status": "starting"})
        }
    };
    checks.insert("tree".into(), tree);

    if runtime.produces() {
        forget_cleared_markers(runtime).await;
    }
    let shards: serde_json::Map<String, Value> = runtime
        .shards()
        .into_iter()
        .map(|(shard, health)| (shard.to_string(), json!(health)))
        .collect();
    let mut body = json!({
        "ready": ready,
        "shutting_down": runtime.is_shutting_down(),
        "role": runtime.plan().name,
        "checks": checks,
        "shards": shards,
    });
    // A backfill running is not a reason to be unready: the live path serves meanwhile.
    if runtime.backfills() {
        body["backfill"] = json!(runtime.backfill_status());
    }
    (body, ready)
}

/// A backfill (maybe in another process) clears a shard's retention marker once it worked it
/// off: stop reporting the shard as needing one.
async fn forget_cleared_markers(runtime: &Runtime) {
    let redis = runtime.redis();
    for (shard, health) in runtime.shards() {
        if health.backfill_needed.is_none() {
            continue;
        }
        let cleared = tokio::time::timeout(CHECK_TIMEOUT, redis.backfill_needed(shard))
            .await
            .is_ok_and(|marker| matches!(marker, Ok(None)));
        if cleared {
            runtime.update_shard(shard, |health| health.backfill_needed = None);
            metrics::gauge!(crate::metrics::HUB_BACKFILL_NEEDED, crate::metrics::LABEL_SHARD => shard.to_string())
                .set(0.0);
        }
    }
}

async fn timed(check: impl Future<Output = Result<(), String>>) -> Value {
    let started = Instant::now();
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(())) => json!({"ok": true, "latency_ms": started.elapsed().as_millis() as u64}),
        Ok(Err(error)) => json!({"ok": false, "error": error}),
        Err(_) => json!({"ok": false, "error": format!("no answer within {CHECK_TIMEOUT:?}")}),
    }
}

async fn metrics(AxumState(runtime): AxumState<Runtime>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        runtime.metrics().render(),
    )
        .into_response()
}

async fn admin_tree(AxumState(runtime): AxumState<Runtime>, headers: HeaderMap) -> Response {
    if let Some(denied) = deny(&runtime, &headers) {
        return denied;
    }
    match runtime.tree() {
        Some(tree) => axum::Json(tree.snapshot()).into_response(),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the tree is not started yet",
        ),
    }
}

async fn admin_restart(
    AxumState(runtime): AxumState<Runtime>,
    headers: HeaderMap,
    Path(path): Path<String>,
) -> Response {
    if let Some(denied) = deny(&runtime, &headers) {
        return denied;
    }
    let Some(actor) = path.strip_suffix("/restart") else {
        return error(
            StatusCode::NOT_FOUND,
            "use POST /admin/actors/<path>/restart, e.g. /admin/actors/root/persist/restart",
        );
    };
    let Some(tree) = runtime.tree().cloned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the tree is not started yet",
        );
    };
    let actor = actor.to_owned();
    if tree.snapshot().find(&actor).is_none() {
        return error(StatusCode::NOT_FOUND, &format!("no actor at {actor}"));
    }
    let restart = tokio::spawn({
        let actor = actor.clone();
        async move { tree.restart(&actor).await }
    });
    // Restarting this very server (or a subtree holding it) drains it, and a drain waits for
    // in-flight requests such as this one: answer at once and let the restart run on.
    let wait = if HEALTH_PATH.starts_with(&actor) {
        Duration::ZERO
    } else {
        ADMIN_RESTART_WAIT
    };
    match tokio::time::timeout(wait, restart).await {
        Ok(Ok(Ok(()))) => axum::Json(json!({"restarted": actor})).into_response(),
        Ok(Ok(Err(waypoint_actors::TreeError::NotFound(path)))) => {
            error(StatusCode::NOT_FOUND, &format!("no actor at {path}"))
        }
        Ok(Ok(Err(failure))) => error(StatusCode::INTERNAL_SERVER_ERROR, &failure.to_string()),
        Ok(Err(join)) => error(StatusCode::INTERNAL_SERVER_ERROR, &join.to_string()),
        Err(_) => (
            StatusCode::ACCEPTED,
            axum::Json(json!({"restarting": actor})),
        )
            .into_response(),
    }
}

/// The refusal for a request without the right bearer token (`None`: let it through). Admin
/// endpoints are disabled without a configured token.
fn deny(runtime: &Runtime, headers: &HeaderMap) -> Option<Response> {
    let config = runtime.config();
    let Some(expected) = config.health.admin_token.as_deref() else {
        return Some(error(
            StatusCode::NOT_FOUND,
            "admin endpoints are disabled: set health.admin_token (WAYPOINT_HEALTH__ADMIN_TOKEN)",
        ));
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    match presented {
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => None,
        Some(_) => Some(error(StatusCode::FORBIDDEN, "wrong admin token")),
        None => Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(json!({"error": "missing Authorization: Bearer <admin token>"})),
            )
                .into_response(),
        ),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({"error": message}))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
