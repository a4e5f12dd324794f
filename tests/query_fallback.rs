//! The query layer's source policy against real outages: the hub stopped, the database cut
//! (through a proxy in front of the shared server), both, and each coming back — answers move
//! to the source that can give them and return without a restart.

mod common;

use std::time::{Duration, Instant};

use common::harness::{self, devhub, devhub_again, small_hub, wait_converged};
use common::http::http;
use common::proxy::Proxy;
use common::{TestDb, TestRedis};
use serde_json::Value;
use waypoint::api::rest;
use waypoint::cli::Role;
use waypoint::config::{DatabaseConfig, QueryConfig, RestConfig};
use waypoint::query::db::DbReader;
use waypoint::query::hub::HubReader;
use waypoint::query::{Breaker, DataContext, PageRequest, QueryError, Source, SourcePolicy};
use waypoint::service::Service;
use waypoint::store::Pg;

const CONVERGE: Duration = Duration::from_secs(90);
/// The breaker's open interval in this test: a recovered source is asked again within it.
const OPEN_FOR: Duration = Duration::from_millis(500);

fn page(limit: u32) -> PageRequest {
    PageRequest {
        limit,
        cursor: None,
    }
}

/// Polls `check` until it holds, for up to `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < within, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Serves the REST router over `data` on a free port, as the server does.
async fn serve_rest(data: DataContext) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let port = listener.local_addr().expect("address").port();
    let config = RestConfig {
        rate_limit_per_second: 0,
        ..RestConfig::default()
    };
    let app = rest::router(data, &config, None);
    tokio::spawn(async move {
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await;
    });
    port
}

/// One GET over HTTP/1.1: the status and the JSON body.
async fn rest_get(port: u16, path: &str) -> (u16, Value) {
    let (status, body) = http("GET", port, path, None)
        .await
        .expect("the REST port answers");
    let body = serde_json::from_str(&body).unwrap_or_else(|error| panic!("{error}: {body}"));
    (status, body)
}

#[tokio::test]
async fn answers_follow_the_sources_that_can_give_them() {
    let options = small_hub(61);
    let hub = devhub(options.clone()).await;
    let hub_addr = hub.addr();
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = harness::env(&db, &redis, &hub.url(), &[]);
    let config = harness::config(&env);
    let service = Service::start(Role::Both, config.clone(), None)
        .await
        .expect("service starts");
    let pg = harness::pool(&db).await;
    wait_converged(&hub, &pg, CONVERGE).await;
    service.shutdown().await.expect("drains");

    // The fid with the most live casts.
    let dump = hub.dump_state().live_only();
    let mut counts = std::collections::BTreeMap::<u64, usize>::new();
    for cast in dump.casts.iter().filter(|cast| cast.live) {
        *counts.entry(cast.fid).or_default() += 1;
    }
    let (&fid, &expected) = counts
        .iter()
        .max_by_key(|(_, count)| **count)
        .expect("casts");

    // The query layer's own path to the database goes through a proxy the test can cut.
    let server: std::net::SocketAddr = "127.0.0.1:5432".parse().expect("address");
    let mut proxy = Proxy::start(server).await;
    let mut url = url::Url::parse(db.url()).expect("url");
    url.set_port(Some(proxy.port())).expect("port");
    let reader_pg = Pg::new(&DatabaseConfig {
        url: url.to_string(),
        timeout_seconds: 2,
        ..db.config()
    })
    .expect("pool");
    let query = QueryConfig {
        hub_timeout_ms: 500,
        ..QueryConfig::default()
    };
    let context = |policy: SourcePolicy| {
        DataContext::new(
            policy,
            Some(HubReader::new(&config.hub, &query).expect("hub reader")),
            Some(DbReader {
                pg: reader_pg.clone(),
            }),
            Breaker::new(1, OPEN_FOR, OPEN_FOR * 2),
        )
    };
    let hub_first = context(SourcePolicy::HubFirst);
    let db_first = context(SourcePolicy::DbFirst);
    // The same query layer behind the REST API: its answers move with the sources too.
    let rest_port = serve_rest(hub_first.clone()).await;
    let rest_path = format!("/api/v1/casts/by-fid/{fid}?limit=1000");

    // Both up: hub-first asks the hub, db-first the database, and they agree.
    let from_hub = hub_first
        .casts_by_fid(fid, page(1000))
        .await
        .expect("answer");
    assert_eq!(from_hub.source, Source::Hub);
    assert_eq!(from_hub.value.items.len(), expected);
    let from_db = db_first
        .casts_by_fid(fid, page(1000))
        .await
        .expect("answer");
    assert_eq!(from_db.source, Source::Database);
    assert_eq!(from_db.value.items, from_hub.value.items);
    let (status, body) = rest_get(rest_port, &rest_path).await;
    assert_eq!(
        (status, &body["source"]),
        (200, &Value::from("hub")),
        "{body}"
    );
    let rest_items = body["data"].as_array().expect("data").len();
    assert_eq!(rest_items, expected, "{body}");

    // The hub stops: hub-first answers from the database; once the breaker is open, at once.
    hub.shutdown().await;
    let answer = hub_first
        .casts_by_fid(fid, page(1000))
        .await
        .expect("fallback");
    assert_eq!(answer.source, Source::Database);
    assert_eq!(answer.value.items, from_hub.value.items);
    let started = Instant::now();
    let answer = hub_first.profile(fid).await.expect("fallback");
    assert_eq!(answer.source, Source::Database);
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "an open circuit does not wait for the hub: {:?}",
        started.elapsed()
    );
    let (status, body) = rest_get(rest_port, &rest_path).await;
    assert_eq!(
        (status, &body["source"]),
        (200, &Value::from("database")),
        "{body}"
    );
    assert_eq!(body["data"].as_array().expect("data").len(), expected);

    // Both down: a clear error, soon.
    proxy.cut();
    tokio::time::sleep(OPEN_FOR * 3).await;
    let started = Instant::now();
    match hub_first.casts_by_fid(fid, page(10)).await {
        Err(QueryError::Unavailable { message }) => {
            assert!(message.contains("hub"), "{message}");
            assert!(message.contains("database"), "{message}");
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    let (status, body) = rest_get(rest_port, &rest_path).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");

    // The hub comes back on its address: hub-first returns to it by itself.
    let hub = devhub_again(options, hub_addr).await;
    eventually(Duration::from_secs(15), "hub-first answers from the hub again", || {
        let hub_first = hub_first.clone();
        async move {
            matches!(hub_first.casts_by_fid(fid, page(1000)).await, Ok(answer) if answer.source == Source::Hub)
        }
    })
    .await;
    let (status, body) = rest_get(rest_port, &rest_path).await;
    assert_eq!(
        (status, &body["source"]),
        (200, &Value::from("hub")),
        "{body}"
    );
    // The database is still cut: db-first answers from the hub.
    let answer = db_first
        .casts_by_fid(fid, page(1000))
        .await
        .expect("fallback");
    assert_eq!(answer.source, Source::Hub);
    assert_eq!(answer.value.items, from_hub.value.items);

    // The database comes back: db-first returns to it without a restart.
    proxy.restore().await;
    eventually(Duration::from_secs(15), "db-first answers from the database again", || {
        let db_first = db_first.clone();
        async move {
            matches!(db_first.casts_by_fid(fid, page(1000)).await, Ok(answer) if answer.source == Source::Database)
        }
    })
    .await;

    // Policies that name one source never use the other.
    let hub_only = context(SourcePolicy::HubOnly);
    assert_eq!(
        hub_only
            .casts_by_fid(fid, page(5))
            .await
            .expect("hub")
            .source,
        Source::Hub
    );
    let db_only = context(SourcePolicy::DbOnly);
    hub.shutdown().await;
    assert_eq!(
        db_only.casts_by_fid(fid, page(5)).await.expect("db").source,
        Source::Database
    );
    assert!(matches!(
        hub_only.casts_by_fid(fid, page(5)).await,
        Err(QueryError::Unavailable { .. })
    ));

    reader_pg.close();
    pg.close();
    db.cleanup().await;
    redis.cleanup().await;
}
