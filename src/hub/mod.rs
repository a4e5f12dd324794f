//! The Snapchain side: protocol helpers, the gRPC client, message verification and the dev hub.

pub mod devhub;
pub mod ids;
