//! `spam`: loads the spam label lists (`crate::spam`) when it starts and refreshes them every
//! `spam.refresh_interval_seconds`. It sits at the root of the tree, before `produce` and
//! `backfill`, so the lists are loaded before any subscriber or backfill worker reads a
//! message.

use std::time::Duration;

use waypoint_actors::{Actor, ActorError, Context};

use crate::runtime::Runtime;

/// After a failed load, the next try comes this soon (or at the refresh interval if sooner).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

pub enum Msg {
    /// Re-read the sources (timer).
    Refresh,
}

/// `spam`: loads the label lists at start and refreshes them every
/// `spam.refresh_interval_seconds`.
pub struct SpamRefresher {
    pub runtime: Runtime,
}

impl Actor for SpamRefresher {
    type Msg = Msg;
    type State = ();
    type Args = ();

    /// Loads the lists before the subscribers and backfill workers start (this worker starts
    /// before their subtrees), so no message of a labelled fid slips through at start-up. A source that
    /// cannot be read does not hold the start: the filter starts with what it has (nothing,
    /// on a first start) and the load is retried sooner.
    async fn init(&self, ctx: &Context<Msg>, _args: ()) -> Result<(), ActorError> {
        self.refresh_and_schedule(ctx).await;
        Ok(())
    }

    async fn handle(
        &self,
        ctx: &Context<Msg>,
        msg: Msg,
        _state: &mut (),
    ) -> Result<(), ActorError> {
        match msg {
            Msg::Refresh => self.refresh_and_schedule(ctx).await,
        }
        Ok(())
    }
}

impl SpamRefresher {
    async fn refresh_and_schedule(&self, ctx: &Context<Msg>) {
        let config = self.runtime.config();
        if config.spam.sources.is_empty() {
            return;
        }
        let interval = Duration::from_secs(config.spam.refresh_interval_seconds);
        let next = if refresh(&self.runtime).await {
            interval
        } else {
            interval.min(RETRY_AFTER_FAILURE)
        };
        ctx.send_self_after(next, Msg::Refresh);
    }
}

/// Reloads the configured sources now (start, timer, SIGHUP), logging the outcome; false when
/// a source could not be read (the list in use is kept).
pub async fn refresh(runtime: &Runtime) -> bool {
    let sources = runtime.config().spam.sources.clone();
    match runtime.spam().reload(&sources).await {
        Ok(count) if sources.is_empty() => {
            debug_assert_eq!(count, 0);
            tracing::info!("spam filter off: no spam.sources configured");
            true
        }
        Ok(count) => {
            tracing::info!(fids = count, sources = sources.len(), "spam labels loaded");
            true
        }
        Err(error) => {
            tracing::warn!(%error, kept = runtime.spam().len(), "spam labels not refreshed");
            false
        }
    }
}
