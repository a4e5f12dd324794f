//! The query layer: one set of read queries over Farcaster data, answered by the hub or by
//! PostgreSQL according to `query.source`, in one shape whichever answered (`model`).
//!
//! ```text
//! REST (/api/v1) ─┐                    ┌─ hub::HubReader  (gRPC, its own short deadline, no retries)
//!                 ├─ DataContext ──────┤      behind a circuit breaker
//! MCP (/mcp) ─────┘   source policy    └─ db::DbReader    (PostgreSQL, the replica's live rows)
//! ```
//!
//! Both readers have the same methods with the same meaning; [`DataContext`] picks one and, in
//! the `*-first` policies, falls back to the other when the first fails (an error or a
//! timeout — not a "not found", which is an answer). A hub that keeps failing opens the
//! breaker: requests go to the database at once, and one request at a time probes the hub
//! again after the open interval. Nothing here takes a lock across an await, so concurrent
//! requests never queue behind one another.
//!
//! Queries only PostgreSQL can answer (follower counts, the following feed, text search) go
//! to the database whatever the policy.

pub mod breaker;
pub mod conversation;
pub mod cursor;
pub mod db;
pub mod hub;
pub mod model;

use std::future::Future;
use std::sync::Arc;

pub use crate::config::SourcePolicy;
use crate::hub::HubError;
use crate::metrics::{
    LABEL_QUERY, LABEL_SOURCE, QUERY_ANSWERS_TOTAL, QUERY_FALLBACKS_TOTAL, QUERY_UNAVAILABLE_TOTAL,
};
use crate::store::StoreError;
pub use breaker::Breaker;
pub use model::*;

/// Why one source could not answer.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Database(#[from] StoreError),
    /// The hub answered something that cannot be turned into an item (names what).
    #[error("the hub's answer cannot be used: {0}")]
    BadAnswer(String),
    /// The cursor cannot be continued by this source (a database cursor has no hub page
    /// token); the other source may continue it.
    #[error("this cursor continues on the other source")]
    CursorElsewhere,
}

/// Why a query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A parameter is wrong (names it).
    #[error("{param}: {message}")]
    InvalidInput {
        param: &'static str,
        message: String,
    },
    /// No source could answer; `message` says what each one did.
    #[error("no source can answer: {message}")]
    Unavailable { message: String },
}

impl QueryError {
    pub fn invalid(param: &'static str, message: impl Into<String>) -> QueryError {
        QueryError::InvalidInput {
            param,
            message: message.into(),
        }
    }
}

/// The query layer; cheap to clone.
#[derive(Clone)]
pub struct DataContext {
    inner: Arc<Inner>,
}

struct Inner {
    policy: SourcePolicy,
    hub: Option<hub::HubReader>,
    db: Option<db::DbReader>,
    breaker: Breaker,
}

impl DataContext {
    /// A query layer over the sources this process has (either may be absent: a process
    /// without a database answers from the hub only, and the other way round).
    pub fn new(
        policy: SourcePolicy,
        hub: Option<hub::HubReader>,
        db: Option<db::DbReader>,
        breaker: Breaker,
    ) -> DataContext {
        DataContext {
            inner: Arc::new(Inner {
                policy,
                hub,
                db,
                breaker,
            }),
        }
    }

    pub fn policy(&self) -> SourcePolicy {
        self.inner.policy
    }

    pub fn breaker(&self) -> &Breaker {
        &self.inner.breaker
    }

    /// The database reader, for the queries only PostgreSQL can answer.
    fn database(&self) -> Result<&db::DbReader, QueryError> {
        self.inner
            .db
            .as_ref()
            .ok_or_else(|| QueryError::Unavailable {
                message: "this query needs the database, and this process has none configured"
                    .into(),
            })
    }

    /// Runs a query on the sources of the policy, in order, until one answers.
    async fn route<T, FH, H, FD, D>(
        &self,
        query: &'static str,
        on_hub: FH,
        on_db: FD,
    ) -> Result<Answer<T>, QueryError>
    where
        FH: FnOnce(hub::HubReader) -> H,
        H: Future<Output = Result<T, SourceError>>,
        FD: FnOnce(db::DbReader) -> D,
        D: Future<Output = Result<T, SourceError>>,
    {
        let mut on_hub = Some(on_hub);
        let mut on_db = Some(on_db);
        let mut failures: Vec<String> = Vec::new();
        // Sources asked, and those that could not read the cursor.
        let (mut asked, mut refused_cursor) = (0, 0);
        for source in order(self.inner.policy) {
            match source {
                Source::Hub => {
                    let (Some(reader), Some(run)) = (self.inner.hub.clone(), on_hub.take()) else {
                        failures.push("hub: not configured".into());
                        continue;
                    };
                    let Some(permit) = self.inner.breaker.permit() else {
                        failures.push("hub: failing (circuit open)".into());
                        continue;
                    };
                    asked += 1;
                    match run(reader).await {
                        Ok(value) => {
                            permit.succeeded();
                            answered(query, Source::Hub);
                            return Ok(Answer {
                                value,
                                source: Source::Hub,
                            });
                        }
                        Err(SourceError::CursorElsewhere) => {
                            refused_cursor += 1;
                            permit.neutral();
                            failures.push("hub: the cursor is the database's".into());
                        }
                        Err(error) => {
                            permit.failed();
                            fell_back(query, Source::Hub);
                            tracing::debug!(query, %error, "hub could not answer");
                            failures.push(format!("hub: {error}"));
                        }
                    }
                }
                Source::Database => {
                    let (Some(reader), Some(run)) = (self.inner.db.clone(), on_db.take()) else {
                        failures.push("database: not configured".into());
                        continue;
                    };
                    asked += 1;
                    match run(reader).await {
                        Ok(value) => {
                            answered(query, Source::Database);
                            return Ok(Answer {
                                value,
                                source: Source::Database,
                            });
                        }
                        Err(SourceError::CursorElsewhere) => {
                            refused_cursor += 1;
                            failures.push("database: the cursor is the hub's".into());
                        }
                        Err(error) => {
                            fell_back(query, Source::Database);
                            tracing::debug!(query, %error, "database could not answer");
                            failures.push(format!("database: {error}"));
                        }
                    }
                }
            }
        }
        // Every source that was asked could read the request but not its cursor: the cursor
        // is the problem (not from this list, or from a source this process lacks), not an
        // outage.
        if asked > 0 && refused_cursor == asked {
            return Err(QueryError::invalid(
                "cursor",
                format!("cannot be continued here ({})", failures.join("; ")),
            ));
        }
        metrics::counter!(QUERY_UNAVAILABLE_TOTAL, LABEL_QUERY => query).increment(1);
        Err(QueryError::Unavailable {
            message: failures.join("; "),
        })
    }
}

/// The sources a policy tries, in order.
fn order(policy: SourcePolicy) -> &'static [Source] {
    match policy {
        SourcePolicy::HubFirst => &[Source::Hub, Source::Database],
        SourcePolicy::DbFirst => &[Source::Database, Source::Hub],
        SourcePolicy::DbOnly => &[Source::Database],
        SourcePolicy::HubOnly => &[Source::Hub],
    }
}

fn answered(query: &'static str, source: Source) {
    metrics::counter!(QUERY_ANSWERS_TOTAL, LABEL_QUERY => query, LABEL_SOURCE => source.name())
        .increment(1);
}

fn fell_back(query: &'static str, source: Source) {
    metrics::counter!(QUERY_FALLBACKS_TOTAL, LABEL_QUERY => query, LABEL_SOURCE => source.name())
        .increment(1);
}

/// Defines the routed queries: each is a method of both readers with the same arguments and
/// meaning, and a method of [`DataContext`] that routes it.
macro_rules! routed_queries {
    ($(
        $(#[$doc:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty;
    )*) => {
        impl DataContext {
            $(
                $(#[$doc])*
                pub async fn $name(&self, $($arg: $ty),*) -> Result<Answer<$ret>, QueryError> {
                    let on_hub = {
                        $(let $arg = $arg.clone();)*
                        move |reader: hub::HubReader| async move { reader.$name($($arg),*).await }
                    };
                    let on_db = move |reader: db::DbReader| async move { reader.$name($($arg),*).await };
                    self.route(stringify!($name), on_hub, on_db).await
                }
            )*
        }
    };
}

routed_queries! {
    /// The fid whose username (fname or ENS name) is `name`.
    fn fid_by_username(name: String) -> Option<u64>;
    /// A live cast.
    fn cast(fid: u64, hash: Vec<u8>) -> Option<Cast>;
    /// A fid's live casts, newest first.
    fn casts_by_fid(fid: u64, page: PageRequest) -> Page<Cast>;
    /// Live casts that mention `fid`, newest first.
    fn casts_by_mention(fid: u64, page: PageRequest) -> Page<Cast>;
    /// Live replies to a cast, newest first.
    fn casts_by_parent(fid: u64, hash: Vec<u8>, page: PageRequest) -> Page<Cast>;
    /// Live casts whose parent is `url`, newest first.
    fn casts_by_parent_url(url: String, page: PageRequest) -> Page<Cast>;
    /// A fid's live casts with timestamps in the window, newest first.
    fn casts_by_fid_in_window(fid: u64, window: TimeWindow, page: PageRequest) -> Page<Cast>;
    /// A live reaction of `fid` to a target.
    fn reaction(fid: u64, reaction_type: ReactionType, target: CastTarget) -> Option<Reaction>;
    /// A fid's live reactions (of one type, or all), newest first.
    fn reactions_by_fid(fid: u64, reaction_type: Option<ReactionType>, page: PageRequest) -> Page<Reaction>;
    /// Live reactions to a cast or URL (of one type, or all), newest first.
    fn reactions_by_target(target: CastTarget, reaction_type: Option<ReactionType>, page: PageRequest) -> Page<Reaction>;
    /// A fid's live reactions with timestamps in the window, newest first.
    fn reactions_by_fid_in_window(fid: u64, window: TimeWindow, page: PageRequest) -> Page<Reaction>;
    /// A live link.
    fn link(fid: u64, link_type: String, target_fid: u64) -> Option<Link>;
    /// A fid's live links (of one type, or all), newest first.
    fn links_by_fid(fid: u64, link_type: Option<String>, page: PageRequest) -> Page<Link>;
    /// Live links to `target_fid` (its followers, for `follow`), newest first.
    fn links_by_target(target_fid: u64, link_type: Option<String>, page: PageRequest) -> Page<Link>;
    /// A fid's live links with timestamps in the window, newest first.
    fn links_by_fid_in_window(fid: u64, window: TimeWindow, page: PageRequest) -> Page<Link>;
    /// A fid's link compact states (one per link type it compacted).
    fn link_compact_state(fid: u64) -> Vec<LinkCompactState>;
    /// A fid's live verified addresses, newest first.
    fn verifications_by_fid(fid: u64, page: PageRequest) -> Page<Verification>;
    /// One live verification by address (`0x…` hex or base58, as `Verification::address`).
    fn verification(fid: u64, address: String) -> Option<Verification>;
    /// A fid's live verifications with timestamps in the window, newest first.
    fn verifications_by_fid_in_window(fid: u64, window: TimeWindow, page: PageRequest) -> Page<Verification>;
    /// A fid's live username proofs, by name.
    fn username_proofs_by_fid(fid: u64) -> Vec<UsernameProof>;
    /// The live proof of a name.
    fn username_proof(name: String) -> Option<UsernameProof>;
    /// A fid's on-chain events (of one type, or all), newest first.
    fn onchain_events(fid: u64, event_type: Option<i32>, page: PageRequest) -> Page<OnChainEvent>;
}

impl DataContext {
    /// A profile by fid; `None` when the fid has no user data and no username proof. The
    /// follower and following counts come from the database whichever source answered the
    /// rest (absent when the database cannot be reached).
    pub async fn profile(&self, fid: u64) -> Result<Answer<Option<Profile>>, QueryError> {
        let mut answer = self
            .route(
                "profile",
                move |reader: hub::HubReader| async move { reader.profile(fid).await },
                move |reader: db::DbReader| async move { reader.profile(fid).await },
            )
            .await?;
        if answer.source == Source::Hub
            && let Some(profile) = answer.value.as_mut()
            && let Some(db) = &self.inner.db
        {
            match db.follow_counts(fid).await {
                Ok((followers, following)) => {
                    profile.follower_count = Some(followers);
                    profile.following_count = Some(following);
                }
                Err(error) => tracing::debug!(fid, %error, "no follow counts"),
            }
        }
        Ok(answer)
    }

    /// A profile by username: the fid of the name, then its profile.
    pub async fn profile_by_username(
        &self,
        name: String,
    ) -> Result<Answer<Option<Profile>>, QueryError> {
        let fid = self.fid_by_username(name).await?;
        match fid.value {
            Some(fid) => self.profile(fid).await,
            None => Ok(Answer {
                value: None,
                source: fid.source,
            }),
        }
    }

    /// Newest live casts of the accounts `fid` follows (PostgreSQL only).
    pub async fn following_feed(
        &self,
        fid: u64,
        page: PageRequest,
    ) -> Result<Answer<Page<Cast>>, QueryError> {
        let value = self
            .database()?
            .following_feed(fid, page)
            .await
            .map_err(database_unavailable)?;
        Ok(Answer {
            value,
            source: Source::Database,
        })
    }

    /// Full-text search over live casts' text, best match first (PostgreSQL only).
    pub async fn search_casts(
        &self,
        query: String,
        page: PageRequest,
    ) -> Result<Answer<Page<Cast>>, QueryError> {
        let value = self
            .database()?
            .search_casts(query, page)
            .await
            .map_err(database_unavailable)?;
        Ok(Answer {
            value,
            source: Source::Database,
        })
    }
}

fn database_unavailable(error: SourceError) -> QueryError {
    QueryError::Unavailable {
        message: format!("database: {error}"),
    }
}
