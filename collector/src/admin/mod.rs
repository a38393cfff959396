//! The admin API (`/admin/v1/...`): what operators read and do, behind an admin token.
//!
//! Environments are named in paths by id or by name. A token scoped to one environment
//! sees and changes only that one; creating environments and tokens takes a token for all
//! of them. Every change, deletion and export is written to the audit log.

mod audit;
mod environments;
mod retention;
mod segments;
mod tokens;
mod users;

use std::ops::Deref;

use actix_web::dev::Payload;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{Map, Value};
pub use users::to_batches as export_batches;
use utoipa_actix_web::service_config::ServiceConfig;

use crate::auth::Admin;
use crate::error::{ApiError, ErrorResponse, Result};
use crate::server::AppState;
use crate::store::Environment;

/// Registers every admin route.
pub fn routes(config: &mut ServiceConfig) {
    environments::routes(config);
    retention::routes(config);
    segments::routes(config);
    users::routes(config);
    audit::routes(config);
    tokens::routes(config);
}

/// Finds the environment a path or query names and checks the token may act on it.
async fn authorized(state: &AppState, admin: &Admin, id_or_name: &str) -> Result<Environment> {
    if id_or_name.contains('\0') {
        return Err(ApiError::EnvironmentNotFound(
            id_or_name.replace('\0', "\\0"),
        ));
    }
    let environment = state
        .store
        .find_environment(id_or_name)
        .await?
        .ok_or_else(|| ApiError::EnvironmentNotFound(id_or_name.to_owned()))?;
    admin.authorize(&environment.id)?;
    Ok(environment)
}

/// A user id or anonymous id from a path: ingest refuses NUL characters, so an id with one
/// names nobody (and PostgreSQL cannot even compare it).
fn stored_id(id: &str) -> Result<&str> {
    if id.contains('\0') {
        Err(ApiError::UserNotFound)
    } else {
        Ok(id)
    }
}

/// Selects the environment a request about users is for: `?environment=<id or name>`;
/// without it, the token's own environment, or the default one.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct EnvironmentQuery {
    /// The environment's id or name; without it, the token's own environment or the
    /// default one.
    environment: Option<String>,
}

impl EnvironmentQuery {
    async fn resolve(&self, state: &AppState, admin: &Admin) -> Result<Environment> {
        let fallback = admin.environment().unwrap_or(&state.default_environment);
        let named = self.environment.as_deref().unwrap_or(fallback.as_str());
        authorized(state, admin, named).await
    }
}

/// A JSON object body read into `T`. Unlike `web::Json`, it refuses an array: serde reads
/// a struct from an array field by field, so `[null, null]` would pass for `{}`. And a
/// number with a zero fraction counts as that integer (`365.0` is `365`), as JSON Schema
/// counts it, where serde would refuse it for an integer field.
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T> Body<T> {
    /// The body's value.
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> Deref for Body<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Body<T> {
    type Error = actix_web::Error;
    type Future = LocalBoxFuture<'static, Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let object = web::Json::<Map<String, Value>>::from_request(req, payload);
        Box::pin(async move {
            let web::Json(mut object) = object.await?;
            object.values_mut().for_each(integral_floats_as_integers);
            serde_json::from_value(Value::Object(object))
                .map(Body)
                .map_err(|error| {
                    ApiError::InvalidRequest(format!("the body is not valid: {error}")).into()
                })
        })
    }
}

/// Turns every number with a zero fraction in `value` into that integer, where it fits 64
/// bits.
#[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
fn integral_floats_as_integers(value: &mut Value) {
    match value {
        Value::Number(number) if number.is_f64() => {
            let float = number.as_f64().unwrap_or(f64::NAN);
            if float.fract() == 0.0 && (i64::MIN as f64..0.0).contains(&float) {
                *value = Value::from(float as i64);
            } else if float.fract() == 0.0 && (0.0..u64::MAX as f64).contains(&float) {
                *value = Value::from(float as u64);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_as_integers),
        Value::Object(map) => map.values_mut().for_each(integral_floats_as_integers),
        _ => {}
    }
}

/// The answers admin routes share, named in the description's `components.responses`.
/// The types only name a body for the description; no value of them is ever built.
#[allow(dead_code)]
pub mod answers {
    use super::ErrorResponse;

    /// A body or parameter that is not valid for the route.
    #[derive(Debug, utoipa::ToResponse)]
    pub struct Invalid(ErrorResponse<'static>);

    /// No admin token (`missing_admin_token`), or an unknown one (`invalid_admin_token`).
    #[derive(Debug, utoipa::ToResponse)]
    #[response(headers(("WWW-Authenticate" = String, description = "`Bearer`")))]
    pub struct Unauthorized(ErrorResponse<'static>);

    /// The token is for another environment, or the route needs a token for all of them.
    #[derive(Debug, utoipa::ToResponse)]
    pub struct Forbidden(ErrorResponse<'static>);

    /// No environment, user, job, token or tombstone is named so.
    #[derive(Debug, utoipa::ToResponse)]
    pub struct NotFound(ErrorResponse<'static>);

    /// The request conflicts with what is stored or running.
    #[derive(Debug, utoipa::ToResponse)]
    pub struct Conflict(ErrorResponse<'static>);

    /// The body is over the admin routes' limit of 64 KiB (`payload_too_large`).
    #[derive(Debug, utoipa::ToResponse)]
    pub struct TooLarge(ErrorResponse<'static>);
}
