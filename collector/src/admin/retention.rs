//! `/admin/v1/environments/{environment}/retention`: the rule, what it would delete now,
//! and a sweep on request.

use actix_web::{get, post, put, web, HttpResponse};
use chrono::Utc;
use serde::Serialize;
use serde_json::json;
use utoipa_actix_web::service_config::ServiceConfig;

use super::answers::{Conflict, Forbidden, Invalid, NotFound, TooLarge, Unauthorized};
use super::{authorized, Body};
use crate::auth::Admin;
use crate::error::{ApiError, Result};
use crate::server::AppState;
use crate::store::{Environment, EnvironmentChanges, RetentionPreview, RetentionRule};
use crate::sweeper::SweepRun;

/// The longest retention period accepted, in days (100 years).
const MAX_DAYS: u32 = 36_500;

/// Registers the routes.
pub fn routes(config: &mut ServiceConfig) {
    config.service(get_rule).service(set_rule).service(sweep);
}

/// A retention rule and what it would do now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct RuleView {
    /// The rule.
    rule: RetentionRule,
    /// How many users it would delete now, and the users by days since last seen.
    preview: RetentionPreview,
}

async fn rule_and_preview(state: &AppState, environment: &Environment) -> Result<HttpResponse> {
    let rule = environment.retention;
    let preview = state
        .store
        .retention_preview(&environment.id, &rule, Utc::now())
        .await?;
    Ok(HttpResponse::Ok().json(RuleView { rule, preview }))
}

/// The environment's retention rule, how many users it would delete now, and the users by
/// days since last seen.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(("environment", example = "default", description = "Its id or name")),
    responses(
        (status = 200, body = RuleView),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
#[get("/admin/v1/environments/{environment}/retention")]
async fn get_rule(
    admin: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = authorized(&state, &admin, &path).await?;
    rule_and_preview(&state, &environment).await
}

/// Sets the retention rule, such as `{"days": 365, "daysWithoutResponse": 90}`; `null`
/// or a missing field turns that part off.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(("environment", example = "default", description = "Its id or name")),
    request_body = RetentionRule,
    responses(
        (status = 200, body = RuleView),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 413, response = TooLarge),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
#[put("/admin/v1/environments/{environment}/retention")]
async fn set_rule(
    admin: Admin,
    path: web::Path<String>,
    body: Body<RetentionRule>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = authorized(&state, &admin, &path).await?;
    let rule = body.into_inner();
    for days in [rule.days, rule.days_without_response]
        .into_iter()
        .flatten()
    {
        if !(1..=MAX_DAYS).contains(&days) {
            let message = format!("retention periods are 1 to {MAX_DAYS} days, or null for none");
            return Err(ApiError::InvalidRequest(message));
        }
    }

    let changes = EnvironmentChanges {
        retention: Some(rule),
        ..Default::default()
    };
    let updated = state
        .store
        .update_environment(&environment.id, &changes)
        .await?;
    let request = json!({ "rule": rule });
    state
        .store
        .audit(
            Some(&environment.id),
            &admin.actor(),
            "set_retention",
            request,
            json!({}),
        )
        .await?;

    let updated = updated.ok_or_else(|| ApiError::EnvironmentNotFound(path.into_inner()))?;
    tracing::info!(env.id = %updated.id, "retention rule set");
    rule_and_preview(&state, &updated).await
}

/// Applies the retention rule now and answers with what went.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(("environment", example = "default", description = "Its id or name")),
    responses(
        (status = 200, body = SweepRun),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    )
)]
#[post("/admin/v1/environments/{environment}/retention/sweep")]
async fn sweep(
    admin: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = authorized(&state, &admin, &path).await?;
    if !environment.retention.is_set() {
        return Err(ApiError::Conflict(
            "this environment has no retention rule".into(),
        ));
    }

    let run = state.sweeper.sweep_now(&environment).await?;

    match run {
        Some(run) => Ok(HttpResponse::Ok().json(run)),
        None => Err(ApiError::Conflict(
            "a sweep of this environment is running; try again".into(),
        )),
    }
}
