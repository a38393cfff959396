//! Segments: users matching a filter (see [`crate::segment`] for the language), their
//! count and a sample, and deleting them all as a background job with progress.

use actix_web::{get, post, web, HttpResponse};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa_actix_web::service_config::ServiceConfig;

use super::answers::{Forbidden, Invalid, NotFound, TooLarge, Unauthorized};
use super::{authorized, Body};
use crate::auth::Admin;
use crate::error::{ApiError, Result};
use crate::segment::Filter;
use crate::server::AppState;
use crate::store::{Job, UserSummary};

/// Users in a preview's sample.
const SAMPLE: i64 = 10;

/// The most users one page lists.
const MAX_PAGE: i64 = 200;

/// Registers the routes.
pub fn routes(config: &mut ServiceConfig) {
    config
        .service(preview)
        .service(list_users)
        .service(delete)
        .service(list_jobs)
        .service(get_job)
        .service(cancel_job);
}

/// A page of a segment's users: the filter, where the page starts and how long it is.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SegmentRequest {
    /// The filter (see the `SegmentFilter` schema); without it, everyone.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::segment_filter_field)]
    filter: Option<Value>,
    /// Users per page.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 200)]
    limit: Option<i64>,
    /// Users to skip.
    #[serde(default)]
    #[schema(minimum = 0)]
    offset: Option<i64>,
}

/// How many users match a filter, and a few of them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SegmentPreview {
    /// Users matching.
    count: u64,
    /// Up to ten of them, most recently seen first.
    sample: Vec<UserSummary>,
}

/// A page of the users matching a filter.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct SegmentPage {
    /// Users matching.
    count: u64,
    /// This page of them, most recently seen first.
    users: Vec<UserSummary>,
}

impl SegmentRequest {
    fn filter(&self) -> Result<Filter> {
        let everyone = json!({});
        parse(self.filter.as_ref().unwrap_or(&everyone))
    }
}

/// The segment to preview.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PreviewRequest {
    /// The filter (see the `SegmentFilter` schema); without it, everyone.
    #[serde(default)]
    #[schema(schema_with = crate::openapi::segment_filter_field)]
    filter: Option<Value>,
}

/// The segment a deletion job is to delete.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SegmentDeletion {
    /// The filter (see the `SegmentFilter` schema). It is required: deleting everyone is
    /// a purge of the environment.
    #[serde(default)]
    #[schema(required = true, schema_with = crate::openapi::segment_filter_reference)]
    filter: Option<Value>,
}

fn parse(filter: &Value) -> Result<Filter> {
    Filter::parse(filter).map_err(|error| ApiError::InvalidRequest(error.to_string()))
}

/// How many users match the filter, and a few of them.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(("environment", example = "default", description = "Its id or name")),
    request_body = PreviewRequest,
    responses(
        (status = 200, body = SegmentPreview),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 413, response = TooLarge),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
#[post("/admin/v1/environments/{environment}/segments/preview")]
async fn preview(
    admin: Admin,
    path: web::Path<String>,
    body: Body<PreviewRequest>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = authorized(&state, &admin, &path).await?;
    let filter = parse(body.filter.as_ref().unwrap_or(&json!({})))?;
    let now = Utc::now();

    let count = state
        .store
        .segment_count(&environment.id, &filter, now)
        .await?;
    let sample = state
        .store
        .segment_users(&environment.id, &filter, now, SAMPLE, 0)
        .await?;

    Ok(HttpResponse::Ok().json(SegmentPreview { count, sample }))
}

/// A page of the users matching the filter (`limit` 50 and `offset` 0 unless given), most
/// recently seen first, with the total count.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(("environment", example = "default", description = "Its id or name")),
    request_body = SegmentRequest,
    responses(
        (status = 200, body = SegmentPage),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 413, response = TooLarge),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
#[post("/admin/v1/environments/{environment}/segments/users")]
async fn list_users(
    admin: Admin,
    path: web::Path<String>,
    body: Body<SegmentRequest>,
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

    Ok(HttpResponse::Ok().json(SegmentPage { count, users }))
}

/// Starts a job that deletes every user matching the filter (which is required here) and
/// answers with it; follow it at `…/jobs/{id}`.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(("environment", example = "default", description = "Its id or name")),
    request_body = SegmentDeletion,
    responses(
        (status = 202, body = Job),
        (status = 400, response = Invalid),
        (status = 401, response = Unauthorized),
        (status = 413, response = TooLarge),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
#[post("/admin/v1/environments/{environment}/segments/delete")]
async fn delete(
    admin: Admin,
    path: web::Path<String>,
    body: Body<SegmentDeletion>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = authorized(&state, &admin, &path).await?;
    let Some(filter) = &body.filter else {
        let message = "send the segment's filter; to delete everyone, purge the environment";
        return Err(ApiError::InvalidRequest(message.into()));
    };
    let filter = parse(filter)?;

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

/// The environment's latest jobs.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(("environment", example = "default", description = "Its id or name")),
    responses(
        (status = 200, body = Vec<Job>),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
#[get("/admin/v1/environments/{environment}/jobs")]
async fn list_jobs(
    admin: Admin,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse> {
    let environment = authorized(&state, &admin, &path).await?;
    Ok(HttpResponse::Ok().json(state.store.jobs(&environment.id).await?))
}

/// A job's status and progress.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(
        ("environment", example = "default", description = "Its id or name"),
        ("id", description = "The job's id"),
    ),
    responses(
        (status = 200, body = Job),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
#[get("/admin/v1/environments/{environment}/jobs/{id}")]
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

/// Cancels a job: it stops after its current chunk; what it deleted stays deleted.
#[utoipa::path(
    tag = "admin",
    security(("adminToken" = [])),
    params(
        ("environment", example = "default", description = "Its id or name"),
        ("id", description = "The job's id"),
    ),
    responses(
        (status = 200, body = Job),
        (status = 401, response = Unauthorized),
        (status = 403, response = Forbidden),
        (status = 404, response = NotFound),
    )
)]
#[post("/admin/v1/environments/{environment}/jobs/{id}/cancel")]
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
