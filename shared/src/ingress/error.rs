use crate::ports::{QueueError, StoreError};
use crate::sources::Rejection;

/// Why the ingress did not take a request. Client errors store nothing; server errors mean the
/// provider should retry.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("no such source")]
    UnknownSource,
    #[error("only POST is accepted")]
    MethodNotAllowed,
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the content type must be JSON")]
    UnsupportedMediaType,
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error("the event store failed")]
    Store(#[from] StoreError),
    #[error("the delivery queue failed")]
    Queue(#[from] QueueError),
}

impl IngressError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::UnknownSource => 404,
            Self::MethodNotAllowed => 405,
            Self::TooLarge { .. } => 413,
            Self::UnsupportedMediaType => 415,
            Self::Rejected(r) if r.is_unauthorized() => 401,
            Self::Rejected(_) => 400,
            Self::Store(_) | Self::Queue(_) => 503,
        }
    }

    pub fn is_client_error(&self) -> bool {
        self.status() < 500
    }

    /// Whether the sender should try again later: exactly when plumbline itself failed.
    pub fn is_retryable(&self) -> bool {
        !self.is_client_error()
    }

    /// A stable label for metrics and the answer's `error` field.
    pub fn label(&self) -> &'static str {
        match self {
            Self::UnknownSource => "unknown_source",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::TooLarge { .. } => "too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Rejected(r) => r.label(),
            Self::Store(_) => "store_unavailable",
            Self::Queue(_) => "queue_unavailable",
        }
    }

    /// What the sender is told. Never internal detail: server errors say only to retry.
    pub fn public_message(&self) -> String {
        match self {
            Self::Store(_) | Self::Queue(_) => {
                "temporarily unable to record the event; retry later".into()
            }
            other => other.to_string(),
        }
    }
}
