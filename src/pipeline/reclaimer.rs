//! `reclaimer`: takes over entries that stayed pending too long (their consumer crashed or is
//! stuck) and hands them back to a consumer of their type; entries delivered
//! `stream.max_deliveries` times go to the dead-letter stream with their last error instead.
//! It also trims what every group has acknowledged (never more) and reports pending entries
//! and lag per stream.

use std::collections::BTreeMap;
use std::time::Duration;

use waypoint_actors::{Actor, ActorError, Context, Mailbox};

use super::consumer;
use crate::metrics::{
    LABEL_REASON, LABEL_STREAM, STREAM_DEAD_LETTERED_ENTRIES_TOTAL, STREAM_LAG_ENTRIES,
    STREAM_PENDING_ENTRIES,
};
use crate::runtime::Runtime;
use crate::streams::StreamType;

/// Entries claimed per stream per round.
const CLAIM_COUNT: usize = 500;
/// How long handing entries to a busy consumer may wait.
const HAND_BACK_TIMEOUT: Duration = Duration::from_secs(5);

pub enum Msg {
    /// One round over every stream (timer).
    Tick,
}

/// The reclaimer of this process's consumer group members.
pub struct Reclaimer {
    pub runtime: Runtime,
    /// The first consumer of each type, which gets the redelivered entries.
    pub consumers: BTreeMap<StreamType, Mailbox<consumer::Msg>>,
}

impl Actor for Reclaimer {
    type Msg = Msg;
    type State = ();
    type Args = ();

    async fn init(&self, ctx: &Context<Msg>, _args: ()) -> Result<(), ActorError> {
        ctx.send_self_after(self.interval(), Msg::Tick);
        Ok(())
    }

    async fn handle(
        &self,
        ctx: &Context<Msg>,
        msg: Msg,
        _state: &mut (),
    ) -> Result<(), ActorError> {
        match msg {
            Msg::Tick => {
                for (kind, consumer) in &self.consumers {
                    if let Err(error) = self.round(*kind, consumer).await {
                        tracing::warn!(stream = %kind, %error, "reclaim round failed");
                    }
                }
                ctx.send_self_after(self.interval(), Msg::Tick);
                Ok(())
            }
        }
    }
}

impl Reclaimer {
    fn interval(&self) -> Duration {
        Duration::from_millis(self.runtime.config().stream.reclaim_interval_ms)
    }

    async fn round(
        &self,
        kind: StreamType,
        consumer: &Mailbox<consumer::Msg>,
    ) -> Result<(), ActorError> {
        let config = self.runtime.config();
        let redis = self.runtime.redis();
        let group = &config.stream.group;
        let claimer = format!("{}:reclaimer", self.runtime.instance());
        let claimed = redis
            .claim_stale(
                kind,
                group,
                &claimer,
                config.stream.claim_idle_ms,
                CLAIM_COUNT,
                u64::from(config.stream.max_deliveries),
            )
            .await?;
        for entry in &claimed.dead {
            let reason = match redis.recorded_error(kind, &entry.id).await? {
                Some(error) => format!(
                    "failed {} deliveries: {error}",
                    entry.deliveries.unwrap_or_default().saturating_sub(1)
                ),
                None => format!(
                    "not acknowledged after {} deliveries",
                    entry.deliveries.unwrap_or_default().saturating_sub(1)
                ),
            };
            tracing::warn!(stream = %kind, id = %entry.id, reason, "dead-lettering entry");
            redis.dead_letter(kind, group, entry, &reason).await?;
            metrics::counter!(STREAM_DEAD_LETTERED_ENTRIES_TOTAL, LABEL_STREAM => kind.as_str(), LABEL_REASON => "max_deliveries")
                .increment(1);
        }
        if !claimed.redeliver.is_empty() {
            tracing::info!(stream = %kind, entries = claimed.redeliver.len(), "redelivering stale entries");
            let handed = tokio::time::timeout(
                HAND_BACK_TIMEOUT,
                consumer.send(consumer::Msg::Reclaimed {
                    entries: claimed.redeliver,
                }),
            )
            .await;
            if !matches!(handed, Ok(Ok(()))) {
                // They stay pending under the reclaimer and come back next round.
                tracing::warn!(stream = %kind, "consumer busy or restarting, entries wait for the next round");
            }
        }
        redis.trim_acknowledged(kind).await?;
        let pending = redis.pending(kind, group).await?;
        let backlog = redis.backlog(kind, group).await?;
        metrics::gauge!(STREAM_PENDING_ENTRIES, LABEL_STREAM => kind.as_str()).set(pending as f64);
        metrics::gauge!(STREAM_LAG_ENTRIES, LABEL_STREAM => kind.as_str())
            .set(backlog.saturating_sub(pending) as f64);
        Ok(())
    }
}
