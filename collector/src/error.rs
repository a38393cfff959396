//! Every way a request can fail, and the one place that turns a failure into HTTP.
//!
//! A client always gets `{"error": "snake_case_code", "message": "…"}`. Server faults
//! answer with a generic sentence and an incident id; their detail goes to the log only.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use ebb_protocol::decode::DecodeError;
use ebb_protocol::{Rejection, MAX_MESSAGE_BYTES};
use serde::Serialize;

/// Result of collector operations.
pub type Result<T, E = ApiError> = std::result::Result<T, E>;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No write key in the `Authorization` header nor in the body.
    #[error("send the write key as the HTTP Basic user name or as `writeKey` in the body")]
    MissingWriteKey,
    /// The write key names no environment.
    #[error("the write key is not valid for any environment")]
    InvalidWriteKey,
    /// No bearer token on an admin route.
    #[error("send an admin token as `Authorization: Bearer <token>`")]
    MissingAdminToken,
    /// The bearer token is unknown.
    #[error("the admin token is not valid")]
    InvalidAdminToken,
    /// The token is valid but not for this environment.
    #[error("the admin token has no access to this environment")]
    Forbidden,
    /// The body could not be read as the API's JSON.
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// The body is larger than allowed.
    #[error("the request body is larger than {limit} bytes; send smaller batches")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body could not be read (broken compression, a dropped connection).
    #[error("the request body could not be read: {0}")]
    UnreadableBody(String),
    /// A batch without messages.
    #[error("the batch holds no messages")]
    EmptyBatch,
    /// No message of the request could be stored.
    #[error("no message was stored: {}", .0.first().map_or("", |r| r.message.as_str()))]
    AllRejected(Vec<Rejection>),
    /// Some messages were refused; all the others are stored.
    #[error("{} of {} messages were refused; the other {accepted} are stored", rejected.len(), rejected.len() + accepted)]
    PartiallyRejected {
        /// How many messages were stored (or were already stored).
        accepted: usize,
        /// The refused ones.
        rejected: Vec<Rejection>,
    },
    /// Some messages were refused, at least one of them for its size; all the others are
    /// stored.
    #[error("{}", size_refusal(*accepted, *oversized, rejected))]
    MessagesTooLarge {
        /// How many messages were stored (or were already stored).
        accepted: usize,
        /// How many of the refused ones are over [`MAX_MESSAGE_BYTES`].
        oversized: usize,
        /// The refused ones, for any reason.
        rejected: Vec<Rejection>,
    },
    /// A browser origin the environment does not allow.
    #[error("this environment does not accept data from the origin `{0}`")]
    OriginNotAllowed(String),
    /// The write key sent more requests than its rate limit allows.
    #[error("too many requests for this write key; retry after {retry_after} s")]
    RateLimited {
        /// Seconds until a request will be accepted again.
        retry_after: u64,
    },
    /// The request conflicts with what is stored (a name already taken).
    #[error("{0}")]
    Conflict(String),
    /// A request body or parameter that is not valid for the route.
    #[error("{0}")]
    InvalidRequest(String),
    /// A named environment does not exist.
    #[error("no environment is named `{0}`")]
    EnvironmentNotFound(String),
    /// The user is not stored in this environment.
    #[error("no user with this id is stored in this environment")]
    UserNotFound,
    /// A query string that does not fit the route.
    #[error("the query string is not valid: {0}")]
    InvalidQuery(String),
    /// No route or file at this path.
    #[error("nothing is served at this path")]
    NotFound,
    /// The path is served, but not with this method.
    #[error("this path answers only {allow}")]
    MethodNotAllowed {
        /// The methods it answers, as the `Allow` header lists them.
        allow: String,
    },
    /// A fault on the server's side; the detail is logged, not returned.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The stable code that names the error in response bodies.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingWriteKey => "missing_write_key",
            Self::InvalidWriteKey => "invalid_write_key",
            Self::MissingAdminToken => "missing_admin_token",
            Self::InvalidAdminToken => "invalid_admin_token",
            Self::Forbidden => "forbidden",
            Self::Decode(error) => error.code(),
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::UnreadableBody(_) => "unreadable_body",
            Self::EmptyBatch => "empty_batch",
            Self::AllRejected(_) => "all_messages_rejected",
            Self::PartiallyRejected { .. } => "messages_rejected",
            Self::MessagesTooLarge { .. } => "message_too_large",
            Self::OriginNotAllowed(_) => "origin_not_allowed",
            Self::RateLimited { .. } => "rate_limited",
            Self::Conflict(_) => "conflict",
            Self::InvalidRequest(_) => "invalid_request",
            Self::EnvironmentNotFound(_) => "environment_not_found",
            Self::UserNotFound => "user_not_found",
            Self::InvalidQuery(_) => "invalid_query",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::Internal(_) => "internal_error",
        }
    }
}

/// The sentence of [`ApiError::MessagesTooLarge`]: what was refused for its size, what
/// else was refused, and what was stored.
fn size_refusal(accepted: usize, oversized: usize, rejected: &[Rejection]) -> String {
    let limit = format!("larger than the limit of {MAX_MESSAGE_BYTES} bytes per message");
    let refused = match (oversized, rejected.len()) {
        (1, 1) => format!("a message is {limit}"),
        (oversized, all) if oversized == all => format!("{oversized} messages are {limit}"),
        (oversized, all) => format!("{all} messages were refused, {oversized} of them {limit}"),
    };
    let stored = match accepted {
        0 => "nothing was stored".to_owned(),
        accepted => format!("the other {accepted} are stored"),
    };
    format!("{refused}; {stored}")
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::Internal(error.to_string())
    }
}

/// The body of every error answer: the fields of [`ebb_protocol::ErrorBody`], and for a batch
/// with refused messages how many were stored and which were refused.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorResponse<'a> {
    /// A `snake_case` code that names the problem, stable across releases.
    error: String,
    /// What is wrong and how to fix it.
    message: String,
    /// `messages_rejected`, `all_messages_rejected`, `message_too_large`: how many messages
    /// were stored (or were already stored).
    #[serde(skip_serializing_if = "Option::is_none")]
    accepted: Option<usize>,
    /// `messages_rejected`, `all_messages_rejected`, `message_too_large`: the refused
    /// messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Vec<Rejection>>)]
    rejected: Option<&'a [Rejection]>,
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::MissingWriteKey
            | Self::InvalidWriteKey
            | Self::MissingAdminToken
            | Self::InvalidAdminToken => StatusCode::UNAUTHORIZED,
            Self::Forbidden | Self::OriginNotAllowed(_) => StatusCode::FORBIDDEN,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Decode(_)
            | Self::UnreadableBody(_)
            | Self::EmptyBatch
            | Self::AllRejected(_)
            | Self::PartiallyRejected { .. }
            | Self::InvalidRequest(_)
            | Self::InvalidQuery(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge { .. } | Self::MessagesTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Self::EnvironmentNotFound(_) | Self::UserNotFound | Self::NotFound => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let message = match self {
            Self::Internal(detail) => {
                let incident = uuid::Uuid::new_v4();
                tracing::error!(%incident, error = %detail, "request failed");
                format!("the collector failed to handle the request (incident {incident}); try again later")
            }
            other => other.to_string(),
        };
        let (accepted, rejected) = match self {
            Self::AllRejected(rejected) => (Some(0), Some(rejected.as_slice())),
            Self::PartiallyRejected { accepted, rejected }
            | Self::MessagesTooLarge {
                accepted, rejected, ..
            } => (Some(*accepted), Some(rejected.as_slice())),
            _ => (None, None),
        };

        let mut response = HttpResponse::build(self.status_code());
        match self {
            Self::MissingAdminToken | Self::InvalidAdminToken => {
                response.insert_header(("WWW-Authenticate", "Bearer"));
            }
            Self::RateLimited { retry_after } => {
                response.insert_header(("Retry-After", retry_after.to_string()));
            }
            Self::MethodNotAllowed { allow } => {
                response.insert_header(("Allow", allow.as_str()));
            }
            _ => {}
        }
        response.json(ErrorResponse {
            error: self.code().to_owned(),
            message,
            accepted,
            rejected,
        })
    }
}
