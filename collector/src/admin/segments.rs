//! Segments: users matching a filter (see [`crate::segment`] for the language), their
//! count and a sample, and deleting them all as a background job with progress.

use actix_web::{web, HttpResponse};
use chrono::Utc;
use serde::Deserialize;
use serde_json::{json, Value};

use super::authorized;
use crate::auth::Admin;
use crate::error::{ApiError, Result};
use crate::segment::Filter;
use crate::server::AppState;

/// Users in a preview's sample.
const SAMPLE: i64 = 10;

/// The most users one page lists.
const MAX_PAGE: i64 = 200;

/// Registers the routes.
pub fn routes(config: &mut web::ServiceConfig) {
    config
        .route(
            "/admin/v1/environments/{environment}/segments/preview",
            web::post().to(preview),
        )
        .route(
            "/admin/v1/environments/{environment}/segments/users",
            web::post().to(list_users),
        )
        .route(
            "/admin/v1/environments/{environment}/segments/delete",
            web::post().to(delete),
        )
        .route(
            "/admin/v1/environments/{environment}/jobs",
            web::get().to(list_jobs),
        )
        .route(
            "/admin/v1/environments/{environment}/jobs/{id}",
            web::get().to(get_job),
        )
        .route(
            "/admin/v1/environments/{environment}/jobs/{id}/cancel",
            web::post().to(cancel_job),
        );
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SegmentRequest {
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    offset: Option<i64>,
}

impl SegmentRequest {
    fn filter(&self) -> Result<Filter> {
        let everyone = json!({});
        Filter::parse(self.filter.as_ref().unwrap_or(&everyone))
            .map_err(|error| ApiError::InvalidRequest(error.to_string()))
    }
}

/// `POST …/segments/preview` `{"filter": …}`: how many users match, and a few of them.
async fn preview(
    admin: Admin,
    path: web::Path<String>,
    body: web::Json<SegmentRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = authorized(&state, &admin, &path).await?;
    let filter = body.filter()?;
    let now = Utc::now();

    let count = state
        .store
        .segment_count(&environment.id, &filter, now)
        .await?;
    let sample = state
        .store
        .segment_users(&environment.id, &filter, now, SAMPLE, 0)
        .await?;

    Ok(HttpResponse::Ok().json(json!({ "count": count, "sample": sample })))
}

/// `POST …/segments/users` `{"filter": …, "limit": 50, "offset": 0}`: a page of the
/// matching users, most recently seen first, with the total count.
async fn list_users(
    admin: Admin,
    path: web::Path<String>,
    body: web::Json<SegmentRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = authorized(&state, &admin, &path).await?;
    let filter = body.filter()?;
    let limit = body.limit.unwrap_or(50);
    let offset = body.offset.unwrap_or(0);
    if !(1..=MAX_PAGE).contains(&limit) || offset < 0 {
        let message = format!("limit is 1 to {MAX_PAGE} and offset 0 or more");
        return Err(ApiError::InvalidRequest(message));
    }
    let now = Utc::now();

    let count = state
        .store
        .segment_count(&environment.id, &filter, now)
        .await?;
    let users = state
        .store
        .segment_users(&environment.id, &filter, now, limit, offset)
        .await?;

    Ok(HttpResponse::Ok().json(json!({ "count": count, "users": users })))
}

/// `POST …/segments/delete` `{"filter": …}`: starts a job that deletes every matching user
/// and answers `202` with it; follow it at `…/jobs/{id}`.
async fn delete(
    admin: Admin,
    path: web::Path<String>,
    body: web::Json<SegmentRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = authorized(&state, &admin, &path).await?;
    if body.filter.is_none() {
        let message = "send the segment's filter; to delete everyone, purge the environment";
        return Err(ApiError::InvalidRequest(message.into()));
    }
    let filter = body.filter()?;

    let total = state
        .store
        .segment_count(&environment.id, &filter, Utc::now())
        .await?;
    let job = state
        .store
        .create_job(&environment.id, &filter, total, &admin.actor())
        .await?;

    tracing::info!(env.id = %environment.id, job.id = %job.id, user.count = total, "segment deletion requested");
    Ok(HttpResponse::Accepted().json(job))
}

/// `GET …/jobs`: the environment's latest jobs.
async fn list_jobs(
    admin: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = authorized(&state, &admin, &path).await?;
    Ok(HttpResponse::Ok().json(state.store.jobs(&environment.id).await?))
}

/// `GET …/jobs/{id}`: status and progress.
async fn get_job(
    admin: Admin,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let (environment, id) = path.into_inner();
    let environment = authorized(&state, &admin, &environment).await?;

    let job = state.store.job(&environment.id, &id).await?;

    Ok(HttpResponse::Ok().json(job.ok_or(ApiError::NotFound)?))
}

/// `POST …/jobs/{id}/cancel`: the job stops after its current chunk; what it deleted stays
/// deleted.
async fn cancel_job(
    admin: Admin,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let (environment, id) = path.into_inner();
    let environment = authorized(&state, &admin, &environment).await?;

    let job = state.store.cancel_job(&environment.id, &id).await?;

    Ok(HttpResponse::Ok().json(job.ok_or(ApiError::NotFound)?))
}
