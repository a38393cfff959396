//! The Tracking API: `/v1/batch` and its aliases, and one route per message type.
//!
//! A request is read (decompressed, bounded), authenticated by its write key, checked
//! against the environment's browser origins and the rate limit, and split into messages.
//! Each message is validated on its own; the valid ones are handed to the group committer
//! and the answer goes out only after their transaction committed.
//!
//! When some messages are refused, the others are still stored and the answer is
//! `400 messages_rejected`, listing each refused message by index and reason; when one of
//! them was refused for being over the per-message limit, it is `413 message_too_large`
//! with the same list, so that the status alone says what to change. A 4xx because no
//! client retries one (Segment's libraries and Ebb's SDK retry only 429 and 5xx): a retry
//! would fail the same way and resend what is already stored. And an error status, unlike
//! a 200, shows up in the sending library's logs, where the developer can see it.

pub mod body;

use std::collections::HashSet;
use std::net::IpAddr;

use actix_web::http::header::ORIGIN;
use actix_web::web;
use actix_web::{options, post, HttpRequest, HttpResponse};
use chrono::Utc;
use ebb_protocol::decode::{decode_batch, decode_single, event_time, Envelope, MessageError};
use ebb_protocol::openapi::{
    AliasBody, BatchBody, GroupBody, IdentifyBody, PageBody, ScreenBody, TrackBody,
};
use ebb_protocol::{Message, MessageType, Rejection, SuccessBody};
use futures_util::StreamExt as _;
use serde_json::Value;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::{basic_write_key, user_hash_is_valid};
use crate::error::{ApiError, ErrorResponse, Result};
use crate::metrics;
use crate::server::AppState;
use crate::store::{Accepted, Environment, WriteBatch, WriteReport};

/// Registers the ingest routes, each with its CORS preflight.
pub fn routes(config: &mut ServiceConfig) {
    config
        .service(post_batch)
        .service(post_import)
        .service(post_b)
        .service(post_identify)
        .service(post_track)
        .service(post_page)
        .service(post_screen)
        .service(post_group)
        .service(post_alias)
        .service(preflight_batch)
        .service(preflight_import)
        .service(preflight_b)
        .service(preflight_identify)
        .service(preflight_track)
        .service(preflight_page)
        .service(preflight_screen)
        .service(preflight_group)
        .service(preflight_alias);
}

/// Every answer of an ingest route.
#[derive(Debug, utoipa::IntoResponses)]
#[allow(dead_code)]
enum IngestResponses {
    /// Every message is stored, or was already stored (a retry).
    #[response(status = 200)]
    Stored(SuccessBody),
    /// The body is unreadable (not JSON, broken compression), holds no message, or some of
    /// its messages were refused: then `rejected` lists them by index and reason and
    /// `accepted` counts the others, which are stored.
    #[response(status = 400)]
    Refused(ErrorResponse<'static>),
    /// No write key was sent, or it names no environment.
    #[response(status = 401)]
    Unauthorized(ErrorResponse<'static>),
    /// The browser's `Origin` is not on the environment's allow-list.
    #[response(status = 403)]
    OriginNotAllowed(ErrorResponse<'static>),
    /// The body is larger than 500 KiB after decompression (`payload_too_large`: nothing is
    /// stored), or a message is larger than 32 KiB (`message_too_large`): then `rejected`
    /// lists the refused messages by index and reason and `accepted` counts the others,
    /// which are stored.
    #[response(status = 413)]
    TooLarge(ErrorResponse<'static>),
    /// The write key sent more requests per second than the collector's rate limit.
    #[response(
        status = 429,
        headers(("Retry-After" = u64, description = "seconds until a request is taken again"))
    )]
    RateLimited(ErrorResponse<'static>),
}

/// One ingest route and its CORS preflight: the body is read, decoded with `$decode` and
/// ingested. The attributes describe it in the OpenAPI description.
macro_rules! ingest_route {
    (
        $(#[doc = $doc:literal])*
        $handler:ident, $preflight:ident, $path:literal, $body:ty, $decode:expr
    ) => {
        $(#[doc = $doc])*
        #[utoipa::path(
            tag = "ingest",
            request_body(
                content(($body = "application/json"), ($body = "text/plain")),
                description = "JSON under any of these content types, optionally with \
                    `Content-Encoding: gzip`",
            ),
            params((
                "Sec-GPC" = Option<String>,
                Header,
                description = "`1`: the visitor's browser objects to tracking; stored as \
                    `context.gpc`"
            )),
            responses(IngestResponses),
            security(("writeKey" = []), ()),
        )]
        #[post($path)]
        async fn $handler(
            req: HttpRequest,
            body: web::Payload,
            state: web::Data<AppState>,
        ) -> Result<HttpResponse> {
            let body = read_body(&req, body).await?;
            ingest(&req, &state, ($decode)(&body)?).await
        }

        #[doc = concat!("CORS preflight of `POST ", $path, "`.")]
        #[utoipa::path(tag = "ingest", responses(PreflightResponse))]
        #[options($path)]
        async fn $preflight() -> HttpResponse {
            preflight()
        }
    };
}

ingest_route!(
    /// Stores a batch of messages of any types.
    post_batch, preflight_batch, "/v1/batch", BatchBody, decode_batch
);
ingest_route!(
    /// Stores a batch of messages: `/v1/batch` under the name some libraries use.
    post_import, preflight_import, "/v1/import", BatchBody, decode_batch
);
ingest_route!(
    /// Stores a batch of messages: `/v1/batch` under its short name.
    post_b, preflight_b, "/v1/b", BatchBody, decode_batch
);
ingest_route!(
    /// Stores one `identify`: who the user is, and their traits.
    post_identify, preflight_identify, "/v1/identify", IdentifyBody,
    |body: &[u8]| decode_single(body, MessageType::Identify)
);
ingest_route!(
    /// Stores one `track`: something the user did.
    post_track, preflight_track, "/v1/track", TrackBody,
    |body: &[u8]| decode_single(body, MessageType::Track)
);
ingest_route!(
    /// Stores one `page`: a page view.
    post_page, preflight_page, "/v1/page", PageBody,
    |body: &[u8]| decode_single(body, MessageType::Page)
);
ingest_route!(
    /// Stores one `screen`: a screen view in an app.
    post_screen, preflight_screen, "/v1/screen", ScreenBody,
    |body: &[u8]| decode_single(body, MessageType::Screen)
);
ingest_route!(
    /// Stores one `group`: the user's membership of a group.
    post_group, preflight_group, "/v1/group", GroupBody,
    |body: &[u8]| decode_single(body, MessageType::Group)
);
ingest_route!(
    /// Stores one `alias`: two ids name one user.
    post_alias, preflight_alias, "/v1/alias", AliasBody,
    |body: &[u8]| decode_single(body, MessageType::Alias)
);

/// The answer to a CORS preflight.
#[derive(Debug, utoipa::IntoResponses)]
#[response(
    status = 204,
    description = "Any origin may send; the request itself is then checked against the \
        environment's allow-list.",
    headers(
        ("Access-Control-Allow-Methods" = String),
        ("Access-Control-Allow-Headers" = String),
        ("Access-Control-Max-Age" = u32),
    )
)]
struct PreflightResponse;

/// Answers a CORS preflight. It cannot know the environment (a preflight carries no write
/// key), so it admits every origin; the request itself is then checked against the
/// environment's allow-list.
fn preflight() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header(("Access-Control-Allow-Methods", "POST, OPTIONS"))
        .insert_header((
            "Access-Control-Allow-Headers",
            "Authorization, Content-Type, Content-Encoding",
        ))
        .insert_header(("Access-Control-Max-Age", "86400"))
        .finish()
}

/// Reads the body as it arrives, decompressed and bounded by [`body::BodyDecoder`].
async fn read_body(req: &HttpRequest, body: web::Payload) -> Result<Vec<u8>> {
    let mut payload = body.into_inner();
    let mut decoder = body::BodyDecoder::new(req.headers());

    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|error| {
            tracing::debug!(error = %error, "unreadable body");
            ApiError::UnreadableBody("it ended early or its compression is corrupt".into())
        })?;
        decoder.push(&chunk)?;
    }
    decoder.finish()
}

async fn ingest(req: &HttpRequest, state: &AppState, envelope: Envelope) -> Result<HttpResponse> {
    let received_at = Utc::now();

    let write_key = basic_write_key(req.headers())
        .or_else(|| envelope.write_key.clone())
        .ok_or(ApiError::MissingWriteKey)?;
    // No write key holds a NUL character, and PostgreSQL fails the lookup of one (a 500,
    // which clients would retry forever), so it is unknown without asking the store.
    let environment = if write_key.contains('\0') {
        None
    } else {
        state.store.environment_for_write_key(&write_key).await?
    };
    let Some(environment) = environment else {
        tracing::warn!(http.route = %req.path(), "ingest with an unknown write key");
        return Err(ApiError::InvalidWriteKey);
    };
    check_origin(req, &environment)?;
    if let Some(limit) = &state.rate_limit {
        limit.check(&write_key)?;
    }

    if envelope.items.is_empty() {
        return Err(ApiError::EmptyBatch);
    }
    let sent_gpc = req
        .headers()
        .get("sec-gpc")
        .is_some_and(|value| value.as_bytes() == b"1");
    let peer_ip = environment
        .store_ip
        .then(|| req.peer_addr().map(|address| address.ip()))
        .flatten();
    let mut accepted = Vec::with_capacity(envelope.items.len());
    let mut rejected = Vec::new();
    let mut message_ids = HashSet::with_capacity(envelope.items.len());
    let mut oversized = 0;
    for index in 0..envelope.items.len() {
        let checked = envelope
            .message(index)
            .map_err(|error| {
                if matches!(error, MessageError::TooLarge { .. }) {
                    oversized += 1;
                }
                (error.code(), error.to_string())
            })
            .and_then(|message| verify_identity(&environment, message))
            .and_then(|message| first_in_batch(&mut message_ids, message));
        match checked {
            Ok(mut message) => {
                prepare_context(&mut message, &environment, sent_gpc, peer_ip);
                let time = event_time(&message, received_at);
                accepted.push(Accepted { message, time });
            }
            Err((code, message)) => {
                rejected.push(Rejection {
                    index,
                    error: code.to_owned(),
                    message,
                });
            }
        }
    }
    let reasons: Vec<&str> = rejected
        .iter()
        .map(|rejection| rejection.error.as_str())
        .collect();
    if accepted.is_empty() {
        metrics::record_ingest(envelope.items.len(), WriteReport::default(), &reasons);
        tracing::warn!(env.id = %environment.id, message.rejected = rejected.len(), "batch refused");
        return Err(refusal(0, oversized, rejected));
    }

    let count = accepted.len();
    let batch = WriteBatch {
        environment: environment.id.clone(),
        messages: accepted,
        received_at,
    };
    let report = state.writer.write(batch).await?;

    metrics::record_ingest(envelope.items.len(), report, &reasons);
    tracing::debug!(
        env.id = %environment.id,
        message.stored = report.stored,
        message.duplicates = report.duplicates,
        message.suppressed = report.suppressed,
        message.rejected = rejected.len(),
        "batch committed"
    );
    if rejected.is_empty() {
        Ok(HttpResponse::Ok().json(SuccessBody {
            success: true,
            rejected,
        }))
    } else {
        Err(refusal(count, oversized, rejected))
    }
}

/// The answer when messages were refused: `413` if any was over the size limit (the
/// client must split its data, not fix a field), `400` otherwise.
fn refusal(accepted: usize, oversized: usize, rejected: Vec<Rejection>) -> ApiError {
    match (accepted, oversized) {
        (_, 1..) => ApiError::MessagesTooLarge {
            accepted,
            oversized,
            rejected,
        },
        (0, 0) => ApiError::AllRejected(rejected),
        (accepted, 0) => ApiError::PartiallyRejected { accepted, rejected },
    }
}

/// Refuses a second message with a message id already used earlier in the same batch: a
/// client bug (ids must be unique), and storing either silently would hide it.
fn first_in_batch(
    seen: &mut HashSet<String>,
    message: Message,
) -> std::result::Result<Message, (&'static str, String)> {
    match &message.message_id {
        Some(id) if !seen.insert(id.as_str().to_owned()) => Err((
            "duplicate_message_id",
            format!("the message id `{id}` appears earlier in this batch"),
        )),
        _ => Ok(message),
    }
}

/// Refuses a browser request from an origin the environment's allow-list leaves out.
fn check_origin(req: &HttpRequest, environment: &Environment) -> Result<()> {
    let Some(origin) = req
        .headers()
        .get(ORIGIN)
        .and_then(|value| value.to_str().ok())
    else {
        return Ok(());
    };
    let allowed = &environment.allowed_origins;
    if allowed.is_empty() || allowed.iter().any(|entry| entry == "*" || entry == origin) {
        return Ok(());
    }
    tracing::warn!(env.id = %environment.id, "request from an origin not allowed");
    Err(ApiError::OriginNotAllowed(origin.to_owned()))
}

/// With identity verification on, a message naming a user must prove it with
/// `context.userHash`, the HMAC-SHA256 of the user id under the environment's secret.
fn verify_identity(
    environment: &Environment,
    message: Message,
) -> std::result::Result<Message, (&'static str, String)> {
    let (Some(secret), Some(user_id)) = (&environment.identity_secret, &message.user_id) else {
        return Ok(message);
    };
    match message.context.get("userHash").and_then(Value::as_str) {
        None => Err((
            "missing_user_hash",
            "identity verification is on: send `context.userHash` with every `userId`".into(),
        )),
        Some(hash) if !user_hash_is_valid(secret, user_id.as_str(), hash) => Err((
            "invalid_user_hash",
            "`context.userHash` is not the HMAC-SHA256 of `userId` under this environment's secret"
                .into(),
        )),
        Some(_) => Ok(message),
    }
}

/// Shapes the context for storage: traits move to the message (identify) or go (they live
/// on the user), the user hash goes, the IP address stays only where the environment opted
/// in, and a `Sec-GPC: 1` header becomes `context.gpc`.
fn prepare_context(
    message: &mut Message,
    environment: &Environment,
    sent_gpc: bool,
    peer_ip: Option<IpAddr>,
) {
    let context = &mut message.context;

    if let Some(Value::Object(traits)) = context.remove("traits") {
        if message.kind == MessageType::Identify && message.traits.is_none() {
            message.traits = Some(traits);
        }
    }
    context.remove("userHash");
    if !environment.store_ip {
        context.remove("ip");
    } else if let (false, Some(ip)) = (context.contains_key("ip"), peer_ip) {
        context.insert("ip".into(), Value::String(ip.to_string()));
    }
    if sent_gpc && !context.contains_key("gpc") {
        context.insert("gpc".into(), Value::Bool(true));
    }
}
