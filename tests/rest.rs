//! The REST API (`/api/v1`) over real HTTP: the router served on a free port, over a database
//! filled through the streaming path from a small dev hub, checked against the hub's dump
//! (`devhub --dump-state`): every endpoint's items, pagination, not-found and invalid input,
//! multi-byte and hostile text; plus the token, the rate limit, CORS, compression, the
//! read-only guard, 503 without sources, and the OpenAPI document against the routes served.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use common::harness::{self, devhub, small_hub, wait_converged};
use common::{TestDb, TestRedis};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waypoint::api::rest;
use waypoint::cli::Role;
use waypoint::config::RestConfig;
use waypoint::query::cursor::{Cursor, Position};
use waypoint::query::db::DbReader;
use waypoint::query::{Breaker, DataContext, SourcePolicy};
use waypoint::replica::ReplicaState;
use waypoint::runtime::Runtime;
use waypoint::service::Service;

const CONVERGE: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------------
// A small HTTP/1.1 client: status, headers and body bytes, nothing hidden.

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|error| {
            panic!(
                "not JSON ({error}), status {}: {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The error's code and message, checking the error shape.
    fn error(&self) -> (String, String) {
        let body = self.json();
        let code = body["error"]["code"]
            .as_str()
            .expect("error.code")
            .to_owned();
        let message = body["error"]["message"]
            .as_str()
            .expect("error.message")
            .to_owned();
        (code, message)
    }
}

async fn request(method: &str, port: u16, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
        .await
        .expect("an answer in time")
        .expect("read");
    let split = raw
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .expect("a head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(name, value)| {
        name.eq_ignore_ascii_case("transfer-encoding") && value.contains("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = rest.windows(2).position(|window| window == b"\r\n") {
        let size = std::str::from_utf8(&rest[..end])
            .ok()
            .and_then(|size| usize::from_str_radix(size.trim(), 16).ok())
            .expect("a chunk size");
        if size == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&rest[start..start + size]);
        rest = &rest[start + size + 2..];
    }
    out
}

async fn get(port: u16, path: &str) -> Reply {
    request("GET", port, path, &[]).await
}

/// GETs and expects 200 with JSON.
async fn ok(port: u16, path: &str) -> Value {
    let reply = get(port, path).await;
    assert_eq!(
        reply.status,
        200,
        "GET {path}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    reply.json()
}

/// GETs and expects 400 naming `param`.
async fn bad(port: u16, path: &str, param: &str) {
    let reply = get(port, path).await;
    assert_eq!(reply.status, 400, "GET {path}");
    let (code, message) = reply.error();
    assert_eq!(code, "invalid_parameter", "GET {path}");
    assert!(
        message.starts_with(&format!("{param}: ")),
        "GET {path}: {message}"
    );
}

/// GETs and expects a 404 JSON error.
async fn not_found(port: u16, path: &str) -> String {
    let reply = get(port, path).await;
    assert_eq!(
        reply.status,
        404,
        "GET {path}: {}",
        String::from_utf8_lossy(&reply.body)
    );
    let (code, message) = reply.error();
    assert_eq!(code, "not_found");
    message
}

/// Walks a list with `limit=2` to its end; every item once.
async fn walk(port: u16, path: &str, key: impl Fn(&Value) -> String) -> Vec<Value> {
    let separator = if path.contains('?') { '&' } else { '?' };
    let mut items = Vec::new();
    let mut seen = BTreeSet::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10_000 {
        let page_path = match &cursor {
            Some(cursor) => format!("{path}{separator}limit=2&cursor={cursor}"),
            None => format!("{path}{separator}limit=2"),
        };
        let body = ok(port, &page_path).await;
        assert_eq!(body["source"], "database", "{page_path}");
        let page = body["data"].as_array().expect("a list").clone();
        assert!(page.len() <= 2, "{page_path}: {} items", page.len());
        for item in page {
            assert!(seen.insert(key(&item)), "{path}: {item} twice");
            items.push(item);
        }
        match body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return items,
        }
    }
    panic!("{path}: no end to the pages");
}

fn hash_of(item: &Value) -> String {
    item["hash"].as_str().expect("hash").to_owned()
}

fn hashes(items: &[Value]) -> BTreeSet<String> {
    items.iter().map(hash_of).collect()
}

fn assert_newest_first(path: &str, items: &[Value]) {
    let times: Vec<u64> = items
        .iter()
        .map(|item| item["timestamp"].as_u64().expect("timestamp"))
        .collect();
    assert!(
        times.windows(2).all(|pair| pair[0] >= pair[1]),
        "{path}: not newest first: {times:?}"
    );
}

fn encode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}

// ---------------------------------------------------------------------------------------------
// Serving.

/// Serves the REST router on a free port (with connect info, as the server does).
async fn serve(data: DataContext, config: RestConfig, runtime: Option<Runtime>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let port = listener.local_addr().expect("address").port();
    let app = rest::router(data, &config, runtime);
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await;
    });
    port
}

fn breaker() -> Breaker {
    Breaker::new(3, Duration::from_secs(1), Duration::from_secs(5))
}

/// A query layer with no source at all: every data query is unavailable.
fn no_sources() -> DataContext {
    DataContext::new(SourcePolicy::DbOnly, None, None, breaker())
}

fn open_config() -> RestConfig {
    RestConfig {
        rate_limit_per_second: 0,
        ..RestConfig::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Input, errors and middleware: no data needed.

#[tokio::test]
async fn bad_input_gets_a_json_400_naming_the_parameter() {
    let port = serve(no_sources(), open_config(), None).await;
    let hash = "ab".repeat(20);
    for (path, param) in [
        ("/api/v1/users/abc".to_owned(), "fid"),
        ("/api/v1/users/0".to_owned(), "fid"),
        ("/api/v1/users/-3".to_owned(), "fid"),
        ("/api/v1/users/99999999999999999999999".to_owned(), "fid"),
        ("/api/v1/casts/1/zz".to_owned(), "hash"),
        (format!("/api/v1/casts/1/{hash}ab"), "hash"),
        (format!("/api/v1/casts/x/{hash}"), "fid"),
        ("/api/v1/casts/by-fid/1?limit=0".to_owned(), "limit"),
        ("/api/v1/casts/by-fid/1?limit=5000".to_owned(), "limit"),
        ("/api/v1/casts/by-fid/1?limit=two".to_owned(), "limit"),
        ("/api/v1/casts/by-fid/1?cursor=garbage".to_owned(), "cursor"),
        (
            "/api/v1/casts/by-fid/1?start_time=soon".to_owned(),
            "start_time",
        ),
        (
            "/api/v1/casts/by-fid/1?start_time=20&end_time=10".to_owned(),
            "end_time",
        ),
        ("/api/v1/casts/by-fid/1?limt=2".to_owned(), "limt"),
        ("/api/v1/casts/by-fid/1?limit=2&limit=3".to_owned(), "limit"),
        ("/api/v1/casts/search?q=".to_owned(), "q"),
        ("/api/v1/casts/search?q=%20%20".to_owned(), "q"),
        ("/api/v1/casts/search".to_owned(), "q"),
        (format!("/api/v1/casts/search?q={}", "a".repeat(257)), "q"),
        ("/api/v1/casts/by-parent-url".to_owned(), "url"),
        ("/api/v1/casts/by-parent-url?url=".to_owned(), "url"),
        (
            "/api/v1/reactions/by-fid/1?reaction_type=love".to_owned(),
            "reaction_type",
        ),
        (
            "/api/v1/links/by-fid/1?link_type=much_too_long".to_owned(),
            "link_type",
        ),
        (
            "/api/v1/onchain-events/1?event_type=party".to_owned(),
            "event_type",
        ),
        (
            format!("/api/v1/conversations/1/{hash}?max_depth=11"),
            "max_depth",
        ),
        (
            format!("/api/v1/conversations/1/{hash}?recursive=maybe"),
            "recursive",
        ),
        ("/api/v1/verifications/1/0x1234".to_owned(), "address"),
        ("/api/v1/users/by-username/%FF%FE".to_owned(), "name"),
        ("/api/v1/users/by-username/a%20b".to_owned(), "name"),
        (
            "/api/v1/username-proofs/by-name/x'%20OR%201=1".to_owned(),
            "name",
        ),
        ("/api/v1/sync/status?verbose=1".to_owned(), "verbose"),
    ] {
        bad(port, &path, param).await;
    }
}

#[tokio::test]
async fn unknown_routes_other_methods_and_no_sources_are_json_errors() {
    let port = serve(no_sources(), open_config(), None).await;
    for path in [
        "/api/v1/nope",
        "/api/v1/casts/by-fid",
        "/",
        "/api/v2/users/1",
        "/api/v1/users/1/extra",
    ] {
        let message = not_found(port, path).await;
        assert!(message.starts_with("no route"), "{path}: {message}");
    }
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let reply = request(method, port, "/api/v1/users/1", &[]).await;
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.error().0, "method_not_allowed");
        assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    }
    // No source can answer: 503, never 500.
    let hash = "ab".repeat(20);
    for path in [
        "/api/v1/users/1".to_owned(),
        format!("/api/v1/casts/1/{hash}"),
        "/api/v1/casts/search?q=hello".to_owned(),
        "/api/v1/feed/following/1".to_owned(),
        "/api/v1/casts/search?q=%FF".to_owned(),
    ] {
        let reply = get(port, &path).await;
        assert_eq!(reply.status, 503, "{path}");
        let (code, message) = reply.error();
        assert_eq!(code, "unavailable");
        assert!(message.contains("no source"), "{message}");
    }
    // sync/status answers what it can without a service.
    let status = ok(port, "/api/v1/sync/status").await;
    assert_eq!(status["data"]["query"]["source_policy"], "db-only");
    assert_eq!(status["data"]["query"]["hub_circuit"], "closed");
    // HEAD is a GET without the body.
    let reply = request("HEAD", port, "/api/v1/sync/status", &[]).await;
    assert_eq!(reply.status, 200);
    assert!(reply.body.is_empty());
}

/// A request that outlasts `rest.request_timeout_seconds` (the database is stuck behind a lock
/// another session holds) is a JSON 503 `timeout` at that deadline, and the same request
/// answers again once the database does.
#[tokio::test]
async fn a_request_over_the_deadline_is_a_503_timeout() {
    let db = TestDb::new().await;
    let pg = harness::pool(&db).await;
    waypoint::store::migrate(&pg).await.expect("migrate");
    let data = DataContext::new(
        SourcePolicy::DbOnly,
        None,
        Some(DbReader { pg: pg.clone() }),
        breaker(),
    );
    let config = RestConfig {
        request_timeout_seconds: 1,
        ..open_config()
    };
    let port = serve(data, config, None).await;
    let path = "/api/v1/casts/by-fid/1";
    assert_eq!(get(port, path).await.status, 200);

    let mut locker = pg.get().await.expect("a connection");
    let lock = locker.transaction().await.expect("begin");
    lock.batch_execute("LOCK TABLE casts IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock casts");
    let started = std::time::Instant::now();
    let reply = get(port, path).await;
    let waited = started.elapsed();
    assert_eq!(reply.status, 503);
    let (code, message) = reply.error();
    assert_eq!(code, "timeout");
    assert!(message.contains("longer than 1 s"), "{message}");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "answered after {waited:?}"
    );
    lock.rollback().await.expect("release the lock");

    assert_eq!(get(port, path).await.status, 200);
    drop(locker);
    pg.close();
    db.cleanup().await;
}

#[tokio::test]
async fn a_configured_token_is_required() {
    let config = RestConfig {
        auth_token: Some("s3cret-token".into()),
        ..open_config()
    };
    let port = serve(no_sources(), config, None).await;
    for headers in [
        vec![],
        vec![("Authorization", "Bearer wrong")],
        vec![("Authorization", "Basic czNjcmV0LXRva2Vu")],
        vec![("Authorization", "Bearer s3cret-tokenX")],
    ] {
        let reply = request("GET", port, "/api/v1/sync/status", &headers).await;
        assert_eq!(reply.status, 401, "{headers:?}");
        assert_eq!(reply.error().0, "unauthorized");
        assert!(
            reply
                .header("www-authenticate")
                .is_some_and(|value| value.starts_with("Bearer")),
            "{:?}",
            reply.headers
        );
    }
    // Unknown routes are behind the token too.
    let reply = get(port, "/api/v1/nope").await;
    assert_eq!(reply.status, 401);
    let authorized = [("Authorization", "Bearer s3cret-token")];
    let reply = request("GET", port, "/api/v1/sync/status", &authorized).await;
    assert_eq!(reply.status, 200);
    let reply = request("GET", port, "/api/v1/openapi.json", &authorized).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn over_the_rate_limit_is_429_with_retry_after() {
    let config = RestConfig {
        rate_limit_per_second: 1,
        ..RestConfig::default()
    };
    let port = serve(no_sources(), config, None).await;
    // A burst of twice the rate, then refused.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get(port, "/api/v1/sync/status").await);
    }
    assert_eq!(statuses[0].status, 200);
    assert_eq!(statuses[1].status, 200);
    let refused = statuses.last().expect("a reply");
    assert_eq!(refused.status, 429);
    assert_eq!(refused.error().0, "rate_limited");
    let retry_after: u64 = refused
        .header("retry-after")
        .and_then(|value| value.parse().ok())
        .expect("Retry-After seconds");
    assert!(retry_after >= 1);
    // The limit forgets after the wait.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(get(port, "/api/v1/sync/status").await.status, 200);
}

#[tokio::test]
async fn cors_and_compression_follow_the_config() {
    let config = RestConfig {
        cors_origins: vec!["https://app.example".into()],
        ..open_config()
    };
    let port = serve(no_sources(), config, None).await;
    let reply = request(
        "GET",
        port,
        "/api/v1/openapi.json",
        &[
            ("Origin", "https://app.example"),
            ("Accept-Encoding", "gzip"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(reply.header("content-encoding"), Some("gzip"));
    assert_eq!(&reply.body[..2], &[0x1f, 0x8b], "a gzip stream");
    let preflight = request(
        "OPTIONS",
        port,
        "/api/v1/users/1",
        &[
            ("Origin", "https://app.example"),
            ("Access-Control-Request-Method", "GET"),
            ("Access-Control-Request-Headers", "authorization"),
        ],
    )
    .await;
    assert!(preflight.status < 300, "preflight: {}", preflight.status);
    assert!(
        preflight
            .header("access-control-allow-methods")
            .is_some_and(|methods| methods.contains("GET"))
    );
    let other = request(
        "GET",
        port,
        "/api/v1/sync/status",
        &[("Origin", "https://evil.example")],
    )
    .await;
    assert_eq!(other.header("access-control-allow-origin"), None);

    // Defaults: no CORS headers; compression off when configured off.
    let config = RestConfig {
        compression: false,
        ..open_config()
    };
    let port = serve(no_sources(), config, None).await;
    let reply = request(
        "GET",
        port,
        "/api/v1/openapi.json",
        &[
            ("Origin", "https://app.example"),
            ("Accept-Encoding", "gzip"),
        ],
    )
    .await;
    assert_eq!(reply.header("access-control-allow-origin"), None);
    assert_eq!(reply.header("content-encoding"), None);
    reply.json();
}

/// A value for each path parameter, valid in form.
fn sample_path(template: &str) -> String {
    template
        .replace("{fid}", "7")
        .replace("{hash}", &"ab".repeat(20))
        .replace("{name}", "alice")
        .replace("{address}", &format!("0x{}", "cd".repeat(20)))
}

/// A value for each query parameter, valid in form.
fn sample_query(name: &str) -> String {
    let cursor = Cursor {
        hub_token: None,
        after: Some(Position {
            timestamp: 1,
            key: "00".into(),
        }),
    };
    match name {
        "limit" => "2".into(),
        "cursor" => cursor.encode(),
        "start_time" => "1".into(),
        "end_time" => "2".into(),
        "reaction_type" => "like".into(),
        "link_type" => "follow".into(),
        "event_type" => "signer".into(),
        "recursive" => "true".into(),
        "max_depth" => "2".into(),
        "url" => encode("https://example.com/a?b=c"),
        "q" => "hello".into(),
        other => panic!("no sample for parameter {other}"),
    }
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_what_is_served() {
    let port = serve(no_sources(), open_config(), None).await;
    let document = ok(port, "/api/v1/openapi.json").await;
    let version = document["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3.1."), "{version}");
    let paths = document["paths"].as_object().expect("paths");
    let documented: BTreeSet<&str> = paths.keys().map(String::as_str).collect();
    let served: BTreeSet<&str> = rest::route_paths().into_iter().collect();
    assert_eq!(documented, served);
    for expected in [
        "/api/v1/users/{fid}",
        "/api/v1/users/by-username/{name}",
        "/api/v1/verifications/{fid}",
        "/api/v1/verifications/{fid}/{address}",
        "/api/v1/casts/{fid}/{hash}",
        "/api/v1/casts/by-fid/{fid}",
        "/api/v1/casts/by-mention/{fid}",
        "/api/v1/casts/by-parent/{fid}/{hash}",
        "/api/v1/casts/by-parent-url",
        "/api/v1/casts/search",
        "/api/v1/conversations/{fid}/{hash}",
        "/api/v1/reactions/by-fid/{fid}",
        "/api/v1/reactions/by-target-cast/{fid}/{hash}",
        "/api/v1/reactions/by-target-url",
        "/api/v1/links/by-fid/{fid}",
        "/api/v1/links/by-target/{fid}",
        "/api/v1/links/compact-state/{fid}",
        "/api/v1/username-proofs/{fid}",
        "/api/v1/username-proofs/by-name/{name}",
        "/api/v1/onchain-events/{fid}",
        "/api/v1/feed/following/{fid}",
        "/api/v1/sync/status",
    ] {
        assert!(
            documented.contains(expected),
            "{expected} is not documented"
        );
    }

    for (template, item) in paths {
        let operations = item.as_object().expect("a path item");
        assert_eq!(
            operations.keys().collect::<Vec<_>>(),
            vec!["get"],
            "{template}: only GET"
        );
        let operation = &item["get"];
        let responses = operation["responses"].as_object().expect("responses");
        for status in ["200", "400", "401", "404", "429", "503"] {
            assert!(responses.contains_key(status), "{template}: no {status}");
        }
        // The error answers point at the error schema.
        let error_schema = &responses["400"]["content"]["application/json"]["schema"]["$ref"];
        assert_eq!(error_schema, "#/components/schemas/ErrorBody", "{template}");
        let parameters = operation["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut path_params = BTreeSet::new();
        let mut query = Vec::new();
        for parameter in &parameters {
            let name = parameter["name"].as_str().expect("parameter name");
            match parameter["in"].as_str() {
                Some("path") => {
                    path_params.insert(name.to_owned());
                }
                Some("query") => query.push(format!("{name}={}", sample_query(name))),
                other => panic!("{template}: parameter {name} in {other:?}"),
            }
        }
        let in_template: BTreeSet<String> = template
            .split('/')
            .filter_map(|segment| segment.strip_prefix('{')?.strip_suffix('}'))
            .map(str::to_owned)
            .collect();
        assert_eq!(path_params, in_template, "{template}: path parameters");
        // Every documented parameter is accepted: the answer is 200 or, with no source, 503.
        let path = format!("{}?{}", sample_path(template), query.join("&"));
        let reply = get(port, &path).await;
        assert!(
            reply.status == 200 || reply.status == 503,
            "GET {path}: {} {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
        // And nothing undocumented is.
        let path = format!("{}?undocumented=1", sample_path(template));
        bad(port, &path, "undocumented").await;
    }
    assert!(
        document["components"]["securitySchemes"]["bearer"].is_object(),
        "the bearer token is declared"
    );
    // Every schema reference resolves.
    let mut references = Vec::new();
    collect_references(&document, &mut references);
    assert!(!references.is_empty());
    for reference in references {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {reference}"));
        assert!(
            document["components"]["schemas"][name].is_object(),
            "{reference} does not resolve"
        );
    }
}

fn collect_references(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                match (key.as_str(), child) {
                    ("$ref", Value::String(reference)) => out.push(reference.clone()),
                    _ => collect_references(child, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| collect_references(item, out)),
        _ => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Data: a database filled from the dev hub, every endpoint against the dump.

/// The dump's live rows, by what the endpoints look up.
struct Expected {
    state: ReplicaState,
}

impl Expected {
    fn live_casts(&self) -> impl Iterator<Item = &waypoint::replica::CastRow> {
        self.state.casts.iter().filter(|cast| cast.live)
    }

    fn live_reactions(&self) -> impl Iterator<Item = &waypoint::replica::ReactionRow> {
        self.state.reactions.iter().filter(|reaction| reaction.live)
    }

    fn live_links(&self) -> impl Iterator<Item = &waypoint::replica::LinkRow> {
        self.state.links.iter().filter(|link| link.live)
    }

    /// The most common key (a well-populated example), the smallest among equals.
    fn busiest<K: Ord + Clone>(keys: impl Iterator<Item = K>) -> K {
        let mut counts: BTreeMap<K, usize> = BTreeMap::new();
        for key in keys {
            *counts.entry(key).or_default() += 1;
        }
        let most = counts.values().copied().max().expect("some rows");
        counts
            .into_iter()
            .find(|(_, count)| *count == most)
            .map(|(key, _)| key)
            .expect("some rows")
    }
}

#[tokio::test]
async fn every_endpoint_answers_what_the_hub_holds() {
    let hub = devhub(small_hub(41)).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = harness::env(&db, &redis, &hub.url(), &[]);
    let service = Service::start(Role::Both, harness::config(&env), None)
        .await
        .expect("service starts");
    let pg = harness::pool(&db).await;
    wait_converged(&hub, &pg, CONVERGE).await;
    let expected = Expected {
        state: hub.dump_state(),
    };
    let data = DataContext::new(
        SourcePolicy::DbOnly,
        None,
        Some(DbReader { pg: pg.clone() }),
        breaker(),
    );
    let port = serve(data, open_config(), Some(service.runtime().clone())).await;

    check_casts(port, &expected).await;
    check_reactions(port, &expected).await;
    check_links_and_feed(port, &expected).await;
    check_profiles_and_proofs(port, &expected).await;
    check_verifications(port, &expected).await;
    check_onchain_events(port, &expected).await;
    check_sync_status(port, &hub).await;

    let metrics = service.runtime().metrics().render();
    assert!(
        metrics.contains(
            "waypoint_api_requests_total{route=\"/api/v1/casts/by-fid/{fid}\",status=\"200\"}"
        ),
        "requests are counted by route template"
    );

    service.shutdown().await.expect("clean shutdown");
    pg.close();
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}

fn cast_matches(api: &Value, row: &waypoint::replica::CastRow) {
    assert_eq!(api["hash"], row.hash.as_str());
    assert_eq!(api["fid"], row.fid);
    assert_eq!(api["timestamp"], row.timestamp);
    // Multi-byte and awkward text (emoji, quotes, markup) comes back byte for byte.
    assert_eq!(api["text"], row.text.as_str(), "cast {}", row.hash);
    let mentions: Vec<u64> = api["mentions"]
        .as_array()
        .expect("mentions")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    assert_eq!(mentions, row.mentions);
    let positions: Vec<u64> = api["mentions_positions"]
        .as_array()
        .expect("positions")
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    let expected_positions: Vec<u64> = row
        .mentions_positions
        .iter()
        .map(|p| u64::from(*p))
        .collect();
    assert_eq!(positions, expected_positions);
    match (&row.parent_fid, &row.parent_hash, &row.parent_url) {
        (Some(fid), Some(hash), _) => {
            assert_eq!(api["parent"]["type"], "cast");
            assert_eq!(api["parent"]["fid"], *fid);
            assert_eq!(api["parent"]["hash"], hash.as_str());
        }
        (_, _, Some(url)) => {
            assert_eq!(api["parent"]["type"], "url");
            assert_eq!(api["parent"]["url"], url.as_str());
        }
        _ => assert!(api["parent"].is_null(), "{}", api["parent"]),
    }
    let embeds = api["embeds"].as_array().expect("embeds");
    assert_eq!(embeds.len(), row.embeds.len(), "embeds of {}", row.hash);
}

async fn check_casts(port: u16, expected: &Expected) {
    let by_hash: BTreeMap<&str, &waypoint::replica::CastRow> = expected
        .live_casts()
        .map(|cast| (cast.hash.as_str(), cast))
        .collect();

    // By fid, every page, newest first.
    let fid = Expected::busiest(expected.live_casts().map(|cast| cast.fid));
    let path = format!("/api/v1/casts/by-fid/{fid}");
    let items = walk(port, &path, hash_of).await;
    let wanted: BTreeSet<String> = expected
        .live_casts()
        .filter(|cast| cast.fid == fid)
        .map(|cast| cast.hash.clone())
        .collect();
    assert_eq!(hashes(&items), wanted, "{path}");
    assert_newest_first(&path, &items);
    for item in &items {
        cast_matches(item, by_hash[hash_of(item).as_str()]);
    }
    // The default page and a bigger one give the same order as the walk.
    let first = ok(port, &format!("{path}?limit=1000")).await;
    let first: Vec<String> = first["data"]
        .as_array()
        .expect("list")
        .iter()
        .map(hash_of)
        .collect();
    let walked: Vec<String> = items.iter().map(hash_of).collect();
    assert_eq!(first, walked, "{path}: pages in one order");

    // In a time window.
    let mut times: Vec<u64> = items
        .iter()
        .filter_map(|item| item["timestamp"].as_u64())
        .collect();
    times.sort_unstable();
    let (start, end) = (times[times.len() / 4], times[3 * times.len() / 4]);
    let window: BTreeSet<String> = expected
        .live_casts()
        .filter(|cast| cast.fid == fid && (start..=end).contains(&cast.timestamp))
        .map(|cast| cast.hash.clone())
        .collect();
    // The window is Unix seconds; the items carry Farcaster seconds.
    let unix = |farcaster: u64| farcaster + 1_609_459_200;
    let windowed = walk(
        port,
        &format!("{path}?start_time={}&end_time={}", unix(start), unix(end)),
        hash_of,
    )
    .await;
    assert_eq!(hashes(&windowed), window, "{path} in a window");

    // One cast, with and without 0x; a removed or unknown one is 404.
    let cast = by_hash[hash_of(&items[0]).as_str()];
    let body = ok(port, &format!("/api/v1/casts/{}/{}", cast.fid, cast.hash)).await;
    assert_eq!(body["source"], "database");
    cast_matches(&body["data"], cast);
    let body = ok(
        port,
        &format!("/api/v1/casts/{}/0x{}", cast.fid, cast.hash.to_uppercase()),
    )
    .await;
    cast_matches(&body["data"], cast);
    not_found(
        port,
        &format!("/api/v1/casts/{}/{}", cast.fid, "00".repeat(20)),
    )
    .await;
    if let Some(removed) = expected.state.casts.iter().find(|cast| !cast.live) {
        not_found(
            port,
            &format!("/api/v1/casts/{}/{}", removed.fid, removed.hash),
        )
        .await;
    }

    // Every cast with multi-byte or markup text round-trips.
    let awkward: Vec<&waypoint::replica::CastRow> = expected
        .live_casts()
        .filter(|cast| !cast.text.is_ascii() || cast.text.contains(['<', '"', '\'', '\\']))
        .take(20)
        .collect();
    assert!(!awkward.is_empty(), "the dev hub writes awkward text");
    for cast in awkward {
        let body = ok(port, &format!("/api/v1/casts/{}/{}", cast.fid, cast.hash)).await;
        cast_matches(&body["data"], cast);
    }

    // By mention.
    let mentioned = Expected::busiest(expected.live_casts().flat_map(|cast| cast.mentions.clone()));
    let path = format!("/api/v1/casts/by-mention/{mentioned}");
    let items = walk(port, &path, hash_of).await;
    let wanted: BTreeSet<String> = expected
        .live_casts()
        .filter(|cast| cast.mentions.contains(&mentioned))
        .map(|cast| cast.hash.clone())
        .collect();
    assert_eq!(hashes(&items), wanted, "{path}");
    assert_newest_first(&path, &items);

    // Replies to a cast.
    let parent_hash = Expected::busiest(
        expected
            .live_casts()
            .filter_map(|cast| Some((cast.parent_fid?, cast.parent_hash.clone()?))),
    );
    let path = format!(
        "/api/v1/casts/by-parent/{}/{}",
        parent_hash.0, parent_hash.1
    );
    let items = walk(port, &path, hash_of).await;
    let replies: BTreeSet<String> = expected
        .live_casts()
        .filter(|cast| cast.parent_hash.as_deref() == Some(parent_hash.1.as_str()))
        .map(|cast| cast.hash.clone())
        .collect();
    assert_eq!(hashes(&items), replies, "{path}");
    assert_newest_first(&path, &items);

    // The conversation of that parent, when it is live.
    if by_hash.contains_key(parent_hash.1.as_str()) {
        let path = format!(
            "/api/v1/conversations/{}/{}?limit=1000",
            parent_hash.0, parent_hash.1
        );
        let body = ok(port, &path).await;
        assert_eq!(body["data"]["cast"]["hash"], parent_hash.1.as_str());
        let direct: BTreeSet<String> = body["data"]["replies"]
            .as_array()
            .expect("replies")
            .iter()
            .map(|reply| hash_of(&reply["cast"]))
            .collect();
        assert_eq!(direct, replies, "{path}");
        assert!(
            body["data"]["participant_fids"]
                .as_array()
                .is_some_and(|fids| !fids.is_empty())
        );
    }
    not_found(
        port,
        &format!("/api/v1/conversations/1/{}", "00".repeat(20)),
    )
    .await;

    // Replies to a URL.
    let url = expected
        .live_casts()
        .filter_map(|cast| cast.parent_url.clone())
        .next()
        .expect("a cast under a URL");
    let path = format!("/api/v1/casts/by-parent-url?url={}", encode(&url));
    let items = walk(port, &path, hash_of).await;
    let wanted: BTreeSet<String> = expected
        .live_casts()
        .filter(|cast| cast.parent_url.as_deref() == Some(url.as_str()))
        .map(|cast| cast.hash.clone())
        .collect();
    assert_eq!(hashes(&items), wanted, "{path}");
    let nothing = ok(
        port,
        "/api/v1/casts/by-parent-url?url=https%3A%2F%2Fnowhere.example%2F%E2%9C%A8",
    )
    .await;
    assert_eq!(nothing["data"], serde_json::json!([]));
    assert!(nothing["next_cursor"].is_null());

    // Search: every answer is a live cast holding the word; hostile text is just text.
    let word = "lovelace";
    let word = if expected
        .live_casts()
        .any(|cast| cast.text.to_lowercase().contains(word))
    {
        word
    } else {
        "gm"
    };
    let items = walk(port, &format!("/api/v1/casts/search?q={word}"), hash_of).await;
    assert!(!items.is_empty(), "search for {word}");
    for item in &items {
        let cast = by_hash
            .get(hash_of(item).as_str())
            .unwrap_or_else(|| panic!("search found a cast that is not live: {item}"));
        assert!(
            cast.text.to_lowercase().contains(word),
            "{word}: {}",
            cast.text
        );
    }
    for hostile in [
        "'; DROP TABLE casts; --",
        "<script>alert(1)</script>",
        "🦀 日本語 ñ",
        "a & b | !c",
        "\\\"'",
    ] {
        let reply = get(port, &format!("/api/v1/casts/search?q={}", encode(hostile))).await;
        assert_eq!(
            reply.status,
            200,
            "{hostile}: {}",
            String::from_utf8_lossy(&reply.body)
        );
        assert!(reply.json()["data"].is_array());
    }
}

async fn check_reactions(port: u16, expected: &Expected) {
    let fid = Expected::busiest(expected.live_reactions().map(|reaction| reaction.fid));
    let path = format!("/api/v1/reactions/by-fid/{fid}");
    let items = walk(port, &path, hash_of).await;
    let wanted: BTreeSet<String> = expected
        .live_reactions()
        .filter(|reaction| reaction.fid == fid)
        .map(|reaction| reaction.hash.clone())
        .collect();
    assert_eq!(hashes(&items), wanted, "{path}");
    assert_newest_first(&path, &items);
    for (name, number) in [("like", 1), ("recast", 2)] {
        let wanted: BTreeSet<String> = expected
            .live_reactions()
            .filter(|reaction| reaction.fid == fid && reaction.reaction_type == number)
            .map(|reaction| reaction.hash.clone())
            .collect();
        for value in [name.to_owned(), number.to_string()] {
            let filtered = walk(port, &format!("{path}?reaction_type={value}"), hash_of).await;
            assert_eq!(hashes(&filtered), wanted, "{path} {value}");
            assert!(filtered.iter().all(|item| item["reaction_type"] == name));
        }
    }

    // To a cast.
    let (target_fid, target_hash) =
        Expected::busiest(expected.live_reactions().filter_map(|reaction| {
            Some((
                reaction.target_cast_fid?,
                reaction.target_cast_hash.clone()?,
            ))
        }));
    let path = format!("/api/v1/reactions/by-target-cast/{target_fid}/{target_hash}");
    let items = walk(port, &path, hash_of).await;
    let wanted: BTreeSet<String> = expected
        .live_reactions()
        .filter(|reaction| reaction.target_cast_hash.as_deref() == Some(target_hash.as_str()))
        .map(|reaction| reaction.hash.clone())
        .collect();
    assert_eq!(hashes(&items), wanted, "{path}");

    // To a URL.
    if let Some(url) = expected
        .live_reactions()
        .find_map(|reaction| reaction.target_url.clone())
    {
        let path = format!("/api/v1/reactions/by-target-url?url={}", encode(&url));
        let items = walk(port, &path, hash_of).await;
        let wanted: BTreeSet<String> = expected
            .live_reactions()
            .filter(|reaction| reaction.target_url.as_deref() == Some(url.as_str()))
            .map(|reaction| reaction.hash.clone())
            .collect();
        assert_eq!(hashes(&items), wanted, "{path}");
    }
}

async fn check_links_and_feed(port: u16, expected: &Expected) {
    let fid = Expected::busiest(expected.live_links().map(|link| link.fid));
    let path = format!("/api/v1/links/by-fid/{fid}");
    let items = walk(port, &path, hash_of).await;
    let wanted: BTreeSet<String> = expected
        .live_links()
        .filter(|link| link.fid == fid)
        .map(|link| link.hash.clone())
        .collect();
    assert_eq!(hashes(&items), wanted, "{path}");
    assert_newest_first(&path, &items);
    let follows = walk(port, &format!("{path}?link_type=follow"), hash_of).await;
    let wanted_follows: BTreeSet<String> = expected
        .live_links()
        .filter(|link| link.fid == fid && link.link_type == "follow")
        .map(|link| link.hash.clone())
        .collect();
    assert_eq!(hashes(&follows), wanted_follows);
    let any = walk(port, &format!("{path}?link_type=any"), hash_of).await;
    assert_eq!(hashes(&any), wanted);

    // Followers.
    let target = Expected::busiest(expected.live_links().map(|link| link.target_fid));
    let path = format!("/api/v1/links/by-target/{target}");
    let items = walk(port, &path, hash_of).await;
    let wanted: BTreeSet<String> = expected
        .live_links()
        .filter(|link| link.target_fid == target)
        .map(|link| link.hash.clone())
        .collect();
    assert_eq!(hashes(&items), wanted, "{path}");

    let body = ok(port, &format!("/api/v1/links/compact-state/{fid}")).await;
    assert!(body["data"].is_array());
    assert!(body["next_cursor"].is_null());

    // The following feed: the live casts of the accounts `fid` follows.
    let followed: BTreeSet<u64> = expected
        .live_links()
        .filter(|link| link.fid == fid && link.link_type == "follow")
        .map(|link| link.target_fid)
        .collect();
    let path = format!("/api/v1/feed/following/{fid}");
    let items = walk(port, &path, hash_of).await;
    let wanted: BTreeSet<String> = expected
        .live_casts()
        .filter(|cast| followed.contains(&cast.fid))
        .map(|cast| cast.hash.clone())
        .collect();
    assert_eq!(hashes(&items), wanted, "{path}");
    assert_newest_first(&path, &items);
}

async fn check_profiles_and_proofs(port: u16, expected: &Expected) {
    let fid = Expected::busiest(
        expected
            .state
            .user_data
            .iter()
            .filter(|row| row.live)
            .map(|row| row.fid),
    );
    let body = ok(port, &format!("/api/v1/users/{fid}")).await;
    assert_eq!(body["source"], "database");
    let profile = &body["data"];
    assert_eq!(profile["fid"], fid);
    let got: BTreeSet<(i64, String)> = profile["user_data"]
        .as_array()
        .expect("user_data")
        .iter()
        .map(|value| {
            (
                value["data_type"].as_i64().expect("type"),
                value["value"].as_str().expect("value").to_owned(),
            )
        })
        .collect();
    let wanted: BTreeSet<(i64, String)> = expected
        .state
        .user_data
        .iter()
        .filter(|row| row.live && row.fid == fid)
        .map(|row| (i64::from(row.user_data_type), row.value.clone()))
        .collect();
    assert_eq!(got, wanted, "user data of {fid}");
    let followers = expected
        .live_links()
        .filter(|link| link.target_fid == fid && link.link_type == "follow")
        .count();
    assert_eq!(profile["follower_count"], followers as u64);
    not_found(port, "/api/v1/users/999999").await;

    // Username proofs.
    let proof = expected
        .state
        .username_proofs
        .iter()
        .find(|proof| proof.live)
        .expect("a live username proof");
    let body = ok(port, &format!("/api/v1/username-proofs/{}", proof.fid)).await;
    let names: BTreeSet<String> = body["data"]
        .as_array()
        .expect("proofs")
        .iter()
        .map(|item| item["name"].as_str().expect("name").to_owned())
        .collect();
    let wanted: BTreeSet<String> = expected
        .state
        .username_proofs
        .iter()
        .filter(|row| row.live && row.fid == proof.fid)
        .map(|row| row.name.clone())
        .collect();
    assert_eq!(names, wanted);
    let body = ok(
        port,
        &format!("/api/v1/username-proofs/by-name/{}", encode(&proof.name)),
    )
    .await;
    assert_eq!(body["data"]["fid"], proof.fid);
    assert_eq!(body["data"]["name"], proof.name.as_str());
    not_found(port, "/api/v1/username-proofs/by-name/no-such-name-here").await;
    not_found(port, "/api/v1/username-proofs/by-name/robert');DROP").await;

    // A profile by username: the name's fid (case does not matter).
    let body = ok(
        port,
        &format!(
            "/api/v1/users/by-username/{}",
            encode(&proof.name.to_uppercase())
        ),
    )
    .await;
    assert_eq!(body["data"]["fid"], proof.fid);
    not_found(port, "/api/v1/users/by-username/no-such-name-here").await;
}

async fn check_verifications(port: u16, expected: &Expected) {
    let live: Vec<&waypoint::replica::VerificationRow> = expected
        .state
        .verifications
        .iter()
        .filter(|row| row.live)
        .collect();
    let fid = Expected::busiest(live.iter().map(|row| row.fid));
    let path = format!("/api/v1/verifications/{fid}");
    let items = walk(port, &path, hash_of).await;
    let wanted: BTreeSet<String> = live
        .iter()
        .filter(|row| row.fid == fid)
        .map(|row| row.hash.clone())
        .collect();
    assert_eq!(hashes(&items), wanted, "{path}");
    if let Some(ethereum) = live.iter().find(|row| row.protocol == 0) {
        let address = format!("0x{}", ethereum.address);
        let body = ok(
            port,
            &format!("/api/v1/verifications/{}/{address}", ethereum.fid),
        )
        .await;
        assert_eq!(body["data"]["hash"], ethereum.hash.as_str());
        assert_eq!(body["data"]["address"], address.as_str());
        // Any case of the hex.
        let upper = format!("0x{}", ethereum.address.to_uppercase());
        ok(
            port,
            &format!("/api/v1/verifications/{}/{upper}", ethereum.fid),
        )
        .await;
        not_found(
            port,
            &format!(
                "/api/v1/verifications/{}/0x{}",
                ethereum.fid,
                "00".repeat(20)
            ),
        )
        .await;
    }
}

async fn check_onchain_events(port: u16, expected: &Expected) {
    let fid = Expected::busiest(expected.state.onchain_events.iter().map(|row| row.fid));
    let key = |item: &Value| {
        format!(
            "{}:{}",
            item["transaction_hash"].as_str().expect("transaction_hash"),
            item["log_index"]
        )
    };
    let path = format!("/api/v1/onchain-events/{fid}");
    let items = walk(port, &path, key).await;
    let wanted: BTreeSet<String> = expected
        .state
        .onchain_events
        .iter()
        .filter(|row| row.fid == fid)
        .map(|row| format!("{}:{}", row.tx_hash, row.log_index))
        .collect();
    let got: BTreeSet<String> = items.iter().map(key).collect();
    assert_eq!(got, wanted, "{path}");
    for (name, number) in [("id_register", 3), ("signer", 1)] {
        let wanted: BTreeSet<String> = expected
            .state
            .onchain_events
            .iter()
            .filter(|row| row.fid == fid && row.event_type == number)
            .map(|row| format!("{}:{}", row.tx_hash, row.log_index))
            .collect();
        for value in [name.to_owned(), number.to_string()] {
            let items = walk(port, &format!("{path}?event_type={value}"), key).await;
            let got: BTreeSet<String> = items.iter().map(key).collect();
            assert_eq!(got, wanted, "{path} {value}");
        }
    }
}

async fn check_sync_status(port: u16, hub: &waypoint::devhub::DevHubHandle) {
    // Subscribers report their cursor when they flush it: wait for every shard's.
    let started = std::time::Instant::now();
    let body = loop {
        let body = ok(port, "/api/v1/sync/status").await;
        let reported = body["data"]["shards"].as_object().is_some_and(|shards| {
            shards.len() == hub.num_shards() as usize
                && shards.values().all(|facts| facts["cursor"].is_u64())
        });
        if reported || started.elapsed() > Duration::from_secs(20) {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let status = &body["data"];
    assert_eq!(status["query"]["source_policy"], "db-only");
    let shards = status["shards"].as_object().expect("shards");
    assert_eq!(shards.len(), hub.num_shards() as usize, "{status}");
    for (shard, facts) in shards {
        let shard: u32 = shard.parse().expect("a shard number");
        assert!(facts["cursor"].as_u64().is_some(), "{shard}: {facts}");
        assert!(facts["cursor"].as_u64() <= Some(hub.last_event_id(shard)));
        if let Some(lag) = facts["lag_blocks"].as_u64() {
            assert!(lag < 1_000, "{shard}: lag {lag}");
        }
    }
    let streams = status["streams"].as_object().expect("streams");
    assert!(streams.contains_key("casts"), "{status}");
    for (name, stream) in streams {
        assert!(stream["error"].is_null(), "{name}: {stream}");
        assert!(stream["backlog"].as_u64().is_some(), "{name}: {stream}");
    }
}
