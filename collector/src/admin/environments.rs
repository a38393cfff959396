//! `/admin/v1/environments`: create, list, rename, configure, rotate keys and secrets,
//! purge and delete environments.
//!
//! Secrets generated here (write keys, identity secrets) are returned once, in the answer
//! to the request that made them. Purging or deleting an environment asks for its name as
//! confirmation (`{"confirm": "<name>"}`), since neither can be undone.
//!
//! Every change is written to the audit log with what was asked and by which token; the
//! keys and secrets themselves never are: the log is never pruned and every token of the
//! environment reads it, so a secret written there could not be taken back.

use actix_web::{delete, get, patch, post, web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa_actix_web::service_config::ServiceConfig;

use super::answers::{Conflict, Forbidden, Invalid, NotFound, TooLarge, Unauthorized};
use super::{authorized, Body};
use crate::auth::Admin;
use crate::bootstrap::generate_secret;
use crate::error::{ApiError, Result};
use crate::server::AppState;
use crate::store::{Environment, EnvironmentChanges, Receipt};

/// The longest environment name, in characters.
const MAX_NAME_CHARS: usize = 100;

/// Registers the routes.
pub fn routes(config: &mut ServiceConfig) {
    config
        .service(list_environments)
        .service(create_environment)
        .service(get_environment)
        .service(update_environment)
        .service(delete_environment)
        .service(purge_environment)
        .service(rotate_write_key)
        .service(rotate_identity_secret)
        .service(remove_identity_secret);
}

/// An environment as the admin API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct EnvironmentView {
    #[serde(flatten)]
    environment: Environment,
    /// Whether messages naming a user must carry `context.userHash`.
    identity_verification: bool,
    /// The write keys that send to it.
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

/// Every environment the token may see.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    responses(
        (status = 200, body = Vec<EnvironmentView>),
        (status = 401, response = Unauthorized),
    )
)]
#[get("/admin/v1/environments")]
async fn list_environments(admin: Admin, state: web::Data<AppState>) -> Result<HttpResponse> {
    let mut views = Vec::new();
    for environment in state.store.environments().await? {
        if admin.authorize(&environment.id).is_ok() {
            views.push(view(&state, environment).await?);
        }
    }
    Ok(HttpResponse::Ok().json(views))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct NewEnvironment {
    /// Its unique name.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f]"
    )]
    name: String,
}

/// A new environment with a fresh write key; takes a token for every environment.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    request_body = NewEnvironment,
    responses(
        (status = 201, body = EnvironmentView),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 413, response = TooLarge),
        (status = 403, response = Forbidden),
        (status = 409, response = Conflict),
    )
)]
#[post("/admin/v1/environments")]
async fn create_environment(
    admin: Admin,
    body: Body<NewEnvironment>,
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

    let request = json!({ "name": environment.name });
    let id = Some(&environment.id);
    state
        .store
        .audit(id, &admin.actor(), "create_environment", request, json!({}))
        .await?;
    tracing::info!(env.id = %environment.id, "environment created");
    Ok(HttpResponse::Created().json(view(&state, environment).await?))
}

/// One environment.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(("environment", example = "default", description = "Its id or name")),
    responses(
        (status = 200, body = EnvironmentView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
#[get("/admin/v1/environments/{environment}")]
async fn get_environment(
    admin: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = authorized(&state, &admin, &path).await?;
    Ok(HttpResponse::Ok().json(view(&state, environment).await?))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct EnvironmentUpdate {
    /// A new unique name.
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f]"
    )]
    name: Option<String>,
    /// The browser origins that may send (`https://shop.example`, or `*`); empty: any.
    #[schema(schema_with = origins_schema)]
    allowed_origins: Option<Vec<String>>,
    /// Whether to keep client IP addresses.
    store_ip: Option<bool>,
}

/// What [`valid_origins`] takes: `*`, or `scheme://host[:port]` with nothing after.
fn origins_schema() -> utoipa::openapi::schema::Array {
    let origin = utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        // Visible ASCII but `/`, `?` and `#` after the scheme, as `valid_origins` checks.
        .pattern(Some(r#"^(\*|[A-Za-z0-9+.-]+://[!-"$-.0->@-~]+)$"#));
    utoipa::openapi::schema::ArrayBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            utoipa::openapi::Type::Array,
            utoipa::openapi::Type::Null,
        ]))
        .items(origin)
        .build()
}

/// Renames the environment, sets its browser origins or its IP storage.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(("environment", example = "default", description = "Its id or name")),
    request_body = EnvironmentUpdate,
    responses(
        (status = 200, body = EnvironmentView),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 413, response = TooLarge),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    )
)]
#[patch("/admin/v1/environments/{environment}")]
async fn update_environment(
    admin: Admin,
    path: web::Path<String>,
    body: Body<EnvironmentUpdate>,
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

/// A new write key for the environment, shown in this answer only.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct NewWriteKey {
    /// The environment's only write key from now on.
    write_key: String,
}

/// Rotates the write key: a new one replaces every old one at once.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(("environment", example = "default", description = "Its id or name")),
    responses(
        (status = 200, body = NewWriteKey),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
#[post("/admin/v1/environments/{environment}/write-key")]
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

    let id = Some(&environment.id);
    state
        .store
        .audit(id, &admin.actor(), "rotate_write_key", json!({}), json!({}))
        .await?;
    tracing::info!(env.id = %environment.id, "write key rotated");
    Ok(HttpResponse::Ok().json(NewWriteKey { write_key }))
}

/// A new identity-verification secret, shown in this answer only.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct NewIdentitySecret {
    /// The key of the HMAC-SHA256 that `context.userHash` must carry.
    identity_secret: String,
}

/// Turns identity verification on with a new secret (or rotates it): from now on every
/// message with a `userId` must carry `context.userHash`.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(("environment", example = "default", description = "Its id or name")),
    responses(
        (status = 200, body = NewIdentitySecret),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
#[post("/admin/v1/environments/{environment}/identity-secret")]
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

    let request = json!({
        "identityVerification": true,
        "rotated": environment.identity_secret.is_some(),
    });
    let id = Some(&environment.id);
    state
        .store
        .audit(
            id,
            &admin.actor(),
            "set_identity_secret",
            request,
            json!({}),
        )
        .await?;
    tracing::info!(env.id = %environment.id, "identity secret set");
    Ok(HttpResponse::Ok().json(NewIdentitySecret {
        identity_secret: secret,
    }))
}

/// Turns identity verification off.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(("environment", example = "default", description = "Its id or name")),
    responses(
        (status = 204, description = "Verification is off"),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
#[delete("/admin/v1/environments/{environment}/identity-secret")]
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

    let request = json!({ "identityVerification": false });
    let id = Some(&environment.id);
    state
        .store
        .audit(
            id,
            &admin.actor(),
            "remove_identity_secret",
            request,
            json!({}),
        )
        .await?;
    tracing::info!(env.id = %environment.id, "identity verification turned off");
    Ok(HttpResponse::NoContent().finish())
}

/// A name of 1 to [`MAX_NAME_CHARS`] characters as sent, not only blanks, no control
/// characters; kept without its surrounding blanks.
fn valid_name(name: &str) -> Result<String> {
    let sent = name.chars().count();
    let name = name.trim();
    if name.is_empty() || sent > MAX_NAME_CHARS {
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
                    // Browsers send origins as visible ASCII; a control character (NUL
                    // above all, which PostgreSQL cannot store in text) is never one.
                    && rest.chars().all(|c| c.is_ascii_graphic())
            });
        if !shaped {
            let message = format!("`{origin}` is not an origin such as https://shop.example");
            return Err(ApiError::InvalidRequest(message));
        }
    }
    Ok(origins)
}

/// The confirmation that purging or deleting an environment asks for.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Confirmation {
    /// The environment's name.
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

/// Deletes all user data of the environment at once; the environment, its keys and
/// settings remain. Confirmed with `{"confirm": "<its name>"}`; anything else is refused.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(("environment", example = "default", description = "Its id or name")),
    request_body = Confirmation,
    responses(
        (status = 200, description = "What was deleted", body = Receipt),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 413, response = TooLarge),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
#[post("/admin/v1/environments/{environment}/purge")]
async fn purge_environment(
    admin: Admin,
    path: web::Path<String>,
    body: Option<Body<Confirmation>>,
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

/// Removes the environment with all its data, keys and settings; its write keys stop
/// working at once. Confirmed with `{"confirm": "<its name>"}`. The default environment,
/// which the demo site uses, can be purged but not deleted.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(("environment", example = "default", description = "Its id or name")),
    request_body = Confirmation,
    responses(
        (status = 200, description = "What was deleted", body = Receipt),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 413, response = TooLarge),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    )
)]
#[delete("/admin/v1/environments/{environment}")]
async fn delete_environment(
    admin: Admin,
    path: web::Path<String>,
    body: Option<Body<Confirmation>>,
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
