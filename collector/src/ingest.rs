//! The Tracking API: `/v1/batch` and its aliases, and one route per message type.
//!
//! A request is read (decompressed, bounded), authenticated by its write key, split into
//! messages, and every valid message is stored in one transaction before the answer goes
//! out. Invalid messages are listed in the answer by index and reason; their valid siblings
//! are stored. The answer stays 200 in that case because the client must not retry: a
//! retry would fail the same way, while the stored messages are already safe.

use actix_web::dev::Decompress;
use actix_web::web::{self, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use chrono::Utc;
use ebb_protocol::decode::{decode_batch, decode_single, event_time, Envelope};
use ebb_protocol::{MessageType, Rejection, SuccessBody, MAX_BATCH_BYTES};
use futures_util::StreamExt as _;

use crate::auth::basic_write_key;
use crate::error::{ApiError, Result};
use crate::server::AppState;
use crate::store::Accepted;

/// Registers the ingest routes.
pub fn routes(config: &mut web::ServiceConfig) {
    for path in ["/v1/batch", "/v1/import", "/v1/b"] {
        config.route(path, web::post().to(batch));
    }
    let singles = [
        ("/v1/identify", MessageType::Identify),
        ("/v1/track", MessageType::Track),
        ("/v1/page", MessageType::Page),
        ("/v1/screen", MessageType::Screen),
        ("/v1/group", MessageType::Group),
        ("/v1/alias", MessageType::Alias),
    ];
    for (path, kind) in singles {
        config.route(
            path,
            web::post().to(
                move |req: HttpRequest, body: web::Payload, state: web::Data<AppState>| async move {
                    let body = read_body(&req, body).await?;
                    ingest(&req, &state, decode_single(&body, kind)?).await
                },
            ),
        );
    }
}

async fn batch(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let body = read_body(&req, body).await?;
    ingest(&req, &state, decode_batch(&body)?).await
}

/// Reads the body, decompressing it as `Content-Encoding` says, and refuses it once it
/// grows past the batch limit: the limit applies to the decompressed size, so a small
/// compressed body cannot inflate without bound.
async fn read_body(req: &HttpRequest, body: web::Payload) -> Result<BytesMut> {
    let mut stream = Decompress::from_headers(body.into_inner(), req.headers());
    let mut bytes = BytesMut::new();

    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|error| ApiError::UnreadableBody(error.to_string()))?;
        if bytes.len() + chunk.len() > MAX_BATCH_BYTES {
            return Err(ApiError::PayloadTooLarge {
                limit: MAX_BATCH_BYTES,
            });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

async fn ingest(req: &HttpRequest, state: &AppState, envelope: Envelope) -> Result<HttpResponse> {
    let received_at = Utc::now();

    let write_key = basic_write_key(req.headers())
        .or_else(|| envelope.write_key.clone())
        .ok_or(ApiError::MissingWriteKey)?;
    let Some(environment) = state.store.environment_for_write_key(&write_key).await? else {
        tracing::warn!("ingest with an unknown write key");
        return Err(ApiError::InvalidWriteKey);
    };

    if envelope.items.is_empty() {
        return Err(ApiError::EmptyBatch);
    }
    let mut accepted = Vec::with_capacity(envelope.items.len());
    let mut rejected = Vec::new();
    for index in 0..envelope.items.len() {
        match envelope.message(index) {
            Ok(message) => {
                let time = event_time(&message, received_at);
                accepted.push(Accepted { message, time });
            }
            Err(error) => rejected.push(Rejection {
                index,
                error: error.code().to_owned(),
                message: error.to_string(),
            }),
        }
    }
    if accepted.is_empty() {
        tracing::warn!(env.id = %environment, message.rejected = rejected.len(), "batch refused");
        return Err(ApiError::AllRejected(rejected));
    }

    state
        .store
        .store_messages(&environment, &accepted, received_at)
        .await?;

    tracing::debug!(
        env.id = %environment,
        message.accepted = accepted.len(),
        message.rejected = rejected.len(),
        "batch stored"
    );
    Ok(HttpResponse::Ok().json(SuccessBody {
        success: true,
        rejected,
    }))
}
