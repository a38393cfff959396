//! The admin API (`/admin/v1/...`): what operators read and do, behind an admin token.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use crate::auth::Admin;
use crate::error::{ApiError, Result};
use crate::server::AppState;
use crate::store::Environment;

/// Registers the admin routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config.route("/admin/v1/users/{id}", web::get().to(get_user));
}

/// Selects the environment an admin request is about; the default one when absent.
#[derive(Debug, Deserialize)]
pub struct EnvironmentQuery {
    /// The environment's name.
    environment: Option<String>,
}

impl EnvironmentQuery {
    async fn resolve(&self, state: &AppState, admin: &Admin) -> Result<Environment> {
        let environment = match &self.environment {
            Some(name) => state
                .store
                .environment_by_name(name)
                .await?
                .ok_or_else(|| ApiError::EnvironmentNotFound(name.clone()))?,
            None => state
                .store
                .environment(&state.default_environment)
                .await?
                .ok_or_else(|| ApiError::Internal("the default environment is missing".into()))?,
        };
        admin.authorize(&environment.id)?;
        Ok(environment)
    }
}

/// `GET /admin/v1/users/{id}`: one user's ids, traits and events; `id` is a user id or an
/// anonymous id.
async fn get_user(
    admin: Admin,
    id: web::Path<String>,
    query: web::Query<EnvironmentQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = query.resolve(&state, &admin).await?;

    let profile = state.store.user_profile(&environment.id, &id).await?;

    let profile = profile.ok_or(ApiError::UserNotFound)?;
    Ok(HttpResponse::Ok().json(profile))
}
