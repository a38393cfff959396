//! `/admin/v1/users/{id}`: read, export and delete one user, and lift a tombstone.
//!
//! `{id}` is a user id or an anonymous id. Export gives every stored record of the user,
//! as JSON (the right of access) or as NDJSON Segment batches that another
//! Segment-compatible system, or another Ebb environment, can import (portability).

use actix_web::{delete, get, web, HttpResponse};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use utoipa_actix_web::service_config::ServiceConfig;

use super::answers::{Forbidden, Invalid, NotFound, Unauthorized};
use super::{stored_id, EnvironmentQuery};
use crate::auth::Admin;
use crate::error::{ApiError, Result};
use crate::server::AppState;
use crate::store::{suppression_hash, Receipt, UserExport, UserProfile};

/// Messages per exported batch line, well inside the collector's batch limit.
const EXPORT_BATCH_MESSAGES: usize = 100;

/// Registers the routes.
pub fn routes(config: &mut ServiceConfig) {
    config
        .service(get_user)
        .service(delete_user)
        .service(export_user)
        .service(lift_suppression);
}

/// One user: ids, traits, consent and its history, first and last seen, the latest 1,000
/// events, the survey responses, and how many events, responses and consent records are
/// stored (counted, so past 1,000 events the count exceeds the events listed).
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(("id", description = "A user id or an anonymous id"), EnvironmentQuery),
    responses(
        (status = 200, body = UserProfile),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
#[get("/admin/v1/users/{id}")]
async fn get_user(
    admin: Admin,
    id: web::Path<String>,
    query: web::Query<EnvironmentQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = query.resolve(&state, &admin).await?;

    let profile = state
        .store
        .user_profile(&environment.id, stored_id(&id)?)
        .await?;

    Ok(HttpResponse::Ok().json(profile.ok_or(ApiError::UserNotFound)?))
}

/// Deletes the user and every record of theirs in one transaction, leaves tombstones for
/// all their ids, and answers with the receipt.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(("id", description = "A user id or an anonymous id"), EnvironmentQuery),
    responses(
        (status = 200, description = "What was deleted", body = Receipt),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
#[delete("/admin/v1/users/{id}")]
async fn delete_user(
    admin: Admin,
    id: web::Path<String>,
    query: web::Query<EnvironmentQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = query.resolve(&state, &admin).await?;

    let receipt = state
        .store
        .delete_user(
            &environment.id,
            stored_id(&id)?,
            &admin.actor(),
            state.suppression_days,
        )
        .await?;

    let receipt = receipt.ok_or(ApiError::UserNotFound)?;
    tracing::info!(env.id = %environment.id, audit.seq = receipt.audit_entry, "user deleted");
    Ok(HttpResponse::Ok().json(receipt))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct ExportQuery {
    /// The environment's id or name; without it, the token's own environment or the
    /// default one.
    environment: Option<String>,
    /// `json` (the default): every record; `ndjson`: Segment batches, one per line.
    #[param(inline, value_type = Option<ExportFormat>)]
    format: Option<String>,
}

/// The forms of an export.
#[derive(Debug, utoipa::ToSchema)]
#[schema(rename_all = "lowercase")]
#[allow(dead_code)]
enum ExportFormat {
    /// Every stored record as one JSON document (the right of access).
    Json,
    /// Segment batches that another system can import (portability).
    Ndjson,
}

/// Everything stored of the user, as JSON or as NDJSON Segment batches; the export is
/// written to the audit log.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(("id", description = "A user id or an anonymous id"), ExportQuery),
    responses(
        (
            status = 200,
            content(
                (UserExport = "application/json"),
                (String = "application/x-ndjson"),
            ),
        ),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
#[get("/admin/v1/users/{id}/export")]
async fn export_user(
    admin: Admin,
    id: web::Path<String>,
    query: web::Query<ExportQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let ndjson = match query.format.as_deref() {
        None | Some("json") => false,
        Some("ndjson") => true,
        Some(other) => {
            let message = format!("unknown export format `{other}`; use json or ndjson");
            return Err(ApiError::InvalidRequest(message));
        }
    };
    let selector = EnvironmentQuery {
        environment: query.environment.clone(),
    };
    let environment = selector.resolve(&state, &admin).await?;

    let export = state
        .store
        .user_export(&environment.id, stored_id(&id)?)
        .await?;

    let export = export.ok_or(ApiError::UserNotFound)?;
    let profile = &export.profile;
    let id_hash = suppression_hash(state.store.suppression_key(), &id);
    let request = json!({ "idHash": id_hash, "format": if ndjson { "ndjson" } else { "json" } });
    let counts = json!({ "events": profile.events.len(), "responses": profile.responses.len() });
    state
        .store
        .audit(
            Some(&environment.id),
            &admin.actor(),
            "export_user",
            request,
            counts,
        )
        .await?;
    if ndjson {
        Ok(HttpResponse::Ok()
            .content_type("application/x-ndjson")
            .body(to_batches(profile)))
    } else {
        Ok(HttpResponse::Ok().json(&export))
    }
}

/// Lifts the tombstone of a deleted id, so that data about it may be stored again.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(("id", description = "The deleted user id or anonymous id"), EnvironmentQuery),
    responses(
        (status = 204, description = "The id may be stored again"),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
#[delete("/admin/v1/suppressions/{id}")]
async fn lift_suppression(
    admin: Admin,
    id: web::Path<String>,
    query: web::Query<EnvironmentQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = query.resolve(&state, &admin).await?;

    let lifted = state
        .store
        .lift_suppression(&environment.id, &id, &admin.actor())
        .await?;

    if lifted {
        Ok(HttpResponse::NoContent().finish())
    } else {
        Err(ApiError::NotFound)
    }
}

/// The user's records as Segment messages, one batch per line: an `identify` per id the
/// user had (so that an import joins them again), then every event and response with its
/// original message id and time, then an `identify` at the last activity with the latest
/// consent and GPC signal.
///
/// An import gives the same ids, traits, first and last seen, latest consent and GPC
/// signal, events and responses. It cannot give the consent history: only the changes
/// that events' contexts carry are recorded again, with the latest state last.
pub fn to_batches(profile: &UserProfile) -> String {
    let mut messages = Vec::new();
    let mut ids = Map::new();
    if let Some(user_id) = &profile.user_id {
        ids.insert("userId".into(), json!(user_id));
    }
    let first_anonymous = profile.anonymous_ids.first().map(String::as_str);
    if profile.user_id.is_none() {
        ids.insert("anonymousId".into(), json!(first_anonymous));
    }

    let mut identify = ids.clone();
    identify.insert("type".into(), json!("identify"));
    identify.insert("traits".into(), profile.traits.clone());
    identify.insert("timestamp".into(), json!(profile.first_seen));
    messages.push(Value::Object(identify));
    for anonymous_id in &profile.anonymous_ids {
        let mut link = ids.clone();
        link.insert("type".into(), json!("identify"));
        link.insert("anonymousId".into(), json!(anonymous_id));
        link.insert("timestamp".into(), json!(profile.first_seen));
        messages.push(Value::Object(link));
    }

    for event in &profile.events {
        let mut message = ids.clone();
        message.insert("type".into(), json!(event.kind));
        message.insert("messageId".into(), json!(event.message_id));
        message.insert("timestamp".into(), json!(event.timestamp));
        message.insert("context".into(), event.context.clone());
        match event.kind.as_str() {
            "track" => {
                message.insert("event".into(), json!(event.event));
                message.insert("properties".into(), event.properties.clone());
            }
            "group" => {
                message.insert("groupId".into(), json!(event.name));
                message.insert("traits".into(), event.properties.clone());
            }
            "alias" => {
                message.insert("previousId".into(), json!(event.name));
            }
            _ => {
                message.insert("name".into(), json!(event.name));
                message.insert("properties".into(), event.properties.clone());
            }
        }
        messages.push(Value::Object(message));
    }
    for response in &profile.responses {
        let mut message = ids.clone();
        message.insert("type".into(), json!("response"));
        message.insert("messageId".into(), json!(response.message_id));
        message.insert("timestamp".into(), json!(response.timestamp));
        message.insert("surveyId".into(), json!(response.survey_id));
        message.insert("answers".into(), response.answers.clone());
        messages.push(Value::Object(message));
    }

    // Last, so that neither an event's context nor an earlier time overrides the latest
    // privacy choices; at the last activity, so that last seen is the original's too
    // when that activity was an identify, which is not exported as an event.
    let mut closing = ids;
    closing.insert("type".into(), json!("identify"));
    closing.insert("timestamp".into(), json!(profile.last_seen));
    let mut context = Map::new();
    if let Some(consent) = &profile.consent {
        context.insert("consent".into(), json!({ "categoryPreferences": consent }));
    }
    if let Some(gpc) = profile.gpc {
        context.insert("gpc".into(), json!(gpc));
    }
    closing.insert("context".into(), Value::Object(context));
    messages.push(Value::Object(closing));

    let mut lines = String::new();
    for chunk in messages.chunks(EXPORT_BATCH_MESSAGES) {
        lines.push_str(&json!({ "batch": chunk }).to_string());
        lines.push('\n');
    }
    lines
}
