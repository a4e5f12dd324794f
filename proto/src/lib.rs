//! Snapchain wire definitions: a hand-written subset of the node's protobuf API
//! (`definitions/*.proto`) and the tonic client and server generated from it.
//!
//! The definitions have no `package`, as on the node, so gRPC paths are
//! `/HubService/<Method>` and everything sits at the crate root:
//! `waypoint_proto::Message`, `waypoint_proto::hub_service_client::HubServiceClient`,
//! `waypoint_proto::hub_service_server::{HubService, HubServiceServer}`.
//!
//! Enum fields are plain `i32` in the generated structs (prost's choice), so values this
//! subset does not name still decode; use `MessageType::try_from(i32)` and handle `Err`.

mod generated {
    #![allow(clippy::all, clippy::pedantic)]
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

pub use generated::*;

#[cfg(test)]
mod tests;
