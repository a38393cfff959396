//! `/admin/v1/audit`: the audit log, newest first, and the check of its hash chain.

use actix_web::{get, web, HttpResponse};
use serde::Deserialize;
use utoipa_actix_web::service_config::ServiceConfig;

use super::answers::{Forbidden, Invalid, NotFound, Unauthorized};
use super::authorized;
use crate::auth::Admin;
use crate::error::{ApiError, Result};
use crate::server::AppState;
use crate::store::{AuditEntry, ChainCheck};

/// The most entries one page returns.
const MAX_PAGE: i64 = 500;

/// Registers the routes.
pub fn routes(config: &mut ServiceConfig) {
    config.service(list_entries).service(verify_chain);
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct Page {
    /// Only the entries of this environment (id or name).
    environment: Option<String>,
    /// Only entries with a lower sequence number: where the previous page ended.
    before: Option<i64>,
    /// Entries per page.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

/// The audit log, newest first (100 entries unless `limit` says otherwise). A token for
/// one environment sees only its own.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(Page),
    responses(
        (status = 200, body = Vec<AuditEntry>),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
#[get("/admin/v1/audit")]
async fn list_entries(
    admin: Admin,
    page: web::Query<Page>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let limit = page.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::InvalidQuery(format!(
            "limit must be from 1 to {MAX_PAGE}"
        )));
    }
    let environment = match (&page.environment, admin.environment()) {
        (Some(named), _) => Some(authorized(&state, &admin, named).await?.id),
        (None, Some(own)) => Some(own.clone()),
        (None, None) => None,
    };

    let entries = state
        .store
        .audit_entries(environment.as_ref(), page.before, limit)
        .await?;

    Ok(HttpResponse::Ok().json(entries))
}

/// Recomputes every hash of the audit chain and names the first entry that does not hold,
/// if any.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    responses(
        (status = 200, body = ChainCheck),
        (status = 401, response = Unauthorized),
    )
)]
#[get("/admin/v1/audit/verify")]
async fn verify_chain(_admin: Admin, state: web::Data<AppState>) -> Result<HttpResponse> {
    let check = state.store.verify_audit().await?;
    if !check.valid {
        tracing::error!(audit.first_broken = ?check.first_broken, "the audit chain is broken");
    }
    Ok(HttpResponse::Ok().json(check))
}
