//! The middleware around every `/api/v1` route (and the unknown-route fallback), outermost
//! first: metrics by matched route, compression, CORS, the read-only guard, the per-client
//! rate limit, the bearer token, and the request deadline. All refusals are [`ApiError`]s.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::ApiError;
use crate::metrics::{API_REQUEST_DURATION_SECONDS, API_REQUESTS_TOTAL};

/// Label: the matched route template (`/api/v1/casts/{fid}/{hash}`), or `unmatched`.
const LABEL_ROUTE: &str = "route";
/// Label: the HTTP status code of the answer.
const LABEL_STATUS: &str = "status";
/// The route label of requests no route matched (bounded, unlike raw paths).
const UNMATCHED_ROUTE: &str = "unmatched";
/// How often idle clients' buckets are dropped from the rate limiter.
const RATE_LIMIT_SWEEP_INTERVAL: Duration = Duration::from_secs(10);

/// Counts each request by its route template and status, and times it.
pub async fn record_metrics(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| UNMATCHED_ROUTE.to_owned());
    let started = Instant::now();
    let response = next.run(request).await;
    metrics::counter!(
        API_REQUESTS_TOTAL,
        LABEL_ROUTE => route.clone(),
        LABEL_STATUS => response.status().as_u16().to_string()
    )
    .increment(1);
    metrics::histogram!(API_REQUEST_DURATION_SECONDS, LABEL_ROUTE => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// Read-only: GET and HEAD only (CORS preflights are answered before this).
pub async fn read_only(request: Request, next: Next) -> Response {
    if request.method() == Method::GET || request.method() == Method::HEAD {
        next.run(request).await
    } else {
        ApiError::MethodNotAllowed(format!(
            "{} is not allowed: this API is read-only (GET, HEAD)",
            request.method()
        ))
        .into_response()
    }
}

/// The configured bearer token, kept as a digest so comparing takes the same time whatever
/// the presented token is.
#[derive(Clone)]
pub struct BearerToken {
    digest: [u8; 32],
}

impl BearerToken {
    pub fn new(token: &str) -> BearerToken {
        BearerToken {
            digest: Sha256::digest(token.as_bytes()).into(),
        }
    }

    /// Whether `presented` is the token, in constant time.
    pub fn matches(&self, presented: &str) -> bool {
        let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        presented
            .iter()
            .zip(self.digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// Lets through requests with `Authorization: Bearer <rest.auth_token>`.
pub async fn require_token(
    State(token): State<Arc<BearerToken>>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match presented {
        Some(presented) if token.matches(presented) => next.run(request).await,
        Some(_) => ApiError::Unauthorized("wrong bearer token".into()).into_response(),
        None => ApiError::Unauthorized(
            "missing Authorization: Bearer <token> (rest.auth_token is set)".into(),
        )
        .into_response(),
    }
}

/// Answers 503 when a request takes longer than the deadline.
pub async fn deadline(State(limit): State<Duration>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout(limit.as_secs()).into_response(),
    }
}

/// Refuses clients over their rate.
pub async fn rate_limit(
    State(limiter): State<Arc<RateLimiter>>,
    request: Request,
    next: Next,
) -> Response {
    // The peer address: forwarded-for headers are not trusted (any client can send one).
    let client = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    match limiter.check(client, Instant::now()) {
        Ok(()) => next.run(request).await,
        Err(retry_after_seconds) => ApiError::RateLimited {
            retry_after_seconds,
        }
        .into_response(),
    }
}

/// Token buckets per client address: `rate` tokens a second, at most `2 × rate` saved up.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    state: Mutex<Buckets>,
}

struct Buckets {
    clients: HashMap<IpAddr, Bucket>,
    last_sweep: Instant,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl RateLimiter {
    /// A limiter of `per_second` requests per client; `None` for 0 (no limit).
    pub fn new(per_second: u32) -> Option<RateLimiter> {
        (per_second > 0).then(|| RateLimiter {
            rate: f64::from(per_second),
            burst: 2.0 * f64::from(per_second),
            state: Mutex::new(Buckets {
                clients: HashMap::new(),
                last_sweep: Instant::now(),
            }),
        })
    }

    /// Takes a token for `client`, or says in how many seconds one will be there.
    pub fn check(&self, client: IpAddr, now: Instant) -> Result<(), u64> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if now.saturating_duration_since(state.last_sweep) >= RATE_LIMIT_SWEEP_INTERVAL {
            // A bucket that has filled up again is the same as no bucket.
            let refill = Duration::from_secs_f64(self.burst / self.rate);
            state
                .clients
                .retain(|_, bucket| now.saturating_duration_since(bucket.updated) < refill);
            state.last_sweep = now;
        }
        let bucket = state.clients.entry(client).or_insert(Bucket {
            tokens: self.burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.rate;
            Err((wait.ceil() as u64).max(1))
        }
    }

    #[cfg(test)]
    fn num_clients(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clients
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_value() {
        let token = BearerToken::new("secret");
        assert!(token.matches("secret"));
        assert!(!token.matches("secreT"));
        assert!(!token.matches(""));
    }

    #[test]
    fn a_client_gets_a_burst_then_its_rate() {
        let limiter = RateLimiter::new(5).unwrap();
        let client: IpAddr = "10.0.0.1".parse().unwrap();
        let start = Instant::now();
        for _ in 0..10 {
            assert!(limiter.check(client, start).is_ok());
        }
        assert_eq!(limiter.check(client, start), Err(1));
        // Another client has its own bucket.
        assert!(limiter.check("10.0.0.2".parse().unwrap(), start).is_ok());
        // A fifth of a second later, one more.
        let later = start + Duration::from_millis(200);
        assert!(limiter.check(client, later).is_ok());
        assert!(limiter.check(client, later).is_err());
        assert!(RateLimiter::new(0).is_none());
    }

    #[test]
    fn idle_clients_are_forgotten() {
        let limiter = RateLimiter::new(100).unwrap();
        let start = Instant::now();
        for last in 0..50u8 {
            let _ = limiter.check(IpAddr::V4(Ipv4Addr::new(10, 0, 0, last)), start);
        }
        assert_eq!(limiter.num_clients(), 50);
        let later = start + RATE_LIMIT_SWEEP_INTERVAL + Duration::from_secs(1);
        let _ = limiter.check("10.1.0.1".parse().unwrap(), later);
        assert_eq!(limiter.num_clients(), 1);
    }
}
