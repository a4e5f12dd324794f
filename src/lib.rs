//! Waypoint: keeps a PostgreSQL replica of the Farcaster network in sync with a Snapchain node
//! via Redis Streams, and serves it over REST and MCP.

pub mod api;
pub mod backfill;
pub mod cli;
pub mod config;
pub mod devhub;
pub mod hub;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod query;
pub mod replica;
pub mod runtime;
pub mod service;
pub mod spam;
pub(crate) mod startup;
pub mod store;
pub mod streams;
pub mod supervision;
