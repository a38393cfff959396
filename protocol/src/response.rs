//! The bodies the collector answers with.

use serde::{Deserialize, Serialize};

/// The body of every error response: a stable code for programs and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// A `snake_case` code that names the problem, stable across releases.
    pub error: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

/// The body of a successful ingest: `{"success": true}`, plus the messages that were
/// refused when only some of a batch could be stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SuccessBody {
    /// Always true: every message not listed in `rejected` was stored.
    pub success: bool,
    /// The refused messages, by their index in the batch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rejected: Vec<Rejection>,
}

/// One message the collector refused, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Rejection {
    /// The message's position in the batch, from 0.
    pub index: usize,
    /// A `snake_case` code for the reason.
    pub error: String,
    /// The reason in words.
    pub message: String,
}
