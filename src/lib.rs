//! Waypoint: keeps a PostgreSQL replica of the Farcaster network in sync with a Snapchain node
//! via Redis Streams, and serves it over REST and MCP.

pub mod config;
pub mod logging;
pub mod metrics;
