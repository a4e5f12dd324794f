//! The REST actor: owns the HTTP server of the read API (`rest.bind_address:rest.port`, 8081),
//! `/api/v1` over the query layer ([`crate::query::DataContext`]).
//!
//! - Every route is a GET listed once in [`routes`]; the OpenAPI document
//!   (`/api/v1/openapi.json`, [`openapi`]) is generated from the same handlers.
//! - Bodies: `{"data": {...}, "source": "hub"|"database"}` for one item, `{"data": [...],
//!   "next_cursor": ..., "source": ...}` for a list; errors `{"error": {"code", "message"}}`
//!   ([`error`]): 400 naming the parameter, 401, 404 (unknown resource or route), 405 (not
//!   GET/HEAD), 429 with `Retry-After`, 503 (no source can answer, or the request deadline).
//! - Middleware ([`layers`]) from `[rest]`: bearer token, per-client-address rate limit (burst
//!   of twice the rate), CORS origins, gzip, request timeout; metrics by route template.
//!
//! The server runs as a task the actor owns, as every server here does (`api::server`).

pub mod error;
pub mod handlers;
pub mod layers;
pub mod openapi;
pub mod params;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderValue, Method, Uri, header};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{MethodRouter, get};
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use waypoint_actors::{Actor, ActorError, Context};

use crate::api::server::{Msg, Served};
use crate::config::RestConfig;
use crate::query::DataContext;
use crate::runtime::Runtime;
use error::ApiError;

/// How long browsers may cache a CORS preflight answer.
const CORS_MAX_AGE: Duration = Duration::from_secs(600);

/// What every handler reads.
#[derive(Clone)]
pub struct App {
    pub data: DataContext,
    /// The service around, for `sync/status` (None when serving without one).
    pub runtime: Option<Runtime>,
}

/// Every route of the API: the router serves exactly these, and the OpenAPI document must
/// list exactly these paths.
pub fn routes() -> Vec<(&'static str, MethodRouter<App>)> {
    vec![
        ("/api/v1/users/{fid}", get(handlers::user)),
        (
            "/api/v1/users/by-username/{name}",
            get(handlers::user_by_username),
        ),
        ("/api/v1/verifications/{fid}", get(handlers::verifications)),
        (
            "/api/v1/verifications/{fid}/{address}",
            get(handlers::verification),
        ),
        ("/api/v1/casts/{fid}/{hash}", get(handlers::cast)),
        ("/api/v1/casts/by-fid/{fid}", get(handlers::casts_by_fid)),
        (
            "/api/v1/casts/by-mention/{fid}",
            get(handlers::casts_by_mention),
        ),
        (
            "/api/v1/casts/by-parent/{fid}/{hash}",
            get(handlers::casts_by_parent),
        ),
        (
            "/api/v1/casts/by-parent-url",
            get(handlers::casts_by_parent_url),
        ),
        ("/api/v1/casts/search", get(handlers::casts_search)),
        (
            "/api/v1/conversations/{fid}/{hash}",
            get(handlers::conversation),
        ),
        (
            "/api/v1/reactions/by-fid/{fid}",
            get(handlers::reactions_by_fid),
        ),
        (
            "/api/v1/reactions/by-target-cast/{fid}/{hash}",
            get(handlers::reactions_by_target_cast),
        ),
        (
            "/api/v1/reactions/by-target-url",
            get(handlers::reactions_by_target_url),
        ),
        ("/api/v1/links/by-fid/{fid}", get(handlers::links_by_fid)),
        (
            "/api/v1/links/by-target/{fid}",
            get(handlers::links_by_target),
        ),
        (
            "/api/v1/links/compact-state/{fid}",
            get(handlers::link_compact_state),
        ),
        (
            "/api/v1/username-proofs/{fid}",
            get(handlers::username_proofs),
        ),
        (
            "/api/v1/username-proofs/by-name/{name}",
            get(handlers::username_proof),
        ),
        (
            "/api/v1/onchain-events/{fid}",
            get(handlers::onchain_events),
        ),
        (
            "/api/v1/feed/following/{fid}",
            get(handlers::following_feed),
        ),
        ("/api/v1/sync/status", get(status::sync_status)),
        ("/api/v1/openapi.json", get(openapi::serve)),
    ]
}

/// The paths of [`routes`].
pub fn route_paths() -> Vec<&'static str> {
    routes().into_iter().map(|(path, _)| path).collect()
}

/// The REST API. Serve it with connect info (`into_make_service_with_connect_info::<SocketAddr>`)
/// so the rate limit can tell clients apart; without it every client shares one bucket.
pub fn router(data: DataContext, config: &RestConfig, runtime: Option<Runtime>) -> Router {
    let app = App { data, runtime };
    let mut router = Router::new();
    for (path, method_router) in routes() {
        router = router.route(path, method_router);
    }
    // Layers run after routing (so the matched route is known); the last added runs first.
    let mut router = router
        .fallback(no_route)
        .with_state(app)
        .layer(from_fn_with_state(
            Duration::from_secs(config.request_timeout_seconds.max(1)),
            layers::deadline,
        ));
    if let Some(token) = config.auth_token.as_deref() {
        router = router.layer(from_fn_with_state(
            Arc::new(layers::BearerToken::new(token)),
            layers::require_token,
        ));
    }
    if let Some(limiter) = layers::RateLimiter::new(config.rate_limit_per_second) {
        router = router.layer(from_fn_with_state(Arc::new(limiter), layers::rate_limit));
    }
    router = router.layer(from_fn(layers::read_only));
    if let Some(cors) = cors(&config.cors_origins) {
        router = router.layer(cors);
    }
    if config.compression {
        router = router.layer(CompressionLayer::new());
    }
    router.layer(from_fn(layers::record_metrics))
}

/// The CORS layer for `rest.cors_origins` (none for an empty list).
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        // The config check already refused values that are not origins.
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::HEAD])
            .allow_headers([header::AUTHORIZATION, header::ACCEPT, header::CONTENT_TYPE])
            .expose_headers([header::RETRY_AFTER])
            .max_age(CORS_MAX_AGE),
    )
}

async fn no_route(uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::NoRoute(format!(
        "no route {path:?}; the routes are listed in /api/v1/openapi.json"
    ))
}

/// The REST server actor.
pub struct RestServer {
    pub runtime: Runtime,
    pub data: DataContext,
}

impl Actor for RestServer {
    type Msg = Msg;
    type State = Served;
    type Args = ();

    async fn init(&self, ctx: &Context<Msg>, _args: ()) -> Result<Served, ActorError> {
        let config = self.runtime.config();
        let addr = SocketAddr::new(config.rest.bind_address, config.rest.port);
        Served::start(ctx, "rest", addr, |_| {
            router(self.data.clone(), &config.rest, Some(self.runtime.clone()))
        })
        .await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_lists_exactly_the_routes() {
        let document: serde_json::Value =
            serde_json::from_str(openapi::document()).expect("the document is JSON");
        assert!(
            document["openapi"]
                .as_str()
                .is_some_and(|version| version.starts_with("3.1"))
        );
        let mut documented: Vec<&str> = document["paths"]
            .as_object()
            .expect("paths")
            .keys()
            .map(String::as_str)
            .collect();
        let mut served = route_paths();
        documented.sort_unstable();
        served.sort_unstable();
        assert_eq!(documented, served);
    }
}
