//! The MCP server over real HTTP with rmcp's client: the surface (tools, resources, prompt),
//! the invalid-input and unavailable errors, the Host allow-list, and every tool and resource
//! answered from a database the streaming path filled from the dev hub, checked against the
//! hub's own dump.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use common::harness::{self, devhub, small_hub, wait_converged};
use common::{TestDb, TestRedis};
use rmcp::model::{
    CallToolRequestParams, ErrorCode, ErrorData, GetPromptRequestParams, ReadResourceRequestParams,
    ResourceContents,
};
use rmcp::service::{RunningService, ServiceError};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use waypoint::cli::Role;
use waypoint::config::McpConfig;
use waypoint::hub::ids::FARCASTER_EPOCH_UNIX_SECONDS;
use waypoint::query::db::DbReader;
use waypoint::query::{Breaker, DataContext, SourcePolicy};
use waypoint::replica::ReplicaState;
use waypoint::service::Service;

type Client = RunningService<RoleClient, ()>;

const CONVERGE: Duration = Duration::from_secs(90);

/// The existing Waypoint's 24 tools and the two beyond the hub.
const TOOLS: &[&str] = &[
    "get_user_by_fid",
    "get_user_by_username",
    "get_fid_by_username",
    "get_verifications_by_fid",
    "get_verification",
    "get_all_verification_messages_by_fid",
    "get_cast",
    "get_casts_by_fid",
    "get_casts_by_mention",
    "get_casts_by_parent",
    "get_casts_by_parent_url",
    "get_all_casts_by_fid",
    "get_conversation",
    "get_reaction",
    "get_reactions_by_fid",
    "get_reactions_by_target",
    "get_all_reactions_by_fid",
    "get_link",
    "get_links_by_fid",
    "get_links_by_target",
    "get_link_compact_state_by_fid",
    "get_all_links_by_fid",
    "get_username_proof",
    "get_username_proofs_by_fid",
    "search_casts",
    "get_following_feed",
];

fn breaker() -> Breaker {
    Breaker::new(3, Duration::from_secs(1), Duration::from_secs(5))
}

/// Serves the MCP routes for `data` on an ephemeral loopback port.
async fn serve(data: DataContext, config: &McpConfig) -> SocketAddr {
    let app = waypoint::api::mcp::service(data, config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("mcp serves");
    });
    addr
}

async fn connect(addr: SocketAddr) -> Client {
    // The HTTP client is built without a TLS provider of its own; plain HTTP still needs one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let transport = StreamableHttpClientTransport::from_uri(format!("http://{addr}/mcp"));
    ().serve(transport).await.expect("initialize")
}

/// Calls a tool: its one text content parsed as JSON, or the JSON-RPC error.
async fn call(client: &Client, tool: &str, arguments: Value) -> Result<Value, ErrorData> {
    let arguments = arguments.as_object().cloned().unwrap_or_default();
    let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
    match client.call_tool(params).await {
        Ok(result) => {
            assert_eq!(
                result.is_error,
                Some(false),
                "{tool} succeeded: {:?}",
                result.content
            );
            assert_eq!(result.content.len(), 1, "{tool}: one content");
            let text = &result.content[0].as_text().expect("text content").text;
            Ok(serde_json::from_str(text).expect("the text is JSON"))
        }
        Err(ServiceError::McpError(error)) => Err(error),
        Err(other) => panic!("{tool}: transport failure {other}"),
    }
}

async fn ok(client: &Client, tool: &str, arguments: Value) -> Value {
    call(client, tool, arguments.clone())
        .await
        .unwrap_or_else(|error| panic!("{tool} {arguments}: {error:?}"))
}

async fn refused(client: &Client, tool: &str, arguments: Value) -> ErrorData {
    match call(client, tool, arguments.clone()).await {
        Ok(value) => panic!("{tool} {arguments} answered {value}"),
        Err(error) => error,
    }
}

async fn read(client: &Client, uri: &str) -> Result<Value, ErrorData> {
    match client
        .read_resource(ReadResourceRequestParams::new(uri.to_owned()))
        .await
    {
        Ok(result) => {
            let Some(ResourceContents::TextResourceContents { text, uri: at, .. }) =
                result.contents.first()
            else {
                panic!("{uri}: no text contents");
            };
            assert_eq!(at, uri);
            Ok(serde_json::from_str(text).unwrap_or(Value::String(text.clone())))
        }
        Err(ServiceError::McpError(error)) => Err(error),
        Err(other) => panic!("{uri}: transport failure {other}"),
    }
}

/// One HTTP request with the given Host header; the status code.
async fn status_with_host(addr: SocketAddr, host: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}"#;
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = vec![0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut response))
        .await
        .expect("an answer")
        .expect("read");
    let head = String::from_utf8_lossy(&response[..read]).into_owned();
    head.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("a status line")
}

fn assert_invalid(error: &ErrorData, message: &str) {
    assert_eq!(error.code, ErrorCode::INVALID_PARAMS, "{error:?}");
    assert_eq!(error.message, message);
}

#[tokio::test]
async fn the_surface_its_errors_and_the_host_check() {
    // No source at all: every query is unavailable, but the surface and the checks of the
    // arguments do not need one.
    let data = DataContext::new(SourcePolicy::HubFirst, None, None, breaker());
    let addr = serve(data, &McpConfig::default()).await;
    let client = connect(addr).await;

    let server = client.peer_info().expect("server info");
    assert_eq!(
        server.server_info.as_ref().map(|info| info.name.as_str()),
        Some("waypoint")
    );
    assert!(server.capabilities.tools.is_some());
    assert!(server.capabilities.resources.is_some());
    assert!(server.capabilities.prompts.is_some());

    let tools = client.list_all_tools().await.expect("tools");
    let names: BTreeSet<String> = tools.iter().map(|tool| tool.name.to_string()).collect();
    let expected: BTreeSet<String> = TOOLS.iter().map(|name| (*name).to_owned()).collect();
    assert_eq!(names, expected);
    let schema_of = |name: &str| {
        let tool = tools.iter().find(|tool| tool.name == name).expect("tool");
        assert!(tool.description.is_some(), "{name} is described");
        let properties = tool.input_schema.get("properties").expect("properties");
        properties
            .as_object()
            .expect("object")
            .keys()
            .cloned()
            .collect::<BTreeSet<String>>()
    };
    let keys = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect();
    assert_eq!(
        schema_of("get_conversation"),
        keys(&["fid", "cast_hash", "recursive", "max_depth", "limit"])
    );
    assert_eq!(
        schema_of("get_reaction"),
        keys(&[
            "fid",
            "reaction_type",
            "target_cast_fid",
            "target_cast_hash",
            "target_url"
        ])
    );
    assert_eq!(
        schema_of("get_casts_by_parent"),
        keys(&["parent_fid", "parent_hash", "limit"])
    );
    assert_eq!(
        schema_of("get_all_links_by_fid"),
        keys(&["fid", "limit", "start_time", "end_time"])
    );
    assert_eq!(
        schema_of("get_link"),
        keys(&["fid", "link_type", "target_fid"])
    );
    assert_eq!(schema_of("get_username_proof"), keys(&["name"]));

    // Invalid input: -32602 with the existing Waypoint's texts.
    let error = refused(&client, "get_cast", json!({"fid": 1, "hash": "not-hex"})).await;
    assert_invalid(&error, "Invalid hash format: not-hex");
    let error = refused(
        &client,
        "get_reaction",
        json!({"fid": 1, "reaction_type": 9, "target_url": "https://example.com"}),
    )
    .await;
    assert_invalid(
        &error,
        "Invalid reaction type: 9 (expected 1=Like or 2=Recast)",
    );
    let error = refused(
        &client,
        "get_reactions_by_target",
        json!({"reaction_type": 9}),
    )
    .await;
    assert_invalid(
        &error,
        "Invalid reaction type: 9 (expected 1=Like or 2=Recast)",
    );
    let error = refused(
        &client,
        "get_reaction",
        json!({"fid": 1, "reaction_type": 1}),
    )
    .await;
    assert_invalid(
        &error,
        "Either target_url or both target_cast_fid and target_cast_hash are required",
    );
    let error = refused(&client, "get_reactions_by_target", json!({"limit": 5})).await;
    assert_invalid(
        &error,
        "Either target_url or both target_cast_fid and target_cast_hash are required",
    );
    let error = refused(&client, "get_user_by_fid", json!({"fid": 0})).await;
    assert_invalid(&error, "Invalid fid: 0 (Farcaster IDs start at 1)");
    let error = refused(
        &client,
        "get_casts_by_parent",
        json!({"parent_fid": 0, "parent_hash": "ab"}),
    )
    .await;
    assert_invalid(&error, "Invalid parent_fid: 0 (Farcaster IDs start at 1)");
    let error = refused(&client, "get_casts_by_fid", json!({"fid": 1, "limit": 0})).await;
    assert_invalid(&error, "Invalid limit: 0 (expected 1 to 1000)");
    let error = refused(
        &client,
        "get_all_casts_by_fid",
        json!({"fid": 1, "start_time": 10, "end_time": 5}),
    )
    .await;
    assert_eq!(error.code, ErrorCode::INVALID_PARAMS);
    let error = refused(
        &client,
        "get_conversation",
        json!({"fid": 1, "cast_hash": "zz"}),
    )
    .await;
    assert_invalid(&error, "Invalid cast hash: Invalid hash format: zz");
    let error = refused(
        &client,
        "get_verification",
        json!({"fid": 1, "address": "0x"}),
    )
    .await;
    assert_invalid(&error, "Invalid address format: empty address");
    let error = refused(&client, "get_user_by_username", json!({"username": " "})).await;
    assert_invalid(&error, "username cannot be empty");
    let error = refused(
        &client,
        "search_casts",
        json!({"query": "x", "cursor": "!!"}),
    )
    .await;
    assert_eq!(error.code, ErrorCode::INVALID_PARAMS);
    assert!(error.message.starts_with("Invalid cursor"), "{error:?}");
    // Arguments of the wrong JSON type: -32602 naming what was expected.
    let error = refused(&client, "get_cast", json!({"fid": "one", "hash": "ab"})).await;
    assert_eq!(error.code, ErrorCode::INVALID_PARAMS, "{error:?}");
    assert!(
        error.message.starts_with("Invalid arguments") && error.message.contains("expected u64"),
        "{error:?}"
    );
    let error = refused(&client, "get_casts_by_fid", json!({"fid": 1, "limit": -3})).await;
    assert_eq!(error.code, ErrorCode::INVALID_PARAMS, "{error:?}");
    let error = refused(&client, "get_user_by_fid", json!({})).await;
    assert_eq!(error.code, ErrorCode::INVALID_PARAMS, "{error:?}");
    assert!(error.message.contains("missing field `fid`"), "{error:?}");

    // Nothing can answer: a JSON-RPC internal error that says so, at once.
    let started = std::time::Instant::now();
    let error = refused(&client, "get_casts_by_fid", json!({"fid": 1})).await;
    assert_eq!(error.code, ErrorCode::INTERNAL_ERROR);
    assert!(
        error.message.starts_with("No data source can answer"),
        "{error:?}"
    );
    let error = refused(&client, "search_casts", json!({"query": "hello"})).await;
    assert_eq!(error.code, ErrorCode::INTERNAL_ERROR);
    assert!(error.message.contains("database"), "{error:?}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // Resources: the templates, the static ones, and clear refusals.
    let templates = client
        .list_all_resource_templates()
        .await
        .expect("templates");
    let uris: BTreeSet<String> = templates
        .iter()
        .map(|template| template.uri_template.clone())
        .collect();
    let expected: BTreeSet<String> = [
        "users/{fid}",
        "users/by-username/{username}",
        "verifications/{fid}",
        "verifications/{fid}/{address}",
        "verifications/all-by-fid/{fid}",
        "casts/{fid}/{hash}",
        "casts/by-fid/{fid}",
        "casts/by-mention/{fid}",
        "casts/by-parent/{fid}/{hash}",
        "casts/by-parent-url{?url}",
        "conversations/{fid}/{hash}",
        "reactions/by-fid/{fid}",
        "reactions/by-target-cast/{fid}/{hash}",
        "reactions/by-target-url{?url}",
        "links/by-fid/{fid}",
        "links/by-target/{fid}",
        "links/compact-state/{fid}",
        "username-proofs/{fid}",
        "username-proofs/by-name/{name}",
    ]
    .iter()
    .map(|path| format!("waypoint://{path}"))
    .collect();
    assert_eq!(uris, expected);
    let statics = client.list_all_resources().await.expect("resources");
    assert_eq!(statics.len(), 2);
    for resource in &statics {
        let text = read(&client, &resource.uri).await.expect("static resource");
        assert!(text.as_str().is_some_and(|text| text.contains("Farcaster")));
    }
    let error = read(&client, "waypoint://users/abc").await.unwrap_err();
    assert_invalid(&error, "Invalid FID: abc");
    let error = read(&client, "waypoint://nowhere/1").await.unwrap_err();
    assert_eq!(error.code, ErrorCode::RESOURCE_NOT_FOUND);
    let error = read(&client, "waypoint://casts/by-fid/3")
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::INTERNAL_ERROR);

    // The prompt.
    let prompts = client.list_all_prompts().await.expect("prompts");
    assert_eq!(prompts.len(), 1);
    assert_eq!(prompts[0].name, "waypoint_prompt");
    let arguments = json!({"fid": "3", "username": "alice.eth"})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let prompt = client
        .get_prompt(GetPromptRequestParams::new("waypoint_prompt").with_arguments(arguments))
        .await
        .expect("prompt");
    let text = serde_json::to_string(&prompt.messages).expect("messages");
    assert!(text.contains("FID 3 (username: alice.eth)"), "{text}");
    let error = client
        .get_prompt(GetPromptRequestParams::new("waypoint_prompt"))
        .await
        .unwrap_err();
    match error {
        ServiceError::McpError(error) => assert_invalid(&error, "Missing prompt argument: fid"),
        other => panic!("{other}"),
    }
    client.cancel().await.expect("close");

    // Host allow-list: the defaults take loopback names only; an empty list takes any.
    assert_eq!(status_with_host(addr, "evil.example:8000").await, 403);
    assert_eq!(status_with_host(addr, "localhost:8000").await, 200);
    let open = McpConfig {
        allowed_hosts: Vec::new(),
        ..McpConfig::default()
    };
    let data = DataContext::new(SourcePolicy::DbOnly, None, None, breaker());
    let open_addr = serve(data, &open).await;
    assert_eq!(status_with_host(open_addr, "evil.example").await, 200);
    let only = McpConfig {
        allowed_hosts: vec!["mcp.internal".into()],
        ..McpConfig::default()
    };
    let data = DataContext::new(SourcePolicy::DbOnly, None, None, breaker());
    let only_addr = serve(data, &only).await;
    assert_eq!(status_with_host(only_addr, "mcp.internal").await, 200);
    assert_eq!(status_with_host(only_addr, "127.0.0.1").await, 403);
}

/// Live rows of the dump.
struct Live {
    state: ReplicaState,
}

impl Live {
    fn casts(&self) -> impl Iterator<Item = &waypoint::replica::CastRow> {
        self.state.casts.iter().filter(|cast| cast.live)
    }
    fn reactions(&self) -> impl Iterator<Item = &waypoint::replica::ReactionRow> {
        self.state.reactions.iter().filter(|reaction| reaction.live)
    }
    fn links(&self) -> impl Iterator<Item = &waypoint::replica::LinkRow> {
        self.state.links.iter().filter(|link| link.live)
    }
}

/// The values of `key` in the items of `list` in `body`, as a set.
fn set_of(body: &Value, list: &str, key: &str) -> BTreeSet<String> {
    body[list]
        .as_array()
        .unwrap_or_else(|| panic!("{list} in {body}"))
        .iter()
        .map(|item| match &item[key] {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        })
        .collect()
}

fn strings<'a>(items: impl Iterator<Item = &'a String>) -> BTreeSet<String> {
    items.cloned().collect()
}

/// Newest first: timestamps never increase down the list.
fn assert_newest_first(body: &Value, list: &str) {
    let stamps: Vec<u64> = body[list]
        .as_array()
        .expect("list")
        .iter()
        .map(|item| item["timestamp"].as_u64().expect("timestamp"))
        .collect();
    assert!(
        stamps.windows(2).all(|pair| pair[0] >= pair[1]),
        "{list} newest first: {stamps:?}"
    );
}

#[tokio::test]
async fn every_tool_and_resource_answers_from_the_database_as_the_hub_dump_says() {
    let hub = devhub(small_hub(71)).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = harness::env(&db, &redis, &hub.url(), &[]);
    let service = Service::start(Role::Both, harness::config(&env), None)
        .await
        .expect("service starts");
    let pg = harness::pool(&db).await;
    wait_converged(&hub, &pg, CONVERGE).await;
    service.shutdown().await.expect("service stops");
    let live = Live {
        state: hub.dump_state(),
    };
    hub.shutdown().await;

    let data = DataContext::new(
        SourcePolicy::DbOnly,
        None,
        Some(DbReader { pg: pg.clone() }),
        breaker(),
    );
    let addr = serve(data, &McpConfig::default()).await;
    let client = connect(addr).await;
    let all = 1000;
    // Every kind of item is in the dataset, so every branch below runs.
    assert!(live.casts().any(|cast| !cast.mentions.is_empty()));
    assert!(live.casts().any(|cast| cast.parent_hash.is_some()));
    assert!(live.casts().any(|cast| cast.parent_url.is_some()));
    assert!(live.state.verifications.iter().any(|row| row.live));
    assert!(live.state.username_proofs.iter().any(|row| row.live));
    assert!(
        live.state
            .user_data
            .iter()
            .any(|row| row.live && row.user_data_type == 2)
    );
    assert!(live.state.casts.iter().any(|row| !row.live));
    assert!(
        live.casts().count() > 100 && live.reactions().count() > 10 && live.links().count() > 10,
        "the dev hub's dataset has casts, reactions and links"
    );

    // Casts by fid: the author's live casts, newest first.
    let author = live
        .casts()
        .map(|cast| cast.fid)
        .max_by_key(|fid| live.casts().filter(|cast| cast.fid == *fid).count())
        .expect("a cast");
    let body = ok(
        &client,
        "get_casts_by_fid",
        json!({"fid": author, "limit": all}),
    )
    .await;
    let expected = strings(
        live.casts()
            .filter(|cast| cast.fid == author)
            .map(|cast| &cast.hash),
    );
    assert_eq!(body["fid"], author);
    assert_eq!(body["count"], expected.len());
    assert_eq!(set_of(&body, "casts", "hash"), expected);
    assert_newest_first(&body, "casts");
    let two = ok(
        &client,
        "get_casts_by_fid",
        json!({"fid": author, "limit": 2}),
    )
    .await;
    assert_eq!(two["count"], 2);
    assert_eq!(two["casts"][0], body["casts"][0]);
    let default = ok(&client, "get_casts_by_fid", json!({"fid": author})).await;
    assert_eq!(default["count"], expected.len().min(10));
    assert_eq!(
        read(&client, &format!("waypoint://casts/by-fid/{author}"))
            .await
            .expect("resource"),
        default
    );
    let everything = ok(
        &client,
        "get_all_casts_by_fid",
        json!({"fid": author, "limit": all}),
    )
    .await;
    assert_eq!(everything, body);

    // One cast: its fields; a time window around it holds it.
    let cast = live
        .casts()
        .find(|cast| cast.fid == author)
        .expect("a cast");
    let found = ok(
        &client,
        "get_cast",
        json!({"fid": cast.fid, "hash": format!("0x{}", cast.hash.to_uppercase())}),
    )
    .await;
    assert_eq!(found["hash"], cast.hash);
    assert_eq!(found["fid"], cast.fid);
    assert_eq!(found["timestamp"], cast.timestamp);
    assert_eq!(found["text"], cast.text);
    assert_eq!(
        found["mentions"],
        if cast.mentions.is_empty() {
            Value::Null
        } else {
            json!(cast.mentions)
        }
    );
    match (&cast.parent_fid, &cast.parent_hash, &cast.parent_url) {
        (Some(fid), Some(hash), _) => {
            assert_eq!(
                found["parent"],
                json!({"type": "cast", "fid": fid, "hash": hash})
            )
        }
        (_, _, Some(url)) => assert_eq!(found["parent"], json!({"type": "url", "url": url})),
        _ => assert_eq!(found["parent"], Value::Null),
    }
    assert_eq!(
        read(
            &client,
            &format!("waypoint://casts/{}/{}", cast.fid, cast.hash)
        )
        .await
        .expect("resource"),
        found
    );
    let unix = cast.timestamp + FARCASTER_EPOCH_UNIX_SECONDS;
    let window = ok(
        &client,
        "get_all_casts_by_fid",
        json!({"fid": author, "limit": all, "start_time": unix, "end_time": unix}),
    )
    .await;
    assert!(set_of(&window, "casts", "hash").contains(&cast.hash));
    assert!(
        window["casts"]
            .as_array()
            .expect("casts")
            .iter()
            .all(|item| item["timestamp"] == cast.timestamp)
    );

    // A removed cast, and one that never was: not found, the hash normalised.
    let removed = live
        .state
        .casts
        .iter()
        .find(|row| !row.live && !live.casts().any(|other| other.hash == row.hash));
    {
        let removed = removed.expect("a removed cast");
        let body = ok(
            &client,
            "get_cast",
            json!({"fid": removed.fid, "hash": removed.hash}),
        )
        .await;
        assert_eq!(body["found"], false);
    }
    let missing = "9".repeat(40);
    let body = ok(
        &client,
        "get_cast",
        json!({"fid": 1001, "hash": format!("0x{missing}")}),
    )
    .await;
    assert_eq!(
        body,
        json!({"fid": 1001, "hash": missing, "found": false, "error": "Cast not found"})
    );
    let body = ok(
        &client,
        "get_conversation",
        json!({"fid": "1001", "cast_hash": format!("0x{missing}")}),
    )
    .await;
    assert_eq!(
        body,
        json!({"fid": 1001, "hash": missing, "found": false, "error": "Cast not found"})
    );

    // Mentions.
    if let Some(mentioned) = live.casts().flat_map(|cast| cast.mentions.clone()).next() {
        let body = ok(
            &client,
            "get_casts_by_mention",
            json!({"fid": mentioned, "limit": all}),
        )
        .await;
        let expected = strings(
            live.casts()
                .filter(|cast| cast.mentions.contains(&mentioned))
                .map(|cast| &cast.hash),
        );
        assert_eq!(body["mention_fid"], mentioned);
        assert_eq!(set_of(&body, "casts", "hash"), expected);
        assert_newest_first(&body, "casts");
    }

    // Replies to a cast, and the conversation around it.
    let parent = live
        .casts()
        .filter(|reply| reply.parent_hash.is_some())
        .filter_map(|reply| {
            live.casts().find(|cast| {
                Some(cast.fid) == reply.parent_fid && Some(&cast.hash) == reply.parent_hash.as_ref()
            })
        })
        .next();
    {
        let parent = parent.expect("a reply whose parent is live");
        let replies = strings(
            live.casts()
                .filter(|cast| {
                    cast.parent_fid == Some(parent.fid)
                        && cast.parent_hash.as_ref() == Some(&parent.hash)
                })
                .map(|cast| &cast.hash),
        );
        let body = ok(
            &client,
            "get_casts_by_parent",
            json!({"parent_fid": parent.fid, "parent_hash": parent.hash, "limit": all}),
        )
        .await;
        assert_eq!(
            body["parent"],
            json!({"fid": parent.fid, "hash": parent.hash})
        );
        assert_eq!(set_of(&body, "replies", "hash"), replies);

        let conversation = ok(
            &client,
            "get_conversation",
            json!({"fid": parent.fid, "cast_hash": parent.hash, "limit": all}),
        )
        .await;
        assert_eq!(conversation["root_cast"]["id"], parent.hash);
        assert_eq!(conversation["root_cast"]["type"], "cast");
        assert_eq!(
            set_of(&conversation["conversation"], "replies", "id"),
            replies
        );
        let fids: Vec<Value> = conversation["participants"]["fids"]
            .as_array()
            .expect("fids")
            .clone();
        assert!(fids.iter().all(Value::is_string), "fids are strings");
        assert!(fids.contains(&json!(parent.fid.to_string())));
        assert_eq!(conversation["participants"]["count"], fids.len());
        for (key, profile) in conversation["participants"]["user_data"]
            .as_object()
            .expect("user data")
        {
            assert_eq!(&profile["fid"].to_string(), key);
        }
        let summary = conversation["summary"].as_str().expect("summary");
        assert!(summary.starts_with("Conversation started by"));
        assert!(summary.ends_with(&format!("{} replies in the thread.", replies.len())));
        assert!(conversation["topic"].as_str().is_some());
        let resource = read(
            &client,
            &format!("waypoint://conversations/{}/{}", parent.fid, parent.hash),
        )
        .await
        .expect("resource");
        assert_eq!(resource["root_cast"], conversation["root_cast"]);
        let nested = read(
            &client,
            &format!("waypoint://casts/by-parent/{}/{}", parent.fid, parent.hash),
        )
        .await
        .expect("resource");
        assert_eq!(nested["parent"], body["parent"]);
    }

    // Replies to a URL; an unknown URL keeps the list's shape.
    if let Some(url) = live.casts().find_map(|cast| cast.parent_url.clone()) {
        let body = ok(
            &client,
            "get_casts_by_parent_url",
            json!({"parent_url": url, "limit": all}),
        )
        .await;
        let expected = strings(
            live.casts()
                .filter(|cast| cast.parent_url.as_ref() == Some(&url))
                .map(|cast| &cast.hash),
        );
        assert_eq!(set_of(&body, "replies", "hash"), expected);
        let encoded: String = url.bytes().map(|byte| format!("%{byte:02X}")).collect();
        let resource = read(
            &client,
            &format!("waypoint://casts/by-parent-url?url={encoded}"),
        )
        .await
        .expect("resource");
        assert_eq!(resource["parent_url"], url);
    }
    let body = ok(
        &client,
        "get_casts_by_parent_url",
        json!({"parent_url": "https://example.com/empty"}),
    )
    .await;
    assert_eq!(
        body,
        json!({"parent_url": "https://example.com/empty", "count": 0, "replies": []})
    );

    // Reactions: by fid, by type, by target, one; the URL wins over a cast.
    if let Some(reaction) = live.reactions().next() {
        let body = ok(
            &client,
            "get_reactions_by_fid",
            json!({"fid": reaction.fid, "limit": all}),
        )
        .await;
        let expected = strings(
            live.reactions()
                .filter(|other| other.fid == reaction.fid)
                .map(|other| &other.hash),
        );
        assert_eq!(set_of(&body, "reactions", "hash"), expected);
        assert_newest_first(&body, "reactions");
        let likes = ok(
            &client,
            "get_reactions_by_fid",
            json!({"fid": reaction.fid, "reaction_type": 1, "limit": all}),
        )
        .await;
        assert!(
            likes["reactions"]
                .as_array()
                .expect("reactions")
                .iter()
                .all(|item| item["reaction_type"] == "like" && item["reaction_type_id"] == 1)
        );
        let window = ok(
            &client,
            "get_all_reactions_by_fid",
            json!({"fid": reaction.fid, "limit": all}),
        )
        .await;
        assert_eq!(set_of(&window, "reactions", "hash"), expected);

        let (target_args, target_echo) = match (
            &reaction.target_cast_fid,
            &reaction.target_cast_hash,
            &reaction.target_url,
        ) {
            (Some(fid), Some(hash), _) => (
                json!({"target_cast_fid": fid, "target_cast_hash": hash}),
                ("target_cast", json!({"fid": fid, "hash": hash})),
            ),
            (_, _, Some(url)) => (json!({"target_url": url}), ("target_url", json!(url))),
            _ => panic!("a reaction without a target"),
        };
        let mut args = target_args.clone();
        args["fid"] = json!(reaction.fid);
        args["reaction_type"] = json!(reaction.reaction_type);
        let one = ok(&client, "get_reaction", args.clone()).await;
        assert_eq!(one["hash"], reaction.hash);
        assert_eq!(one["reaction_type_id"], reaction.reaction_type);
        let mut args = target_args.clone();
        args["limit"] = json!(all);
        let by_target = ok(&client, "get_reactions_by_target", args).await;
        assert_eq!(by_target[target_echo.0], target_echo.1);
        assert!(set_of(&by_target, "reactions", "hash").contains(&reaction.hash));
        let expected = strings(
            live.reactions()
                .filter(|other| {
                    other.target_cast_hash == reaction.target_cast_hash
                        && other.target_url == reaction.target_url
                })
                .map(|other| &other.hash),
        );
        assert_eq!(set_of(&by_target, "reactions", "hash"), expected);
        let resource_uri = match (&reaction.target_cast_fid, &reaction.target_cast_hash) {
            (Some(fid), Some(hash)) => format!("waypoint://reactions/by-target-cast/{fid}/{hash}"),
            _ => format!(
                "waypoint://reactions/by-target-url?url={}",
                reaction.target_url.clone().unwrap_or_default()
            ),
        };
        let resource = read(&client, &resource_uri).await.expect("resource");
        assert_eq!(resource[target_echo.0], target_echo.1);
        let resource = read(
            &client,
            &format!("waypoint://reactions/by-fid/{}", reaction.fid),
        )
        .await
        .expect("resource");
        assert_eq!(resource["fid"], reaction.fid);
    }
    let body = ok(
        &client,
        "get_reaction",
        json!({"fid": 5005, "reaction_type": 1, "target_url": "https://example.com/missing",
               "target_cast_fid": 1, "target_cast_hash": "ab"}),
    )
    .await;
    assert_eq!(
        body,
        json!({"fid": 5005, "reaction_type_id": 1, "found": false, "error": "Reaction not found",
               "target_url": "https://example.com/missing"})
    );

    // Links: one, by fid (who it follows), by target (its followers), compact state.
    if let Some(link) = live.links().next() {
        let one = ok(
            &client,
            "get_link",
            json!({"fid": link.fid, "target_fid": link.target_fid}),
        )
        .await;
        assert_eq!(one["hash"], link.hash);
        assert_eq!(one["link_type"], link.link_type);
        let body = ok(
            &client,
            "get_links_by_fid",
            json!({"fid": link.fid, "limit": all}),
        )
        .await;
        let expected = strings(
            live.links()
                .filter(|other| other.fid == link.fid)
                .map(|other| &other.hash),
        );
        assert_eq!(set_of(&body, "links", "hash"), expected);
        assert_newest_first(&body, "links");
        let window = ok(
            &client,
            "get_all_links_by_fid",
            json!({"fid": link.fid, "limit": all}),
        )
        .await;
        assert_eq!(set_of(&window, "links", "hash"), expected);
        let followers = ok(
            &client,
            "get_links_by_target",
            json!({"target_fid": link.target_fid, "limit": all}),
        )
        .await;
        assert_eq!(followers["target_fid"], link.target_fid);
        let expected = strings(
            live.links()
                .filter(|other| other.target_fid == link.target_fid)
                .map(|other| &other.hash),
        );
        assert_eq!(set_of(&followers, "links", "hash"), expected);
        let resource = read(
            &client,
            &format!("waypoint://links/by-target/{}", link.target_fid),
        )
        .await
        .expect("resource");
        assert_eq!(resource["target_fid"], link.target_fid);
        let resource = read(&client, &format!("waypoint://links/by-fid/{}", link.fid))
            .await
            .expect("resource");
        assert_eq!(resource["fid"], link.fid);

        // The following feed: the newest casts of the accounts it follows.
        let followed: BTreeSet<u64> = live
            .links()
            .filter(|other| other.fid == link.fid && other.link_type == "follow")
            .map(|other| other.target_fid)
            .collect();
        let feed = ok(
            &client,
            "get_following_feed",
            json!({"fid": link.fid, "limit": all}),
        )
        .await;
        let expected = strings(
            live.casts()
                .filter(|cast| followed.contains(&cast.fid))
                .map(|cast| &cast.hash),
        );
        assert_eq!(set_of(&feed, "casts", "hash"), expected);
        assert_newest_first(&feed, "casts");
    }
    let body = ok(
        &client,
        "get_link",
        json!({"fid": 5005, "target_fid": 9999}),
    )
    .await;
    assert_eq!(
        body,
        json!({"fid": 5005, "link_type": "follow", "target_fid": 9999, "found": false,
               "error": "Link not found"})
    );
    let compact = ok(
        &client,
        "get_link_compact_state_by_fid",
        json!({"fid": author}),
    )
    .await;
    assert_eq!(compact["fid"], author);
    assert!(compact["compact_links"].is_array());
    assert_eq!(
        read(&client, &format!("waypoint://links/compact-state/{author}"))
            .await
            .expect("resource"),
        compact
    );

    // Verifications.
    if let Some(verification) = live.state.verifications.iter().find(|row| row.live) {
        let body = ok(
            &client,
            "get_verifications_by_fid",
            json!({"fid": verification.fid, "limit": all}),
        )
        .await;
        let expected = live
            .state
            .verifications
            .iter()
            .filter(|row| row.live && row.fid == verification.fid)
            .count();
        assert_eq!(body["count"], expected);
        let address = body["verifications"][0]["address"]
            .as_str()
            .expect("address")
            .to_owned();
        let one = ok(
            &client,
            "get_verification",
            json!({"fid": verification.fid, "address": address}),
        )
        .await;
        assert_eq!(one["found"], true);
        assert_eq!(one["verification"]["address"], address);
        let history = ok(
            &client,
            "get_all_verification_messages_by_fid",
            json!({"fid": verification.fid, "limit": all}),
        )
        .await;
        assert_eq!(history["count"], expected);
        assert_eq!(history["start_time"], Value::Null);
        assert_eq!(
            read(
                &client,
                &format!("waypoint://verifications/{}", verification.fid)
            )
            .await
            .expect("resource")["count"],
            body["count"].as_u64().expect("count").min(10)
        );
        let resource = read(
            &client,
            &format!("waypoint://verifications/{}/{address}", verification.fid),
        )
        .await
        .expect("resource");
        assert_eq!(resource, one);
        let resource = read(
            &client,
            &format!("waypoint://verifications/all-by-fid/{}", verification.fid),
        )
        .await
        .expect("resource");
        assert_eq!(resource["fid"], verification.fid);
    }
    let body = ok(
        &client,
        "get_verification",
        json!({"fid": 1001, "address": "0xabab"}),
    )
    .await;
    assert_eq!(
        body,
        json!({"fid": 1001, "address": "0xabab", "found": false, "error": "Verification not found"})
    );
    let body = ok(&client, "get_verifications_by_fid", json!({"fid": 777_777})).await;
    assert_eq!(
        body,
        json!({"fid": 777_777, "count": 0, "verifications": []})
    );

    // Profiles, usernames and their proofs.
    let named = live
        .state
        .username_proofs
        .iter()
        .find(|proof| proof.live)
        .cloned();
    if let Some(proof) = named {
        let body = ok(
            &client,
            "get_fid_by_username",
            json!({"username": proof.name}),
        )
        .await;
        assert_eq!(
            body,
            json!({"username": proof.name, "found": true, "fid": proof.fid})
        );
        let profile = ok(
            &client,
            "get_user_by_username",
            json!({"username": proof.name}),
        )
        .await;
        assert_eq!(profile["fid"], proof.fid);
        let resource = read(
            &client,
            &format!("waypoint://users/by-username/{}", proof.name),
        )
        .await
        .expect("resource");
        assert_eq!(resource, profile);
        let one = ok(&client, "get_username_proof", json!({"name": proof.name})).await;
        assert_eq!(one["found"], true);
        assert_eq!(one["fid"], proof.fid);
        assert_eq!(
            read(
                &client,
                &format!("waypoint://username-proofs/by-name/{}", proof.name)
            )
            .await
            .expect("resource"),
            one
        );
        let proofs = ok(
            &client,
            "get_username_proofs_by_fid",
            json!({"fid": proof.fid}),
        )
        .await;
        let expected = strings(
            live.state
                .username_proofs
                .iter()
                .filter(|other| other.live && other.fid == proof.fid)
                .map(|other| &other.name),
        );
        assert_eq!(set_of(&proofs, "proofs", "name"), expected);
        assert_eq!(
            read(
                &client,
                &format!("waypoint://username-proofs/{}", proof.fid)
            )
            .await
            .expect("resource"),
            proofs
        );
    }
    let body = ok(
        &client,
        "get_fid_by_username",
        json!({"username": "nobody-has-this-name"}),
    )
    .await;
    assert_eq!(
        body,
        json!({"username": "nobody-has-this-name", "found": false, "error": "Username not found"})
    );
    let body = ok(
        &client,
        "get_username_proof",
        json!({"name": "nobody-has-this-name"}),
    )
    .await;
    assert_eq!(body["found"], false);
    if let Some(row) = live
        .state
        .user_data
        .iter()
        .find(|row| row.live && row.user_data_type == 2)
    {
        let profile = ok(&client, "get_user_by_fid", json!({"fid": row.fid})).await;
        assert_eq!(profile["fid"], row.fid);
        assert_eq!(profile["display_name"], row.value);
        assert_eq!(
            read(&client, &format!("waypoint://users/{}", row.fid))
                .await
                .expect("resource"),
            profile
        );
    }
    let body = ok(&client, "get_user_by_fid", json!({"fid": 777_777})).await;
    assert_eq!(
        body,
        json!({"fid": 777_777, "found": false, "error": "User data not found"})
    );

    // Search: a word of a cast finds it.
    let word = live.casts().find_map(|cast| {
        cast.text
            .split(|c: char| !c.is_ascii_alphabetic())
            .find(|word| word.len() >= 6)
            .map(|word| (word.to_lowercase(), cast.hash.clone()))
    });
    let (word, hash) = word.expect("a cast with a long word");
    {
        let body = ok(
            &client,
            "search_casts",
            json!({"query": word, "limit": all}),
        )
        .await;
        assert_eq!(body["query"], word);
        assert!(
            set_of(&body, "casts", "hash").contains(&hash),
            "{word} finds {hash}"
        );
    }

    client.cancel().await.expect("close");
    pg.close();
    db.cleanup().await;
    redis.cleanup().await;
}

/// `waypoint mcp serve` as an operator runs it: the binary, its own MCP actor on `--bind`,
/// answering from the hub (`hub-first`) with no pipeline, and a clean exit on SIGTERM.
#[tokio::test]
async fn mcp_serve_answers_over_http_and_drains_on_sigterm() {
    let hub = devhub(small_hub(73)).await;
    let (db, redis) = (TestDb::new().await, TestRedis::new());
    let env = harness::env(&db, &redis, &hub.url(), &[]);
    let port = harness::free_port();
    let bind = format!("127.0.0.1:{port}");
    let logs = tempfile::tempdir().expect("a log directory");
    let mut waypoint = common::process::Waypoint::start(
        &["mcp", "serve", "--bind", &bind],
        &env,
        &logs.path().join("waypoint.log"),
    );
    waypoint.wait_log("mcp server listening").await;

    let client = connect(bind.parse().expect("an address")).await;
    let tools = client.list_all_tools().await.expect("tools");
    let names: BTreeSet<&str> = tools.iter().map(|tool| tool.name.as_ref()).collect();
    assert_eq!(names, TOOLS.iter().copied().collect::<BTreeSet<_>>());
    let state = hub.dump_state();
    let row = state
        .user_data
        .iter()
        .find(|row| row.live && row.user_data_type == 2)
        .expect("the dataset has display names");
    let profile = ok(&client, "get_user_by_fid", json!({"fid": row.fid})).await;
    assert_eq!(profile["fid"], row.fid);
    assert_eq!(profile["display_name"], row.value);
    let error = refused(&client, "get_cast", json!({"fid": 1, "hash": "not-hex"})).await;
    assert_eq!(error.code, ErrorCode::INVALID_PARAMS);
    let _ = client.cancel().await;

    let status = waypoint.terminate(Duration::from_secs(30)).await;
    assert!(status.success(), "{status}; log:\n{}", waypoint.log());
    let log = waypoint.log();
    assert!(
        !log.contains("subscriber"),
        "mcp serve runs no pipeline; log:\n{log}"
    );
    hub.shutdown().await;
    db.cleanup().await;
    redis.cleanup().await;
}
