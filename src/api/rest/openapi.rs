//! The OpenAPI 3.1 document of `/api/v1`, generated from the handlers' `#[utoipa::path]`
//! attributes and the model's schemas, and rendered once.

use std::sync::OnceLock;

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use axum::response::{IntoResponse, Response};

use super::error::{ApiError, Errors};
use super::params::Args;
use super::{handlers, status};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Waypoint read API",
        description = "Farcaster data from a Snapchain hub and its PostgreSQL replica. Lists are \
            paged with `limit` (1 to 1000, default 25) and the opaque `next_cursor` of the previous \
            page. Errors are `{\"error\": {\"code\", \"message\"}}`."
    ),
    paths(
        handlers::user,
        handlers::user_by_username,
        handlers::verifications,
        handlers::verification,
        handlers::cast,
        handlers::casts_by_fid,
        handlers::casts_by_mention,
        handlers::casts_by_parent,
        handlers::casts_by_parent_url,
        handlers::casts_search,
        handlers::conversation,
        handlers::reactions_by_fid,
        handlers::reactions_by_target_cast,
        handlers::reactions_by_target_url,
        handlers::links_by_fid,
        handlers::links_by_target,
        handlers::link_compact_state,
        handlers::username_proofs,
        handlers::username_proof,
        handlers::onchain_events,
        handlers::following_feed,
        status::sync_status,
        serve,
    ),
    components(schemas(super::error::ErrorBody, super::error::ErrorDetail)),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

/// Declares the optional bearer token (`rest.auth_token`).
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        // Needed only when the server has a token; an empty requirement makes it optional.
        openapi.security = Some(vec![
            utoipa::openapi::security::SecurityRequirement::new::<_, _, &str>("bearer", []),
            utoipa::openapi::security::SecurityRequirement::default(),
        ]);
    }
}

/// The document as JSON.
pub fn document() -> &'static str {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        ApiDoc::openapi()
            .to_json()
            .unwrap_or_else(|error| format!("{{\"error\": \"cannot render: {error}\"}}"))
    })
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document of this API", content_type = "application/json", body = Object), Errors))]
pub async fn serve(args: Args) -> Result<Response, ApiError> {
    args.only(&[])?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        document(),
    )
        .into_response())
}
