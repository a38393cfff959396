//! `/admin/v1/environments/{environment}/retention`: the rule, what it would delete now,
//! and a sweep on request.

use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde_json::json;

use super::authorized;
use crate::auth::Admin;
use crate::error::{ApiError, Result};
use crate::server::AppState;
use crate::store::{Environment, EnvironmentChanges, RetentionRule};

/// The longest retention period accepted, in days (100 years).
const MAX_DAYS: u32 = 36_500;

/// Registers the routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route(
            "/admin/v1/environments/{environment}/retention",
            web::get().to(get_rule),
        )
        .route(
            "/admin/v1/environments/{environment}/retention",
            web::put().to(set_rule),
        )
        .route(
            "/admin/v1/environments/{environment}/retention/sweep",
            web::post().to(sweep),
        );
}

async fn rule_and_preview(state: &AppState, environment: &Environment) -> Result<HttpResponse> {
    let rule = environment.retention;
    let preview = state
        .store
        .retention_preview(&environment.id, &rule, Utc::now())
        .await?;
    Ok(HttpResponse::Ok().json(json!({ "rule": rule, "preview": preview })))
}

/// `GET …/retention`: the rule, how many users it would delete now, and the users by days
/// since last seen.
async fn get_rule(
    admin: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = authorized(&state, &admin, &path).await?;
    rule_and_preview(&state, &environment).await
}

/// `PUT …/retention` `{"days": 365, "daysWithoutResponse": 90}`; `null` turns a part off.
async fn set_rule(
    admin: Admin,
    path: web::Path<String>,
    body: web::Json<RetentionRule>,
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

/// `POST …/retention/sweep`: applies the rule now and answers with what went.
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
