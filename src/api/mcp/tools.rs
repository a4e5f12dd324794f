//! The MCP handler: the tools (the existing Waypoint's 24 and two beyond the hub), the
//! `waypoint://` resources and the `waypoint_prompt` prompt, all answered through the query
//! layer ([`DataContext`]).
//!
//! Every tool call goes through [`WaypointMcp::run`], which bounds its time, counts it
//! (`MCP_TOOL_CALLS_TOTAL {tool, outcome}`, `MCP_TOOL_DURATION_SECONDS {tool}`) and logs it
//! with the source that answered. Invalid input is a JSON-RPC invalid-params error (-32602),
//! "not found" a successful answer with `found: false`, and a query no source can answer a
//! JSON-RPC internal error saying so.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    CallToolResult, ContentBlock, ErrorCode, GetPromptRequestParams, GetPromptResponse,
    GetPromptResult, Implementation, ListPromptsResult, ListResourceTemplatesResult,
    ListResourcesResult, PaginatedRequestParams, Prompt, PromptArgument, PromptMessage,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource as McpResource,
    ResourceContents, ResourceTemplate, Role, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, tool, tool_handler, tool_router};
use serde::Serialize;

use super::format::{self, CastRef};
use super::params::{self, *};
use super::resources::{self, Resource};
use crate::metrics::{MCP_TOOL_CALLS_TOTAL, MCP_TOOL_DURATION_SECONDS};
use crate::query::{CastTarget, ConversationRequest, DataContext, QueryError, Source, TimeWindow};

/// Longest a tool call or resource read may take: the sources have their own deadlines, this
/// bounds a conversation's many reads too, so a call always answers.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Resource reads use the tools' default page size.
const RESOURCE_LIMIT: u32 = 10;
/// A conversation read as a resource: nested replies, five levels, ten per level (the
/// existing surface's choice).
const RESOURCE_CONVERSATION: ConversationRequest = ConversationRequest {
    recursive: true,
    max_depth: 5,
    limit: RESOURCE_LIMIT,
};
const PROMPT_NAME: &str = "waypoint_prompt";
const LABEL_TOOL: &str = "tool";
const LABEL_OUTCOME: &str = "outcome";

/// The MCP server's handler; one per session, cheap to clone.
#[derive(Clone)]
pub struct WaypointMcp {
    data: DataContext,
    tools: Arc<ToolRouter<WaypointMcp>>,
}

impl WaypointMcp {
    /// A handler over `data`, with the tool router built once and shared by every session.
    pub fn new(data: DataContext) -> WaypointMcp {
        WaypointMcp {
            data,
            tools: Arc::new(Self::tool_router()),
        }
    }
}

/// One tool's answer before it is wrapped in a result.
pub struct Answered {
    text: String,
    source: Option<Source>,
    found: bool,
}

impl Answered {
    fn found(body: &impl Serialize, source: Source) -> Result<Answered, ErrorData> {
        Ok(Answered {
            text: to_json(body)?,
            source: Some(source),
            found: true,
        })
    }

    fn not_found(body: &impl Serialize, source: Source) -> Result<Answered, ErrorData> {
        Ok(Answered {
            text: to_json(body)?,
            source: Some(source),
            found: false,
        })
    }
}

fn to_json(body: &impl Serialize) -> Result<String, ErrorData> {
    serde_json::to_string_pretty(body).map_err(|error| {
        ErrorData::internal_error(
            format!("the answer cannot be written as JSON: {error}"),
            None,
        )
    })
}

/// The JSON-RPC error for a query that has no answer.
fn query_error(error: QueryError) -> ErrorData {
    match error {
        QueryError::InvalidInput { param, message } => {
            params::invalid(format!("Invalid {param}: {message}"))
        }
        QueryError::Unavailable { message } => ErrorData::internal_error(
            format!("No data source can answer right now: {message}"),
            None,
        ),
    }
}

fn outcome_of(result: &Result<Answered, ErrorData>) -> &'static str {
    match result {
        Ok(answer) if answer.found => "ok",
        Ok(_) => "not_found",
        Err(error) if error.code == ErrorCode::INVALID_PARAMS => "invalid",
        Err(_) => "unavailable",
    }
}

/// Runs `work` within [`CALL_TIMEOUT`]; a call that takes longer is an internal error.
async fn bounded(
    what: &str,
    work: impl Future<Output = Result<Answered, ErrorData>>,
) -> Result<Answered, ErrorData> {
    match tokio::time::timeout(CALL_TIMEOUT, work).await {
        Ok(result) => result,
        Err(_) => Err(ErrorData::internal_error(
            format!("{what} did not finish within {} s", CALL_TIMEOUT.as_secs()),
            None,
        )),
    }
}

impl WaypointMcp {
    /// Runs one tool call: bounded in time, counted, logged with its source.
    async fn run(
        &self,
        tool: &'static str,
        work: impl Future<Output = Result<Answered, ErrorData>>,
    ) -> Result<CallToolResult, ErrorData> {
        let started = Instant::now();
        let result = bounded(tool, work).await;
        let elapsed = started.elapsed();
        let outcome = outcome_of(&result);
        metrics::counter!(MCP_TOOL_CALLS_TOTAL, LABEL_TOOL => tool, LABEL_OUTCOME => outcome)
            .increment(1);
        metrics::histogram!(MCP_TOOL_DURATION_SECONDS, LABEL_TOOL => tool)
            .record(elapsed.as_secs_f64());
        let elapsed_ms = elapsed.as_millis() as u64;
        match result {
            Ok(answer) => {
                let source = answer.source.map_or("none", Source::name);
                tracing::info!(tool, source, outcome, elapsed_ms, "mcp tool call");
                Ok(CallToolResult::success(vec![ContentBlock::text(
                    answer.text,
                )]))
            }
            Err(error) => {
                tracing::info!(tool, outcome, elapsed_ms, error = %error.message, "mcp tool call failed");
                Err(error)
            }
        }
    }

    // The queries, shared by the tools and the resources.

    async fn user_by_fid(&self, fid: u64) -> Result<Answered, ErrorData> {
        let fid = params::fid("fid", fid)?;
        let answer = self.data.profile(fid).await.map_err(query_error)?;
        match &answer.value {
            Some(profile) => Answered::found(&format::profile(profile, None), answer.source),
            None => {
                #[derive(Serialize)]
                struct NotFound {
                    fid: u64,
                    found: bool,
                    error: &'static str,
                }
                let body = NotFound {
                    fid,
                    found: false,
                    error: "User data not found",
                };
                Answered::not_found(&body, answer.source)
            }
        }
    }

    async fn user_by_username(&self, username: &str) -> Result<Answered, ErrorData> {
        #[derive(Serialize)]
        struct NotFound<'a> {
            username: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            fid: Option<u64>,
            found: bool,
            error: &'static str,
        }
        let username = params::text("username", username)?;
        let fid = self
            .data
            .fid_by_username(username.clone())
            .await
            .map_err(query_error)?;
        let Some(fid) = fid.value else {
            let body = NotFound {
                username: &username,
                fid: None,
                found: false,
                error: "Username not found",
            };
            return Answered::not_found(&body, fid.source);
        };
        let answer = self.data.profile(fid).await.map_err(query_error)?;
        match &answer.value {
            Some(profile) => {
                Answered::found(&format::profile(profile, Some(&username)), answer.source)
            }
            None => {
                let body = NotFound {
                    username: &username,
                    fid: Some(fid),
                    found: false,
                    error: "User data not found",
                };
                Answered::not_found(&body, answer.source)
            }
        }
    }

    async fn fid_by_username(&self, username: &str) -> Result<Answered, ErrorData> {
        #[derive(Serialize)]
        struct Body<'a> {
            username: &'a str,
            found: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            fid: Option<u64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<&'static str>,
        }
        let username = params::text("username", username)?;
        let answer = self
            .data
            .fid_by_username(username.clone())
            .await
            .map_err(query_error)?;
        let body = Body {
            username: &username,
            found: answer.value.is_some(),
            fid: answer.value,
            error: answer.value.is_none().then_some("Username not found"),
        };
        if answer.value.is_some() {
            Answered::found(&body, answer.source)
        } else {
            Answered::not_found(&body, answer.source)
        }
    }

    async fn verifications_by_fid(&self, fid: u64, limit: u32) -> Result<Answered, ErrorData> {
        let fid = params::fid("fid", fid)?;
        let page = params::page(limit)?;
        let answer = self
            .data
            .verifications_by_fid(fid, page)
            .await
            .map_err(query_error)?;
        let items = &answer.value.items;
        Answered::found(
            &FidList {
                fid,
                count: items.len(),
                verifications: format::verifications(items),
            },
            answer.source,
        )
    }

    async fn verification(&self, fid: u64, address: &str) -> Result<Answered, ErrorData> {
        #[derive(Serialize)]
        struct Body<'a, V> {
            fid: u64,
            address: &'a str,
            found: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            verification: Option<V>,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<&'static str>,
        }
        let fid = params::fid("fid", fid)?;
        let address = params::address(address)?;
        let answer = self
            .data
            .verification(fid, address.clone())
            .await
            .map_err(query_error)?;
        let body = Body {
            fid,
            address: &address,
            found: answer.value.is_some(),
            verification: answer.value.as_ref().map(format::verification),
            error: answer.value.is_none().then_some("Verification not found"),
        };
        if answer.value.is_some() {
            Answered::found(&body, answer.source)
        } else {
            Answered::not_found(&body, answer.source)
        }
    }

    async fn all_verifications_by_fid(
        &self,
        fid: u64,
        limit: u32,
        window: TimeWindow,
    ) -> Result<Answered, ErrorData> {
        #[derive(Serialize)]
        struct Body<V> {
            fid: u64,
            count: usize,
            start_time: Option<u64>,
            end_time: Option<u64>,
            verifications: V,
        }
        let fid = params::fid("fid", fid)?;
        let page = params::page(limit)?;
        let answer = self
            .data
            .verifications_by_fid_in_window(fid, window, page)
            .await
            .map_err(query_error)?;
        let items = &answer.value.items;
        let body = Body {
            fid,
            count: items.len(),
            start_time: window.start,
            end_time: window.end,
            verifications: format::verifications(items),
        };
        Answered::found(&body, answer.source)
    }

    async fn cast(&self, fid: u64, hash: &str) -> Result<Answered, ErrorData> {
        let fid = params::fid("fid", fid)?;
        let (bytes, normalised) = params::hash(hash)?;
        let answer = self.data.cast(fid, bytes).await.map_err(query_error)?;
        match &answer.value {
            Some(cast) => Answered::found(&format::cast(cast), answer.source),
            None => Answered::not_found(&format::cast_not_found(fid, &normalised), answer.source),
        }
    }

    async fn casts_by_fid(&self, fid: u64, limit: u32) -> Result<Answered, ErrorData> {
        #[derive(Serialize)]
        struct Body<C> {
            fid: u64,
            count: usize,
            casts: C,
        }
        let fid = params::fid("fid", fid)?;
        let page = params::page(limit)?;
        let answer = self
            .data
            .casts_by_fid(fid, page)
            .await
            .map_err(query_error)?;
        let items = &answer.value.items;
        let body = Body {
            fid,
            count: items.len(),
            casts: format::casts(items),
        };
        Answered::found(&body, answer.source)
    }

    async fn casts_by_mention(&self, fid: u64, limit: u32) -> Result<Answered, ErrorData> {
        #[derive(Serialize)]
        struct Body<C> {
            mention_fid: u64,
            count: usize,
            casts: C,
        }
        let fid = params::fid("fid", fid)?;
        let page = params::page(limit)?;
        let answer = self
            .data
            .casts_by_mention(fid, page)
            .await
            .map_err(query_error)?;
        let items = &answer.value.items;
        let body = Body {
            mention_fid: fid,
            count: items.len(),
            casts: format::casts(items),
        };
        Answered::found(&body, answer.source)
    }

    async fn casts_by_parent(
        &self,
        parent_fid: u64,
        parent_hash: &str,
        limit: u32,
    ) -> Result<Answered, ErrorData> {
        #[derive(Serialize)]
        struct Body<'a, C> {
            parent: CastRef<'a>,
            count: usize,
            replies: C,
        }
        let parent_fid = params::fid("parent_fid", parent_fid)?;
        let (bytes, normalised) = params::hash(parent_hash)?;
        let page = params::page(limit)?;
        let answer = self
            .data
            .casts_by_parent(parent_fid, bytes, page)
            .await
            .map_err(query_error)?;
        let items = &answer.value.items;
        let body = Body {
            parent: CastRef {
                fid: parent_fid,
                hash: &normalised,
            },
            count: items.len(),
            replies: format::casts(items),
        };
        Answered::found(&body, answer.source)
    }

    async fn casts_by_parent_url(&self, url: &str, limit: u32) -> Result<Answered, ErrorData> {
        #[derive(Serialize)]
        struct Body<'a, C> {
            parent_url: &'a str,
            count: usize,
            replies: C,
        }
        let url = params::text("parent_url", url)?;
        let page = params::page(limit)?;
        let answer = self
            .data
            .casts_by_parent_url(url.clone(), page)
            .await
            .map_err(query_error)?;
        let items = &answer.value.items;
        let body = Body {
            parent_url: &url,
            count: items.len(),
            replies: format::casts(items),
        };
        Answered::found(&body, answer.source)
    }

    async fn all_casts_by_fid(
        &self,
        fid: u64,
        limit: u32,
        window: TimeWindow,
    ) -> Result<Answered, ErrorData> {
        #[derive(Serialize)]
        struct Body<C> {
            fid: u64,
            count: usize,
            casts: C,
        }
        let fid = params::fid("fid", fid)?;
        let page = params::page(limit)?;
        let answer = self
            .data
            .casts_by_fid_in_window(fid, window, page)
            .await
            .map_err(query_error)?;
        let items = &answer.value.items;
        let body = Body {
            fid,
            count: items.len(),
            casts: format::casts(items),
        };
        Answered::found(&body, answer.source)
    }

    async fn conversation(
        &self,
        fid: u64,
        cast_hash: &str,
        request: ConversationRequest,
    ) -> Result<Answered, ErrorData> {
        let fid = params::fid("fid", fid)?;
        let (bytes, normalised) = params::hash(cast_hash)
            .map_err(|error| params::invalid(format!("Invalid cast hash: {}", error.message)))?;
        params::page(request.limit)?;
        let answer = self
            .data
            .conversation(fid, bytes, request)
            .await
            .map_err(query_error)?;
        match &answer.value {
            Some(conversation) => {
                Answered::found(&format::conversation(conversation), answer.source)
            }
            None => Answered::not_found(&format::cast_not_found(fid, &normalised), answer.source),
        }
    }

    async fn reaction(&self, args: ReactionArgs) -> Result<Answered, ErrorData> {
        #[derive(Serialize)]
        struct NotFound<'a> {
            fid: u64,
            reaction_type_id: i32,
            found: bool,
            error: &'static str,
            #[serde(skip_serializing_if = "Option::is_none")]
            target_cast: Option<CastRef<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            target_url: Option<&'a str>,
        }
        let fid = params::fid("fid", args.fid)?;
        let reaction_type = params::reaction_type(args.reaction_type)?;
        let target = params::reaction_target(
            args.target_cast_fid,
            args.target_cast_hash.as_deref(),
            args.target_url.as_deref(),
        )?;
        let answer = self
            .data
            .reaction(fid, reaction_type, target.clone())
            .await
            .map_err(query_error)?;
        match &answer.value {
            Some(reaction) => Answered::found(&format::reaction(reaction), answer.source),
            None => {
                let (target_cast, target_url) = format::target_echo(&target);
                let body = NotFound {
                    fid,
                    reaction_type_id: reaction_type.id(),
                    found: false,
                    error: "Reaction not found",
                    target_cast,
                    target_url,
                };
                Answered::not_found(&body, answer.source)
            }
        }
    }

    async fn reactions_by_fid(
        &self,
        fid: u64,
        reaction_type: Option<i64>,
        limit: u32,
    ) -> Result<Answered, ErrorData> {
        let fid = params::fid("fid", fid)?;
        let reaction_type = params::optional_reaction_type(reaction_type)?;
        let page = params::page(limit)?;
        let answer = self
            .data
            .reactions_by_fid(fid, reaction_type, page)
            .await
            .map_err(query_error)?;
        let items = &answer.value.items;
        let body = ReactionList {
            fid,
            count: items.len(),
            reactions: format::reactions(items),
        };
        Answered::found(&body, answer.source)
    }

    async fn reactions_by_target(
        &self,
        target: CastTarget,
        reaction_type: Option<i64>,
        limit: u32,
    ) -> Result<Answered, ErrorData> {
        #[derive(Serialize)]
        struct Body<'a, R> {
            count: usize,
            reactions: R,
            #[serde(skip_serializing_if = "Option::is_none")]
            target_cast: Option<CastRef<'a>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            target_url: Option<&'a str>,
        }
        let reaction_type = params::optional_reaction_type(reaction_type)?;
        let page = params::page(limit)?;
        let answer = self
            .data
            .reactions_by_target(target.clone(), reaction_type, page)
            .await
            .map_err(query_error)?;
        let items = &answer.value.items;
        let (target_cast, target_url) = format::target_echo(&target);
        let body = Body {
            count: items.len(),
            reactions: format::reactions(items),
            target_cast,
            target_url,
        };
        Answered::found(&body, answer.source)
    }

    async fn all_reactions_by_fid(
        &self,
        fid: u64,
        limit: u32,
        window: TimeWindow,
    ) -> Result<Answered, ErrorData> {
        let fid = params::fid("fid", fid)?;
        let page = params::page(limit)?;
        let answer = self
            .data
            .reactions_by_fid_in_window(fid, window, page)
            .await
            .map_err(query_error)?;
        let items = &answer.value.items;
        let body = ReactionList {
            fid,
            count: items.len(),
            reactions: format::reactions(items),
        };
        Answered::found(&body, answer.source)
    }

    async fn link(
        &self,
        fid: u64,
        link_type: &str,
        target_fid: u64,
    ) -> Result<Answered, ErrorData> {
        #[derive(Serialize)]
        struct NotFound<'a> {
            fid: u64,
            link_type: &'a str,
            target_fid: u64,
            found: bool,
            error: &'static str,
        }
        let fid = params::fid("fid", fid)?;
        let target_fid = params::fid("target_fid", target_fid)?;
        let link_type = params::text("link_type", link_type)?;
        let answer = self
            .data
            .link(fid, link_type.clone(), target_fid)
            .await
            .map_err(query_error)?;
        match &answer.value {
            Some(link) => Answered::found(&format::link(link), answer.source),
            None => {
                let body = NotFound {
                    fid,
                    link_type: &link_type,
                    target_fid,
                    found: false,
                    error: "Link not found",
                };
                Answered::not_found(&body, answer.source)
            }
        }
    }

    async fn links_by_fid(
        &self,
        fid: u64,
        link_type: Option<&str>,
        limit: u32,
    ) -> Result<Answered, ErrorData> {
        let fid = params::fid("fid", fid)?;
        let link_type = params::link_type_filter(link_type)?;
        let page = params::page(limit)?;
        let answer = self
            .data
            .links_by_fid(fid, link_type, page)
            .await
            .map_err(query_error)?;
        let items = &answer.value.items;
        let body = LinkList {
            fid,
            count: items.len(),
            links: format::links(items),
        };
        Answered::found(&body, answer.source)
    }

    async fn links_by_target(
        &self,
        target_fid: u64,
        link_type: Option<&str>,
        limit: u32,
    ) -> Result<Answered, ErrorData> {
        #[derive(Serialize)]
        struct Body<L> {
            target_fid: u64,
            count: usize,
            links: L,
        }
        let target_fid = params::fid("target_fid", target_fid)?;
        let link_type = params::link_type_filter(link_type)?;
        let page = params::page(limit)?;
        let answer = self
            .data
            .links_by_target(target_fid, link_type, page)
            .await
            .map_err(query_error)?;
        let items = &answer.value.items;
        let body = Body {
            target_fid,
            count: items.len(),
            links: format::links(items),
        };
        Answered::found(&body, answer.source)
    }

    async fn link_compact_state(&self, fid: u64) -> Result<Answered, ErrorData> {
        #[derive(Serialize)]
        struct Body<L> {
            fid: u64,
            count: usize,
            compact_links: L,
        }
        let fid = params::fid("fid", fid)?;
        let answer = self
            .data
            .link_compact_state(fid)
            .await
            .map_err(query_error)?;
        let links = format::compact_links(&answer.value);
        let body = Body {
            fid,
            count: links.len(),
            compact_links: links,
        };
        Answered::found(&body, answer.source)
    }

    async fn all_links_by_fid(
        &self,
        fid: u64,
        limit: u32,
        window: TimeWindow,
    ) -> Result<Answered, ErrorData> {
        let fid = params::fid("fid", fid)?;
        let page = params::page(limit)?;
        let answer = self
            .data
            .links_by_fid_in_window(fid, window, page)
            .await
            .map_err(query_error)?;
        let items = &answer.value.items;
        let body = LinkList {
            fid,
            count: items.len(),
            links: format::links(items),
        };
        Answered::found(&body, answer.source)
    }

    async fn username_proof(&self, name: &str) -> Result<Answered, ErrorData> {
        let name = params::text("name", name)?;
        let answer = self
            .data
            .username_proof(name.clone())
            .await
            .map_err(query_error)?;
        let body = format::proof_lookup(&name, answer.value.as_ref());
        if answer.value.is_some() {
            Answered::found(&body, answer.source)
        } else {
            Answered::not_found(&body, answer.source)
        }
    }

    async fn username_proofs_by_fid(&self, fid: u64) -> Result<Answered, ErrorData> {
        #[derive(Serialize)]
        struct Body<P> {
            fid: u64,
            count: usize,
            proofs: P,
        }
        let fid = params::fid("fid", fid)?;
        let answer = self
            .data
            .username_proofs_by_fid(fid)
            .await
            .map_err(query_error)?;
        let body = Body {
            fid,
            count: answer.value.len(),
            proofs: format::proofs(&answer.value),
        };
        Answered::found(&body, answer.source)
    }

    async fn text_search(
        &self,
        query: &str,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Answered, ErrorData> {
        #[derive(Serialize)]
        struct Body<'a, C> {
            query: &'a str,
            count: usize,
            casts: C,
            #[serde(skip_serializing_if = "Option::is_none")]
            next_cursor: Option<&'a str>,
        }
        let query = params::text("query", query)?;
        let page = params::page_after(limit, cursor)?;
        let answer = self
            .data
            .search_casts(query.clone(), page)
            .await
            .map_err(query_error)?;
        let items = &answer.value.items;
        let body = Body {
            query: &query,
            count: items.len(),
            casts: format::casts(items),
            next_cursor: answer.value.next_cursor.as_deref(),
        };
        Answered::found(&body, answer.source)
    }

    async fn following_feed(
        &self,
        fid: u64,
        limit: u32,
        cursor: Option<&str>,
    ) -> Result<Answered, ErrorData> {
        #[derive(Serialize)]
        struct Body<'a, C> {
            fid: u64,
            count: usize,
            casts: C,
            #[serde(skip_serializing_if = "Option::is_none")]
            next_cursor: Option<&'a str>,
        }
        let fid = params::fid("fid", fid)?;
        let page = params::page_after(limit, cursor)?;
        let answer = self
            .data
            .following_feed(fid, page)
            .await
            .map_err(query_error)?;
        let items = &answer.value.items;
        let body = Body {
            fid,
            count: items.len(),
            casts: format::casts(items),
            next_cursor: answer.value.next_cursor.as_deref(),
        };
        Answered::found(&body, answer.source)
    }

    /// Reads one `waypoint://` resource: the same answer as the tool it mirrors, with its
    /// defaults.
    async fn read_waypoint(&self, resource: Resource) -> Result<Answered, ErrorData> {
        let limit = RESOURCE_LIMIT;
        let all = TimeWindow::default();
        match resource {
            Resource::UserByFid { fid } => self.user_by_fid(fid).await,
            Resource::UserByUsername { username } => self.user_by_username(&username).await,
            Resource::VerificationsByFid { fid } => self.verifications_by_fid(fid, limit).await,
            Resource::Verification { fid, address } => self.verification(fid, &address).await,
            Resource::AllVerificationsByFid { fid } => {
                self.all_verifications_by_fid(fid, limit, all).await
            }
            Resource::Cast { fid, hash } => self.cast(fid, &hash).await,
            Resource::CastsByFid { fid } => self.casts_by_fid(fid, limit).await,
            Resource::CastsByMention { fid } => self.casts_by_mention(fid, limit).await,
            Resource::CastsByParent { fid, hash } => self.casts_by_parent(fid, &hash, limit).await,
            Resource::CastsByParentUrl { url } => self.casts_by_parent_url(&url, limit).await,
            Resource::Conversation { fid, hash } => {
                self.conversation(fid, &hash, RESOURCE_CONVERSATION).await
            }
            Resource::ReactionsByFid { fid } => self.reactions_by_fid(fid, None, limit).await,
            Resource::ReactionsByTargetCast { fid, hash } => {
                let target = params::reaction_target(Some(fid), Some(&hash), None)?;
                self.reactions_by_target(target, None, limit).await
            }
            Resource::ReactionsByTargetUrl { url } => {
                let target = params::reaction_target(None, None, Some(&url))?;
                self.reactions_by_target(target, None, limit).await
            }
            Resource::LinksByFid { fid } => {
                self.links_by_fid(fid, Some(DEFAULT_LINK_TYPE), limit).await
            }
            Resource::LinksByTarget { fid } => {
                self.links_by_target(fid, Some(DEFAULT_LINK_TYPE), limit)
                    .await
            }
            Resource::LinkCompactState { fid } => self.link_compact_state(fid).await,
            Resource::UsernameProofsByFid { fid } => self.username_proofs_by_fid(fid).await,
            Resource::UsernameProofByName { name } => self.username_proof(&name).await,
        }
    }
}

#[derive(Serialize)]
struct FidList<V> {
    fid: u64,
    count: usize,
    verifications: V,
}

#[derive(Serialize)]
struct ReactionList<R> {
    fid: u64,
    count: usize,
    reactions: R,
}

#[derive(Serialize)]
struct LinkList<L> {
    fid: u64,
    count: usize,
    links: L,
}

#[tool_router]
impl WaypointMcp {
    /// Get Farcaster user data by FID
    #[tool(annotations(read_only_hint = true))]
    async fn get_user_by_fid(
        &self,
        Parameters(args): Parameters<FidArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run("get_user_by_fid", self.user_by_fid(args.fid))
            .await
    }

    /// Get a complete Farcaster user profile by username
    #[tool(annotations(read_only_hint = true))]
    async fn get_user_by_username(
        &self,
        Parameters(args): Parameters<UsernameArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run(
            "get_user_by_username",
            self.user_by_username(&args.username),
        )
        .await
    }

    /// Find a Farcaster user's FID by their username
    #[tool(annotations(read_only_hint = true))]
    async fn get_fid_by_username(
        &self,
        Parameters(args): Parameters<UsernameArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run("get_fid_by_username", self.fid_by_username(&args.username))
            .await
    }

    /// Get verified addresses for a Farcaster user
    #[tool(annotations(read_only_hint = true))]
    async fn get_verifications_by_fid(
        &self,
        Parameters(args): Parameters<FidLimitArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run(
            "get_verifications_by_fid",
            self.verifications_by_fid(args.fid, args.limit),
        )
        .await
    }

    /// Get a specific verification by FID and address
    #[tool(annotations(read_only_hint = true))]
    async fn get_verification(
        &self,
        Parameters(args): Parameters<VerificationArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run(
            "get_verification",
            self.verification(args.fid, &args.address),
        )
        .await
    }

    /// Get all verification messages for a Farcaster user with optional timestamp filtering
    #[tool(annotations(read_only_hint = true))]
    async fn get_all_verification_messages_by_fid(
        &self,
        Parameters(args): Parameters<FidWindowArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run("get_all_verification_messages_by_fid", async {
            let window = params::window(args.start_time, args.end_time)?;
            self.all_verifications_by_fid(args.fid, args.limit, window)
                .await
        })
        .await
    }

    /// Get a specific cast by FID and hash
    #[tool(annotations(read_only_hint = true))]
    async fn get_cast(
        &self,
        Parameters(args): Parameters<CastArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run("get_cast", self.cast(args.fid, &args.hash)).await
    }

    /// Get casts by a specific Farcaster user, newest first
    #[tool(annotations(read_only_hint = true))]
    async fn get_casts_by_fid(
        &self,
        Parameters(args): Parameters<FidLimitArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run("get_casts_by_fid", self.casts_by_fid(args.fid, args.limit))
            .await
    }

    /// Get casts that mention a specific Farcaster user, newest first
    #[tool(annotations(read_only_hint = true))]
    async fn get_casts_by_mention(
        &self,
        Parameters(args): Parameters<FidLimitArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run(
            "get_casts_by_mention",
            self.casts_by_mention(args.fid, args.limit),
        )
        .await
    }

    /// Get cast replies to a specific parent cast
    #[tool(annotations(read_only_hint = true))]
    async fn get_casts_by_parent(
        &self,
        Parameters(args): Parameters<ParentArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run(
            "get_casts_by_parent",
            self.casts_by_parent(args.parent_fid, &args.parent_hash, args.limit),
        )
        .await
    }

    /// Get cast replies to a specific URL (a channel, a web page)
    #[tool(annotations(read_only_hint = true))]
    async fn get_casts_by_parent_url(
        &self,
        Parameters(args): Parameters<ParentUrlArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run(
            "get_casts_by_parent_url",
            self.casts_by_parent_url(&args.parent_url, args.limit),
        )
        .await
    }

    /// Get all casts from a user with optional timestamp filtering
    #[tool(annotations(read_only_hint = true))]
    async fn get_all_casts_by_fid(
        &self,
        Parameters(args): Parameters<FidWindowArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run("get_all_casts_by_fid", async {
            let window = params::window(args.start_time, args.end_time)?;
            self.all_casts_by_fid(args.fid, args.limit, window).await
        })
        .await
    }

    /// Get conversation details for a cast, including participants, parent casts, quoted casts and replies
    #[tool(annotations(read_only_hint = true))]
    async fn get_conversation(
        &self,
        Parameters(args): Parameters<ConversationArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let request = ConversationRequest {
            recursive: args.recursive,
            max_depth: args.max_depth,
            limit: args.limit,
        };
        self.run(
            "get_conversation",
            self.conversation(args.fid, &args.cast_hash, request),
        )
        .await
    }

    /// Get a specific reaction (like or recast) to a cast or URL
    #[tool(annotations(read_only_hint = true))]
    async fn get_reaction(
        &self,
        Parameters(args): Parameters<ReactionArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run("get_reaction", self.reaction(args)).await
    }

    /// Get reactions by a specific Farcaster user, newest first
    #[tool(annotations(read_only_hint = true))]
    async fn get_reactions_by_fid(
        &self,
        Parameters(args): Parameters<ReactionsByFidArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run(
            "get_reactions_by_fid",
            self.reactions_by_fid(args.fid, args.reaction_type, args.limit),
        )
        .await
    }

    /// Get reactions for a target (cast or URL), newest first
    #[tool(annotations(read_only_hint = true))]
    async fn get_reactions_by_target(
        &self,
        Parameters(args): Parameters<ReactionsByTargetArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run("get_reactions_by_target", async {
            params::optional_reaction_type(args.reaction_type)?;
            let target = params::reaction_target(
                args.target_cast_fid,
                args.target_cast_hash.as_deref(),
                args.target_url.as_deref(),
            )?;
            self.reactions_by_target(target, args.reaction_type, args.limit)
                .await
        })
        .await
    }

    /// Get all reactions from a user with optional timestamp filtering
    #[tool(annotations(read_only_hint = true))]
    async fn get_all_reactions_by_fid(
        &self,
        Parameters(args): Parameters<FidWindowArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run("get_all_reactions_by_fid", async {
            let window = params::window(args.start_time, args.end_time)?;
            self.all_reactions_by_fid(args.fid, args.limit, window)
                .await
        })
        .await
    }

    /// Get a specific link (by default: does fid follow target_fid?)
    #[tool(annotations(read_only_hint = true))]
    async fn get_link(
        &self,
        Parameters(args): Parameters<LinkArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run(
            "get_link",
            self.link(args.fid, &args.link_type, args.target_fid),
        )
        .await
    }

    /// Get links by a specific Farcaster user (who they follow), newest first
    #[tool(annotations(read_only_hint = true))]
    async fn get_links_by_fid(
        &self,
        Parameters(args): Parameters<LinksByFidArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run(
            "get_links_by_fid",
            self.links_by_fid(args.fid, args.link_type.as_deref(), args.limit),
        )
        .await
    }

    /// Get links to a target Farcaster user (their followers), newest first
    #[tool(annotations(read_only_hint = true))]
    async fn get_links_by_target(
        &self,
        Parameters(args): Parameters<LinksByTargetArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run(
            "get_links_by_target",
            self.links_by_target(args.target_fid, args.link_type.as_deref(), args.limit),
        )
        .await
    }

    /// Get link compact state messages for a Farcaster user
    #[tool(annotations(read_only_hint = true))]
    async fn get_link_compact_state_by_fid(
        &self,
        Parameters(args): Parameters<FidArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run(
            "get_link_compact_state_by_fid",
            self.link_compact_state(args.fid),
        )
        .await
    }

    /// Get all links from a user with optional timestamp filtering
    #[tool(annotations(read_only_hint = true))]
    async fn get_all_links_by_fid(
        &self,
        Parameters(args): Parameters<FidWindowArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run("get_all_links_by_fid", async {
            let window = params::window(args.start_time, args.end_time)?;
            self.all_links_by_fid(args.fid, args.limit, window).await
        })
        .await
    }

    /// Get a single username proof by name
    #[tool(annotations(read_only_hint = true))]
    async fn get_username_proof(
        &self,
        Parameters(args): Parameters<NameArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run("get_username_proof", self.username_proof(&args.name))
            .await
    }

    /// Get username proofs for a Farcaster user (fname, ENS and basename registrations)
    #[tool(annotations(read_only_hint = true))]
    async fn get_username_proofs_by_fid(
        &self,
        Parameters(args): Parameters<FidArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run(
            "get_username_proofs_by_fid",
            self.username_proofs_by_fid(args.fid),
        )
        .await
    }

    /// Search cast text (full-text, best match first; from the PostgreSQL replica)
    #[tool(annotations(read_only_hint = true))]
    async fn search_casts(
        &self,
        Parameters(args): Parameters<SearchArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run(
            "search_casts",
            self.text_search(&args.query, args.limit, args.cursor.as_deref()),
        )
        .await
    }

    /// Get the newest casts of the accounts a user follows (from the PostgreSQL replica)
    #[tool(annotations(read_only_hint = true))]
    async fn get_following_feed(
        &self,
        Parameters(args): Parameters<FeedArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        self.run(
            "get_following_feed",
            self.following_feed(args.fid, args.limit, args.cursor.as_deref()),
        )
        .await
    }
}

#[tool_handler(router = self.tools)]
impl ServerHandler for WaypointMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .enable_prompts()
                .build(),
        )
        .with_server_info(Implementation::new("waypoint", env!("CARGO_PKG_VERSION")))
        .with_instructions(
            "Waypoint answers read-only questions about Farcaster: profiles, casts, \
             conversations, reactions, follows, verifications and username proofs, by FID, \
             from a Snapchain hub or its PostgreSQL replica. Hashes are hex; lists hold at \
             most `limit` items (default 10), newest first.",
        )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let resources = resources::STATIC
            .iter()
            .map(|(uri, name, _)| McpResource::new(*uri, *name).with_mime_type("text/plain"))
            .collect();
        Ok(ListResourcesResult::with_all_items(resources))
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let templates = resources::TEMPLATES
            .iter()
            .map(|(template, name, description)| {
                ResourceTemplate::new(*template, *name)
                    .with_description(*description)
                    .with_mime_type("application/json")
            })
            .collect();
        Ok(ListResourceTemplatesResult::with_all_items(templates))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let uri = request.uri;
        if let Some((_, _, text)) = resources::STATIC.iter().find(|(known, _, _)| *known == uri) {
            return Ok(ReadResourceResult::new(vec![ResourceContents::text(*text, uri)]).into());
        }
        let Some(resource) = resources::parse(&uri)? else {
            return Err(ErrorData::resource_not_found(
                format!("Resource not found: {uri}"),
                Some(serde_json::json!({ "uri": uri })),
            ));
        };
        let started = Instant::now();
        let result = bounded("resource read", self.read_waypoint(resource)).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        let outcome = outcome_of(&result);
        match result {
            Ok(answer) => {
                let source = answer.source.map_or("none", Source::name);
                tracing::info!(%uri, source, outcome, elapsed_ms, "mcp resource read");
                let contents =
                    ResourceContents::text(answer.text, uri).with_mime_type("application/json");
                Ok(ReadResourceResult::new(vec![contents]).into())
            }
            Err(error) => {
                tracing::info!(%uri, outcome, elapsed_ms, error = %error.message, "mcp resource read failed");
                Err(error)
            }
        }
    }

    async fn list_prompts(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, ErrorData> {
        let arguments = vec![
            PromptArgument::new("fid")
                .with_description("The Farcaster ID to focus on")
                .with_required(true),
            PromptArgument::new("username")
                .with_description("The account's username, if known (e.g. alice or alice.eth)")
                .with_required(false),
        ];
        let prompt = Prompt::new(
            PROMPT_NAME,
            Some("Explore one Farcaster account's data with Waypoint's tools"),
            Some(arguments),
        );
        Ok(ListPromptsResult::with_all_items(vec![prompt]))
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, ErrorData> {
        if request.name != PROMPT_NAME {
            return Err(params::invalid(format!(
                "Unknown prompt: {} (this server has {PROMPT_NAME})",
                request.name
            )));
        }
        let arguments = request.arguments.unwrap_or_default();
        let fid = match arguments.get("fid") {
            Some(serde_json::Value::Number(number)) => number.as_u64(),
            Some(serde_json::Value::String(text)) => text.trim().parse::<u64>().ok(),
            None => return Err(params::invalid("Missing prompt argument: fid")),
            Some(_) => None,
        }
        .filter(|fid| *fid > 0)
        .ok_or_else(|| {
            params::invalid(format!(
                "Invalid fid: {} (expected a Farcaster ID, 1 or more)",
                arguments
                    .get("fid")
                    .map(|value| value.to_string())
                    .unwrap_or_default()
            ))
        })?;
        let username = match arguments.get("username") {
            Some(serde_json::Value::String(name)) if !name.trim().is_empty() => Some(name.trim()),
            _ => None,
        };
        Ok(GetPromptResult::new(vec![PromptMessage::new_text(
            Role::User,
            prompt_text(fid, username),
        )])
        .with_description("Explore one Farcaster account's data with Waypoint's tools")
        .into())
    }
}

fn prompt_text(fid: u64, username: Option<&str>) -> String {
    let who = match username {
        Some(name) => format!("the Farcaster account with FID {fid} (username: {name})"),
        None => format!("the Farcaster account with FID {fid}"),
    };
    format!(
        "Help me explore {who}. Use Waypoint's tools to look up its profile, casts, \
         conversations, reactions, follows and followers, verified addresses and username \
         proofs, and say which tool each fact came from."
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tool_list_is_the_compat_surface_plus_two() {
        let router = WaypointMcp::tool_router();
        let mut names: Vec<String> = router
            .list_all()
            .into_iter()
            .map(|tool| tool.name.to_string())
            .collect();
        names.sort();
        assert_eq!(names.len(), 26);
        assert!(names.contains(&"get_conversation".to_owned()));
        assert!(names.contains(&"search_casts".to_owned()));
        for tool in router.list_all() {
            assert!(
                tool.description.is_some(),
                "{} has a description",
                tool.name
            );
        }
    }

    #[test]
    fn the_prompt_names_the_fid_and_the_username() {
        assert!(prompt_text(3, Some("alice.eth")).contains("FID 3 (username: alice.eth)"));
        assert!(!prompt_text(3, None).contains("username:"));
    }

    #[test]
    fn unavailable_is_an_internal_error_and_bad_input_invalid_params() {
        let error = query_error(QueryError::Unavailable {
            message: "hub: down".into(),
        });
        assert_eq!(error.code, ErrorCode::INTERNAL_ERROR);
        assert!(error.message.contains("hub: down"));
        let error = query_error(QueryError::invalid("cursor", "not a cursor"));
        assert_eq!(error.code, ErrorCode::INVALID_PARAMS);
        assert_eq!(error.message, "Invalid cursor: not a cursor");
    }
}
