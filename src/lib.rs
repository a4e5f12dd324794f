//! Waypoint: a PostgreSQL replica of the Farcaster network, fed from a Snapchain node.

pub mod hub;
pub mod replica;
