//! `/admin/v1/environments`: create, list, rename, configure, rotate keys and secrets,
//! purge and delete environments.
//!
//! Secrets generated here (write keys, identity secrets) are returned once, in the answer
//! to the request that made them. Purging or deleting an environment asks for its name as
//! confirmation (`{"confirm": "<name>"}`), since neither can be undone.

use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::authorized;
use crate::auth::Admin;
use crate::bootstrap::generate_secret;
use crate::error::{ApiError, Result};
use crate::server::AppState;
use crate::store::{Environment, EnvironmentChanges};

/// The longest environment name, in characters.
const MAX_NAME_CHARS: usize = 100;

/// Registers the routes.
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
            "/admin/v1/environments/{environment}",
            web::delete().to(delete_environment),
        )
        .route(
            "/admin/v1/environments/{environment}/purge",
            web::post().to(purge_environment),
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
        );
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
        retention: None,
    };

    let updated = state
        .store
        .update_environment(&environment.id, &changes)
        .await?;

    let updated = updated.ok_or_else(|| ApiError::EnvironmentNotFound(path.into_inner()))?;
    let request = json!({
        "name": changes.name,
        "allowedOrigins": changes.allowed_origins,
        "storeIp": changes.store_ip,
    });
    let id = Some(&updated.id);
    state
        .store
        .audit(id, &admin.actor(), "update_environment", request, json!({}))
        .await?;
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
    Ok(HttpResponse::Ok().json(json!({ "writeKey": write_key })))
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
    Ok(HttpResponse::Ok().json(json!({ "identitySecret": secret })))
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

/// The confirmation that purging or deleting an environment asks for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Confirmation {
    confirm: String,
}

fn confirmed(environment: &Environment, confirmation: Option<&Confirmation>) -> Result<()> {
    match confirmation {
        Some(c) if c.confirm == environment.name => Ok(()),
        _ => Err(ApiError::InvalidRequest(format!(
            "this cannot be undone: confirm with {{\"confirm\": \"{}\"}}, the environment's name",
            environment.name
        ))),
    }
}

/// `POST /admin/v1/environments/{environment}/purge` `{"confirm": "<name>"}`: deletes all
/// user data of the environment at once; the environment, its keys and settings remain.
async fn purge_environment(
    admin: Admin,
    path: web::Path<String>,
    body: Option<web::Json<Confirmation>>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = authorized(&state, &admin, &path).await?;
    confirmed(&environment, body.as_deref())?;

    let receipt = state
        .store
        .purge_environment(&environment.id, &admin.actor())
        .await?;

    tracing::info!(env.id = %environment.id, user.count = receipt.removed.get("users"), "environment purged");
    Ok(HttpResponse::Ok().json(receipt))
}

/// `DELETE /admin/v1/environments/{environment}` `{"confirm": "<name>"}`: removes the
/// environment with all its data, keys and settings; its write keys stop working at once.
/// The default environment, which the demo site uses, can be purged but not deleted.
async fn delete_environment(
    admin: Admin,
    path: web::Path<String>,
    body: Option<web::Json<Confirmation>>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = authorized(&state, &admin, &path).await?;
    confirmed(&environment, body.as_deref())?;
    if environment.id == state.default_environment {
        let message = "the default environment cannot be deleted; purge it instead";
        return Err(ApiError::Conflict(message.into()));
    }

    let receipt = state
        .store
        .delete_environment(&environment.id, &admin.actor())
        .await?;

    tracing::info!(env.id = %environment.id, user.count = receipt.removed.get("users"), "environment deleted");
    Ok(HttpResponse::Ok().json(receipt))
}
