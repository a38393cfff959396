//! `/admin/v1/tokens`: admin tokens for every environment or for one.
//!
//! A new token is shown once, in the answer that creates it; only its SHA-256 hash is
//! stored. Managing tokens takes a token for every environment.

use actix_web::{delete, get, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_actix_web::service_config::ServiceConfig;

use super::answers::{Forbidden, Invalid, NotFound, TooLarge, Unauthorized};
use super::{authorized, Body};
use crate::auth::{lookup_hash, Admin};
use crate::bootstrap::generate_secret;
use crate::error::{ApiError, Result};
use crate::server::AppState;
use crate::store::{AdminToken, TokenScope};

/// Registers the routes.
pub fn routes(config: &mut ServiceConfig) {
    config
        .service(list_tokens)
        .service(create_token)
        .service(revoke_token);
}

fn global(admin: &Admin) -> Result<()> {
    if admin.is_global() {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

/// Every admin token's id, label, scope and age; never the secrets.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    responses(
        (status = 200, body = Vec<AdminToken>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
    )
)]
#[get("/admin/v1/tokens")]
async fn list_tokens(admin: Admin, state: web::Data<AppState>) -> Result<HttpResponse> {
    global(&admin)?;
    Ok(HttpResponse::Ok().json(state.store.admin_tokens().await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewToken {
    /// A name for the token.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f]"
    )]
    label: String,
    /// The one environment (id or name) the token is for; without it, all of them.
    environment: Option<String>,
}

/// A new admin token, shown in this answer only.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct CreatedToken {
    /// The secret to send as `Authorization: Bearer <token>`.
    token: String,
    /// The token as stored.
    details: AdminToken,
}

/// A new admin token for every environment or for one.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    request_body = NewToken,
    responses(
        (status = 201, body = CreatedToken),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 413, response = TooLarge),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
#[post("/admin/v1/tokens")]
async fn create_token(
    admin: Admin,
    body: Body<NewToken>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    global(&admin)?;
    let sent = body.label.chars().count();
    let label = body.label.trim();
    if label.is_empty() || sent > 100 || label.chars().any(char::is_control) {
        let message = "a token label has 1 to 100 characters and no control characters";
        return Err(ApiError::InvalidRequest(message.into()));
    }
    let scope = match &body.environment {
        Some(named) => TokenScope::Environment(authorized(&state, &admin, named).await?.id),
        None => TokenScope::All,
    };

    let token = generate_secret("ebb_admin_");
    let hash = lookup_hash(&token);
    state.store.add_admin_token(&hash, &scope, label).await?;
    let stored = state.store.admin_token(&hash).await?;

    let stored = stored.ok_or_else(|| ApiError::Internal("the new token was not stored".into()))?;
    let environment = stored.environment_id.as_ref();
    let request = json!({ "tokenId": stored.id, "label": stored.label });
    state
        .store
        .audit(
            environment,
            &admin.actor(),
            "create_token",
            request,
            json!({}),
        )
        .await?;
    Ok(HttpResponse::Created().json(CreatedToken {
        token,
        details: stored,
    }))
}

/// Revokes an admin token: it stops working at once.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(("id", description = "The token's id")),
    responses(
        (status = 204, description = "The token is revoked"),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
#[delete("/admin/v1/tokens/{id}")]
async fn revoke_token(
    admin: Admin,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    global(&admin)?;

    let revoked = state.store.revoke_admin_token(&id).await?;

    if !revoked {
        return Err(ApiError::NotFound);
    }
    let request = json!({ "tokenId": id.as_str() });
    state
        .store
        .audit(None, &admin.actor(), "revoke_token", request, json!({}))
        .await?;
    Ok(HttpResponse::NoContent().finish())
}
