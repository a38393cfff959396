//! The admin API (`/admin/v1/...`): what operators read and do, behind an admin token.
//!
//! Environments are named in paths by id or by name. A token scoped to one environment
//! sees and changes only that one; creating environments takes a token for all of them.
//! Secrets generated here (write keys, identity secrets) are returned once, in the answer
//! to the request that made them.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};

use crate::auth::Admin;
use crate::bootstrap::generate_secret;
use crate::error::{ApiError, Result};
use crate::server::AppState;
use crate::store::{Environment, EnvironmentChanges};

/// The longest environment name, in characters.
const MAX_NAME_CHARS: usize = 100;

/// Registers the admin routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/admin/v1/environments", web::get().to(list_environments))
        .route("/admin/v1/environments", web::post().to(create_environment))
        .route(
            "/admin/v1/environments/{environment}",
            web::get().to(get_environment),
        )
        .route(
            "/admin/v1/environments/{environment}",
            web::patch().to(update_environment),
        )
        .route(
            "/admin/v1/environments/{environment}/write-key",
            web::post().to(rotate_write_key),
        )
        .route(
            "/admin/v1/environments/{environment}/identity-secret",
            web::post().to(rotate_identity_secret),
        )
        .route(
            "/admin/v1/environments/{environment}/identity-secret",
            web::delete().to(remove_identity_secret),
        )
        .route("/admin/v1/users/{id}", web::get().to(get_user));
}

/// An environment as the admin API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvironmentView {
    #[serde(flatten)]
    environment: Environment,
    identity_verification: bool,
    write_keys: Vec<String>,
}

async fn view(state: &AppState, environment: Environment) -> Result<EnvironmentView> {
    let write_keys = state.store.write_keys(&environment.id).await?;
    Ok(EnvironmentView {
        identity_verification: environment.identity_secret.is_some(),
        environment,
        write_keys,
    })
}

/// Finds the environment a path names and checks the token may act on it.
async fn authorized(state: &AppState, admin: &Admin, id_or_name: &str) -> Result<Environment> {
    let environment = state
        .store
        .find_environment(id_or_name)
        .await?
        .ok_or_else(|| ApiError::EnvironmentNotFound(id_or_name.to_owned()))?;
    admin.authorize(&environment.id)?;
    Ok(environment)
}

/// `GET /admin/v1/environments`: every environment the token may see.
async fn list_environments(admin: Admin, state: web::Data<AppState>) -> Result<HttpResponse> {
    let mut views = Vec::new();
    for environment in state.store.environments().await? {
        if admin.authorize(&environment.id).is_ok() {
            views.push(view(&state, environment).await?);
        }
    }
    Ok(HttpResponse::Ok().json(views))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEnvironment {
    name: String,
}

/// `POST /admin/v1/environments` `{"name": …}`: a new environment with a fresh write key.
async fn create_environment(
    admin: Admin,
    body: web::Json<NewEnvironment>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    if !admin.is_global() {
        return Err(ApiError::Forbidden);
    }
    let name = valid_name(&body.name)?;

    let write_key = generate_secret("wk_");
    let environment = state
        .store
        .create_environment(&name, &write_key, None)
        .await?;

    tracing::info!(env.id = %environment.id, "environment created");
    Ok(HttpResponse::Created().json(view(&state, environment).await?))
}

/// `GET /admin/v1/environments/{environment}`.
async fn get_environment(
    admin: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = authorized(&state, &admin, &path).await?;
    Ok(HttpResponse::Ok().json(view(&state, environment).await?))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EnvironmentUpdate {
    name: Option<String>,
    allowed_origins: Option<Vec<String>>,
    store_ip: Option<bool>,
}

/// `PATCH /admin/v1/environments/{environment}`: rename, browser origins, IP storage.
async fn update_environment(
    admin: Admin,
    path: web::Path<String>,
    body: web::Json<EnvironmentUpdate>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = authorized(&state, &admin, &path).await?;
    let body = body.into_inner();
    let changes = EnvironmentChanges {
        name: body.name.as_deref().map(valid_name).transpose()?,
        allowed_origins: body.allowed_origins.map(valid_origins).transpose()?,
        store_ip: body.store_ip,
        identity_secret: None,
    };

    let updated = state
        .store
        .update_environment(&environment.id, &changes)
        .await?;

    let updated = updated.ok_or_else(|| ApiError::EnvironmentNotFound(path.into_inner()))?;
    tracing::info!(env.id = %updated.id, "environment settings changed");
    Ok(HttpResponse::Ok().json(view(&state, updated).await?))
}

/// `POST /admin/v1/environments/{environment}/write-key`: a new write key replaces every
/// old one at once.
async fn rotate_write_key(
    admin: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = authorized(&state, &admin, &path).await?;

    let write_key = generate_secret("wk_");
    state
        .store
        .replace_write_keys(&environment.id, &write_key)
        .await?;

    tracing::info!(env.id = %environment.id, "write key rotated");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "writeKey": write_key })))
}

/// `POST /admin/v1/environments/{environment}/identity-secret`: turns identity
/// verification on with a new secret (or rotates it), shown in this answer only.
async fn rotate_identity_secret(
    admin: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = authorized(&state, &admin, &path).await?;

    let secret = generate_secret("ebb_ivs_");
    let changes = EnvironmentChanges {
        identity_secret: Some(Some(secret.clone())),
        ..Default::default()
    };
    state
        .store
        .update_environment(&environment.id, &changes)
        .await?;

    tracing::info!(env.id = %environment.id, "identity secret set");
    Ok(HttpResponse::Ok().json(serde_json::json!({ "identitySecret": secret })))
}

/// `DELETE /admin/v1/environments/{environment}/identity-secret`: verification off.
async fn remove_identity_secret(
    admin: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = authorized(&state, &admin, &path).await?;

    let changes = EnvironmentChanges {
        identity_secret: Some(None),
        ..Default::default()
    };
    state
        .store
        .update_environment(&environment.id, &changes)
        .await?;

    tracing::info!(env.id = %environment.id, "identity verification turned off");
    Ok(HttpResponse::NoContent().finish())
}

/// Selects the environment an admin request is about; the default one when absent.
#[derive(Debug, Deserialize)]
pub struct EnvironmentQuery {
    /// The environment's id or name.
    environment: Option<String>,
}

/// `GET /admin/v1/users/{id}`: one user's ids, traits, consent, events and responses;
/// `id` is a user id or an anonymous id.
async fn get_user(
    admin: Admin,
    id: web::Path<String>,
    query: web::Query<EnvironmentQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let default = state.default_environment.as_str();
    let environment = authorized(
        &state,
        &admin,
        query.environment.as_deref().unwrap_or(default),
    )
    .await?;

    let profile = state.store.user_profile(&environment.id, &id).await?;

    let profile = profile.ok_or(ApiError::UserNotFound)?;
    Ok(HttpResponse::Ok().json(profile))
}

fn valid_name(name: &str) -> Result<String> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
        let message = format!("an environment name has 1 to {MAX_NAME_CHARS} characters");
        return Err(ApiError::InvalidRequest(message));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::InvalidRequest(
            "an environment name has no control characters".into(),
        ));
    }
    Ok(name.to_owned())
}

/// Origins are compared with the browser's `Origin` header, so each must have its exact
/// form: `scheme://host` with an optional port, nothing after; or `*` for any.
fn valid_origins(origins: Vec<String>) -> Result<Vec<String>> {
    for origin in &origins {
        let shaped = origin == "*"
            || origin.split_once("://").is_some_and(|(scheme, rest)| {
                !scheme.is_empty()
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
                    && !rest.is_empty()
                    && !rest.contains(['/', '?', '#', ' '])
            });
        if !shaped {
            let message = format!("`{origin}` is not an origin such as https://shop.example");
            return Err(ApiError::InvalidRequest(message));
        }
    }
    Ok(origins)
}
