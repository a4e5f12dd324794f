//! Errors of talking to a hub.

use tonic::Code;

/// What went wrong with a hub call.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The client options cannot be used (names the field).
    #[error("hub.{field}: {message}")]
    InvalidOption {
        field: &'static str,
        message: String,
    },
    /// The connection failed or dropped.
    #[error("hub {method}: transport error: {message}")]
    Transport {
        method: &'static str,
        message: String,
    },
    /// The hub answered with an error status.
    #[error("hub {method}: {code:?}: {message}")]
    Status {
        method: &'static str,
        code: Code,
        message: String,
    },
    /// No answer within the call's deadline.
    #[error("hub {method}: no answer within {seconds}s")]
    Deadline { method: &'static str, seconds: u64 },
    /// A reply larger than the receive limit (`hub.max_message_size_mib`).
    #[error("hub {method}: reply larger than the {limit} byte receive limit: {message}")]
    TooLarge {
        method: &'static str,
        limit: usize,
        message: String,
    },
    /// Bytes that are not the expected protobuf message.
    #[error("cannot decode {what}: {message}")]
    Decode { what: &'static str, message: String },
    /// An answer that breaks the protocol's rules (a page token that does not move).
    #[error("hub {method}: {message}")]
    Protocol {
        method: &'static str,
        message: String,
    },
}

impl HubError {
    /// Transient failures: unavailable, deadline exceeded, resource exhausted, a dropped
    /// connection. Never invalid arguments, not found, or anything about the request itself.
    pub fn is_retryable(&self) -> bool {
        match self {
            HubError::Transport { .. } | HubError::Deadline { .. } => true,
            HubError::Status { code, .. } => is_retryable_code(*code),
            HubError::InvalidOption { .. }
            | HubError::TooLarge { .. }
            | HubError::Decode { .. }
            | HubError::Protocol { .. } => false,
        }
    }

    /// The hub (or what stands in front of it) says it cannot take more: RESOURCE_EXHAUSTED,
    /// UNAVAILABLE, an answer that did not come in time, or a connection that failed or
    /// dropped. The request rate goes down.
    pub fn is_overload(&self) -> bool {
        match self {
            HubError::Transport { .. } | HubError::Deadline { .. } => true,
            HubError::Status { code, .. } => matches!(
                code,
                Code::ResourceExhausted | Code::Unavailable | Code::DeadlineExceeded
            ),
            _ => false,
        }
    }

    /// The hub answered (an error about the request itself, such as NOT_FOUND), so it is
    /// not overloaded.
    pub fn is_answer(&self) -> bool {
        matches!(self, HubError::Status { .. } | HubError::TooLarge { .. }) && !self.is_overload()
    }

    /// The gRPC code, as a bounded metric label.
    pub fn code_label(&self) -> &'static str {
        match self {
            HubError::InvalidOption { .. } => "invalid_option",
            HubError::Transport { .. } => "transport",
            HubError::Deadline { .. } => "deadline_exceeded",
            HubError::TooLarge { .. } => "too_large",
            HubError::Decode { .. } => "decode",
            HubError::Protocol { .. } => "protocol",
            HubError::Status { code, .. } => code_name(*code),
        }
    }

    /// Classifies a status returned by tonic for `method`.
    pub(crate) fn from_status(
        method: &'static str,
        status: tonic::Status,
        limit: usize,
    ) -> HubError {
        let message = status.message().to_owned();
        let source = std::error::Error::source(&status).map(ToString::to_string);
        if status.code() == Code::OutOfRange
            || (status.code() == Code::ResourceExhausted
                && message.contains("message length too large"))
        {
            return HubError::TooLarge {
                method,
                limit,
                message,
            };
        }
        // tonic reports connection problems (refused, reset, a peer that does not speak
        // HTTP/2) as Unavailable, Unknown or Cancelled with a transport error as the source.
        if matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        ) && source.is_some()
        {
            return HubError::Transport {
                method,
                message: format!("{message}: {}", source.unwrap_or_default()),
            };
        }
        HubError::Status {
            method,
            code: status.code(),
            message,
        }
    }
}

/// Codes worth retrying.
pub fn is_retryable_code(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted
    )
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transient_codes_are_retried() {
        for code in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
        ] {
            assert!(is_retryable_code(code), "{code:?}");
        }
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::Internal,
            Code::Unknown,
            Code::PermissionDenied,
            Code::Unauthenticated,
        ] {
            assert!(!is_retryable_code(code), "{code:?}");
        }
        let error = HubError::Status {
            method: "GetCast",
            code: Code::NotFound,
            message: "no cast".into(),
        };
        assert!(!error.is_retryable());
        assert_eq!(error.code_label(), "not_found");
    }
}
