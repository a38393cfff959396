//! `/admin/v1/audit`: the audit log, newest first, and the check of its hash chain.

use actix_web::{web, HttpResponse};
use serde::Deserialize;

use super::authorized;
use crate::auth::Admin;
use crate::error::{ApiError, Result};
use crate::server::AppState;

/// The most entries one page returns.
const MAX_PAGE: i64 = 500;

/// Registers the routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route("/admin/v1/audit", web::get().to(list_entries))
        .route("/admin/v1/audit/verify", web::get().to(verify_chain));
}

#[derive(Debug, Deserialize)]
struct Page {
    environment: Option<String>,
    before: Option<i64>,
    limit: Option<i64>,
}

/// `GET /admin/v1/audit?environment=&before=&limit=`: entries newest first; `before` is
/// the sequence number to continue below. A token for one environment sees only its own.
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

/// `GET /admin/v1/audit/verify`: recomputes every hash of the chain and names the first
/// entry that does not hold, if any.
async fn verify_chain(_admin: Admin, state: web::Data<AppState>) -> Result<HttpResponse> {
    let check = state.store.verify_audit().await?;
    if !check.valid {
        tracing::error!(audit.first_broken = ?check.first_broken, "the audit chain is broken");
    }
    Ok(HttpResponse::Ok().json(check))
}
