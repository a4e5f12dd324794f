//! The client side of Snapchain: protocol helpers, the gRPC client and message verification.
//! The server side (the dev hub) is `crate::devhub`.

mod client;
mod codec;
mod error;
pub mod ids;
mod limit;
pub mod verify;

use std::time::Duration;

pub use client::{Client, ClientOptions, FidMessages, RawEventStream, RetryPolicy, decode_event};
pub use error::{HubError, is_retryable_code};

use crate::config::HubConfig;

/// The client options for `hub.*` settings.
pub fn options_from_config(config: &HubConfig) -> ClientOptions {
    // Config validation has already checked the URL; an invalid one becomes an invalid-uri
    // error from `Client::new`, which names the field.
    let (uri, tls) = match config.endpoint() {
        Ok(endpoint) => (endpoint.uri, endpoint.tls),
        Err(_) => (config.url.clone(), false),
    };
    ClientOptions {
        uri,
        tls,
        headers: config
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect(),
        request_timeout: config.request_timeout(),
        connect_timeout: config.connect_timeout(),
        max_message_size: config.max_message_size_bytes(),
        retry: RetryPolicy {
            initial: Duration::from_millis(config.retry_initial_ms),
            max: Duration::from_millis(config.retry_max_ms),
            max_attempts: config.retry_max_attempts,
        },
        max_concurrent_requests: usize::try_from(config.max_concurrent_requests)
            .unwrap_or(usize::MAX),
        max_requests_per_second: config.request_rate_ceiling(),
    }
}
