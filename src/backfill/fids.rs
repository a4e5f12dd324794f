//! Which FIDs exist: every registered FID from `GetFids` (per data shard, paged), and whether
//! one given FID is registered. Used by `backfill fid queue`, `start --backfill` and the
//! retention markers.

use futures::StreamExt;
use waypoint_proto::{IdRegisterEventType, OnChainEventType, on_chain_event};

use crate::hub::{self, HubError};

/// FIDs per `GetFids` page.
const FIDS_PAGE_SIZE: u32 = 1_000;

/// The FIDs registered on `shards`, ascending, at most `max_fid` when given.
pub async fn registered(
    hub: &hub::Client,
    shards: &[u32],
    max_fid: Option<u64>,
) -> Result<Vec<u64>, HubError> {
    let mut fids = Vec::new();
    for &shard in shards {
        let mut pages = hub.fids_pages(shard, FIDS_PAGE_SIZE);
        while let Some(page) = pages.next().await {
            let page = page?;
            // Pages come back ascending: past the limit, the rest of the shard is too.
            let past_limit = max_fid.is_some_and(|max| page.last().is_some_and(|last| *last > max));
            fids.extend(
                page.into_iter()
                    .filter(|fid| max_fid.is_none_or(|max| *fid <= max)),
            );
            if past_limit {
                break;
            }
        }
    }
    fids.sort_unstable();
    fids.dedup();
    Ok(fids)
}

/// Every FID registered on the hub (all its data shards).
pub async fn all_registered(hub: &hub::Client, max_fid: Option<u64>) -> Result<Vec<u64>, HubError> {
    let shards = hub.data_shards().await?;
    registered(hub, &shards, max_fid).await
}

/// Whether the hub knows `fid` as registered (an ID_REGISTER event of type REGISTER).
pub async fn is_registered(hub: &hub::Client, fid: u64) -> Result<bool, HubError> {
    match hub
        .onchain_events(fid, OnChainEventType::IdRegister as i32)
        .await
    {
        Ok(response) => Ok(response.events.iter().any(|event| {
            matches!(
                event.body.as_ref(),
                Some(on_chain_event::Body::IdRegisterEventBody(body))
                    if body.event_type == IdRegisterEventType::Register as i32
            )
        })),
        Err(HubError::Status {
            code: tonic::Code::NotFound,
            ..
        }) => Ok(false),
        Err(error) => Err(error),
    }
}
