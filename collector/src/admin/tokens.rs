//! `/admin/v1/tokens`: admin tokens for every environment or for one.
//!
//! A new token is shown once, in the answer that creates it; only its SHA-256 hash is
//! stored. Managing tokens takes a token for every environment.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::authorized;
use crate::auth::{token_hash, Admin};
use crate::bootstrap::generate_secret;
use crate::error::{ApiError, Result};
use crate::server::AppState;
use crate::store::TokenScope;

/// Registers the routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/admin/v1/tokens", web::get().to(list_tokens))
        .route("/admin/v1/tokens", web::post().to(create_token))
        .route("/admin/v1/tokens/{id}", web::delete().to(revoke_token));
}

fn global(admin: &Admin) -> Result<()> {
    if admin.is_global() {
        Ok(())
    } else {
        Err(ApiError::Forbidden)
    }
}

/// `GET /admin/v1/tokens`: every token's id, label, scope and age; never the secrets.
async fn list_tokens(admin: Admin, state: web::Data<AppState>) -> Result<HttpResponse> {
    global(&admin)?;
    Ok(HttpResponse::Ok().json(state.store.admin_tokens().await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    label: String,
    environment: Option<String>,
}

/// `POST /admin/v1/tokens` `{"label": …, "environment": <id or name, optional>}`.
async fn create_token(
    admin: Admin,
    body: web::Json<NewToken>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    global(&admin)?;
    let label = body.label.trim();
    if label.is_empty() || label.chars().count() > 100 || label.chars().any(char::is_control) {
        let message = "a token label has 1 to 100 characters and no control characters";
        return Err(ApiError::InvalidRequest(message.into()));
    }
    let scope = match &body.environment {
        Some(named) => TokenScope::Environment(authorized(&state, &admin, named).await?.id),
        None => TokenScope::All,
    };

    let token = generate_secret("ebb_admin_");
    let hash = token_hash(&token);
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
    Ok(HttpResponse::Created().json(json!({ "token": token, "details": stored })))
}

/// `DELETE /admin/v1/tokens/{id}`: the token stops working at once.
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
