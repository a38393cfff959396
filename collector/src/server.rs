//! Wiring the HTTP server: shared state, routes, middleware, static files, the banner.

use std::fs;
use std::io::Write as _;
use std::num::NonZeroU32;
use std::time::Duration;

use actix_files::Files;
use actix_web::body::MessageBody;
use actix_web::dev::{fn_service, Service as _, ServiceRequest, ServiceResponse};
use actix_web::error::JsonPayloadError;
use actix_web::http::header::{self, HeaderValue, ORIGIN};
use actix_web::{get, web, App, HttpResponse, HttpServer, ResponseError as _};
use anyhow::Context as _;
use futures_util::future::{self, Either, FutureExt as _};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Serialize;
use utoipa_actix_web::service_config::ServiceConfig;
use utoipa_actix_web::AppExt as _;

use crate::bootstrap::{self, Bootstrapped};
use crate::config::Config;
use crate::error::{ApiError, ErrorResponse};
use crate::jobs::JobRunner;
use crate::rate_limit::RateLimit;
use crate::store::writer::Writer;
use crate::store::{EnvironmentId, Store};
use crate::sweeper::Sweeper;
use crate::{admin, ingest, metrics, openapi};

/// What every request handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The database, for reads and admin writes.
    pub store: Store,
    /// The group committer, for ingest writes.
    pub writer: Writer,
    /// The environment used when a request names none.
    pub default_environment: EnvironmentId,
    /// The default environment's write key, handed to the demo page.
    pub demo_write_key: String,
    /// Days a deleted user's ids stay suppressed.
    pub suppression_days: u32,
    /// The per-write-key ingest limit, when one is configured.
    pub rate_limit: Option<RateLimit>,
    /// Applies retention rules; admin requests may run it at once.
    pub sweeper: Sweeper,
    /// Whether `/demo/user-hash` answers.
    pub demo_user_hash: bool,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
}

/// Opens the database, makes sure the default environment exists, and serves until a
/// shutdown signal (SIGINT, SIGTERM) arrives. In-flight requests are finished and the group
/// committer drains before the process exits, so every acknowledged message is stored.
///
/// # Errors
///
/// When the database cannot be opened or migrated, or the address cannot be bound.
pub async fn run(config: Config) -> anyhow::Result<()> {
    tracing::info!(config = ?config, "starting");
    let metrics = metrics::install()?;
    fs::create_dir_all(&config.data_dir).with_context(|| {
        format!(
            "while creating the data folder {}",
            config.data_dir.display()
        )
    })?;
    if !config.www_dir.is_dir() {
        tracing::warn!(path = %config.www_dir.display(), "the www folder does not exist");
    }

    let store = Store::open(&config.database_url()).await?;
    let boot = bootstrap::run(&store, &config).await?;
    let (writer, committer) = Writer::start(store.clone());
    let sweeper = Sweeper::new(
        store.clone(),
        Duration::from_secs(config.retention_interval),
        config.suppression_days,
    )
    .yielding_to(writer.clone());
    let sweeping = sweeper.clone().start();
    let running_jobs = JobRunner::new(
        store.clone(),
        config.suppression_days,
        Duration::from_secs(config.job_lease),
    )
    .start();
    let state = web::Data::new(AppState {
        store: store.clone(),
        writer,
        default_environment: boot.environment.id.clone(),
        demo_write_key: boot.write_key.clone(),
        suppression_days: config.suppression_days,
        sweeper,
        demo_user_hash: config.demo_user_hash,
        rate_limit: NonZeroU32::new(config.rate_limit).map(RateLimit::new),
        metrics,
    });

    let www_dir = config.www_dir.clone();
    let app_state = state.clone();
    let server = HttpServer::new(move || {
        let (app, document) = App::new()
            .into_utoipa_app()
            .openapi(openapi::base())
            .configure(ingest::routes)
            .configure(admin::routes)
            .configure(routes)
            .configure(openapi::routes)
            .split_for_parts();
        let served = openapi::Served(openapi::to_json(&document).to_string().into());

        let mut app = app
            .app_data(app_state.clone())
            .app_data(web::Data::new(served))
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|error, _| ApiError::InvalidQuery(error.to_string()).into()),
            )
            .app_data(
                web::JsonConfig::default()
                    .limit(ADMIN_BODY_LIMIT)
                    .error_handler(|error, _| match error {
                        JsonPayloadError::Overflow { .. }
                        | JsonPayloadError::OverflowKnownLength { .. } => {
                            ApiError::PayloadTooLarge {
                                limit: ADMIN_BODY_LIMIT,
                            }
                            .into()
                        }
                        error => {
                            ApiError::InvalidRequest(format!("the body is not valid: {error}"))
                                .into()
                        }
                    }),
            );
        for resource in openapi::method_fallbacks(&document) {
            app = app.service(resource);
        }
        app.service(
            Files::new("/", &www_dir)
                .index_file("index.html")
                .redirect_to_slash_directory()
                .default_handler(fn_service(|req: ServiceRequest| async {
                    let (req, _) = req.into_parts();
                    let response = ApiError::NotFound.error_response();
                    Ok(ServiceResponse::new(req, response))
                })),
        )
        .wrap_fn(|req, service| {
            let observed = observe(&req);
            let answer = match oversized_admin_body(&req) {
                Some(error) => {
                    let response =
                        ServiceResponse::new(req.request().clone(), error.error_response());
                    Either::Left(future::ok(response.map_into_right_body()))
                }
                None => Either::Right(
                    service
                        .call(req)
                        .map(|response| response.map(ServiceResponse::map_into_left_body)),
                ),
            };
            answer.map(move |response| response.map(|r| observed.finish(r)))
        })
    })
    .bind(config.listen)
    .with_context(|| format!("while binding {}", config.listen))?
    .shutdown_timeout(30);

    let address = server
        .addrs()
        .first()
        .copied()
        .context("the server bound no address")?;
    print_banner(&format!("http://{address}"), &boot);
    tracing::info!(http.address = %address, db.backend = store.backend_name(), "listening");

    server.run().await.context("while serving")?;
    // Work cut short rolls its open chunk back: the next sweep, or whichever collector
    // claims the job once its lease runs out, finishes it.
    sweeping.abort();
    running_jobs.abort();
    drop(state);
    committer
        .await
        .context("while draining the group committer")?;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The largest body an admin route reads; its requests are small JSON objects.
const ADMIN_BODY_LIMIT: usize = 64 * 1024;

/// An admin request that announces a body over [`ADMIN_BODY_LIMIT`] is refused before any
/// handler runs, also on the routes whose body is optional (an optional body that cannot
/// be read would otherwise count as absent).
fn oversized_admin_body(req: &ServiceRequest) -> Option<ApiError> {
    if !req.path().starts_with("/admin/v1/") {
        return None;
    }
    let length: usize = req
        .headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()?;
    (length > ADMIN_BODY_LIMIT).then_some(ApiError::PayloadTooLarge {
        limit: ADMIN_BODY_LIMIT,
    })
}

/// What the middleware notes of a request before it runs.
struct Observed {
    route: String,
    origin: Option<HeaderValue>,
    page_policy: Option<&'static str>,
}

/// The admin console runs only its own scripts, loads nothing from elsewhere, and may not
/// be framed (clickjacking).
const CONSOLE_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The demo site also compiles the SDK's WebAssembly, which needs `'wasm-unsafe-eval'`
/// (and nothing like `'unsafe-eval'`).
const SITE_POLICY: &str = "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn observe(req: &ServiceRequest) -> Observed {
    let route = req.match_pattern().unwrap_or_else(|| "static".to_owned());
    let path = req.path();
    let origin = path
        .starts_with("/v1/")
        .then(|| req.headers().get(ORIGIN).cloned())
        .flatten();
    let page_policy = if path.starts_with("/admin/v1/") || path.starts_with("/v1/") {
        None
    } else if path == "/admin" || path.starts_with("/admin/") {
        Some(CONSOLE_POLICY)
    } else {
        Some(SITE_POLICY)
    };
    Observed {
        route,
        origin,
        page_policy,
    }
}

impl Observed {
    /// Counts the request; on the ingest API lets the calling origin read the answer,
    /// unless the environment refused that origin; on pages sets the security headers.
    fn finish<B: MessageBody>(self, mut response: ServiceResponse<B>) -> ServiceResponse<B> {
        metrics::record_request(&self.route, response.status().as_u16());

        let refused = response
            .response()
            .error()
            .and_then(|error| error.as_error::<ApiError>())
            .is_some_and(|error| matches!(error, ApiError::OriginNotAllowed(_)));
        if let (Some(origin), false) = (self.origin, refused) {
            let headers = response.headers_mut();
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(header::VARY, HeaderValue::from_static("Origin"));
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("Retry-After"),
            );
        }
        if let Some(policy) = self.page_policy {
            let headers = response.headers_mut();
            headers.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(policy),
            );
            headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            headers.insert(
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            );
            headers.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            );
        }
        response
    }
}

/// The operations routes: health, readiness, metrics, and what the demo site needs.
fn routes(config: &mut ServiceConfig) {
    config
        .service(healthz)
        .service(readyz)
        .service(render_metrics)
        .service(demo_config)
        .service(demo_user_hash);
}

/// The answer of `/healthz` and `/readyz`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Health {
    /// `ok` (healthz), `ready` or `unavailable` (readyz).
    status: &'static str,
    /// Why the collector is not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
}

/// The process serves.
#[utoipa::path(tag = "operations", responses((status = 200, body = Health)))]
#[get("/healthz")]
async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(Health {
        status: "ok",
        reason: None,
    })
}

/// The database answers.
#[utoipa::path(
    tag = "operations",
    responses(
        (status = 200, description = "The database answers", body = Health),
        (status = 503, description = "The database does not answer", body = Health),
    )
)]
#[get("/readyz")]
async fn readyz(state: web::Data<AppState>) -> HttpResponse {
    match state.store.ping().await {
        Ok(()) => HttpResponse::Ok().json(Health {
            status: "ready",
            reason: None,
        }),
        Err(error) => {
            tracing::warn!(error = %error, "readiness check failed");
            HttpResponse::ServiceUnavailable().json(Health {
                status: "unavailable",
                reason: Some("the database does not answer"),
            })
        }
    }
}

/// Metrics in the Prometheus text format: requests, messages by outcome, batch sizes,
/// commit latency, group sizes, pool use.
#[utoipa::path(
    tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String))
)]
#[get("/metrics")]
async fn render_metrics(state: web::Data<AppState>) -> HttpResponse {
    metrics::record_pool(state.store.pool_use());
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(state.metrics.render())
}

/// What the demo page needs to load the SDK.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct DemoConfig {
    /// The default environment's write key.
    write_key: String,
}

/// What the demo page needs to load the SDK.
#[utoipa::path(tag = "demo", responses((status = 200, body = DemoConfig)))]
#[get("/demo/config.json")]
async fn demo_config(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(DemoConfig {
        write_key: state.demo_write_key.clone(),
    })
}

#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
struct DemoUser {
    /// The user id to compute the hash of.
    #[serde(rename = "userId")]
    #[param(rename = "userId")]
    user_id: String,
}

/// The demo login's identity-verification hash.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
struct DemoUserHash {
    /// The hex HMAC-SHA256 of the user id; `null` when verification is off.
    user_hash: Option<String>,
}

/// What a site's server computes for identity verification, here for the demo's login
/// form. Off unless `EBB_DEMO_USER_HASH` is set; `null` when the default environment has
/// verification off.
#[utoipa::path(
    tag = "demo",
    params(DemoUser),
    responses(
        (status = 200, body = DemoUserHash),
        (status = 400, description = "No `userId`", body = ErrorResponse),
        (status = 404, description = "The demo's hash is off", body = ErrorResponse),
    )
)]
#[get("/demo/user-hash")]
async fn demo_user_hash(
    state: web::Data<AppState>,
    query: web::Query<DemoUser>,
) -> Result<HttpResponse, ApiError> {
    if !state.demo_user_hash {
        return Err(ApiError::NotFound);
    }
    let environment = state
        .store
        .find_environment(state.default_environment.as_str())
        .await?;
    let hash = environment.and_then(|e| e.identity_secret).map(|secret| {
        use hmac::{Hmac, Mac as _};
        let mut mac =
            Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
        mac.update(query.user_id.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    });
    Ok(HttpResponse::Ok().json(DemoUserHash { user_hash: hash }))
}

/// Tells the operator where to go. This is output for a person, not a log line; the first
/// line is also what tests read to find a port chosen by the system.
fn print_banner(base: &str, boot: &Bootstrapped) {
    let mut out = std::io::stdout().lock();
    let mut lines = vec![
        format!("Ebb collector listening on {base}"),
        format!("  demo site:      {base}/"),
        format!("  admin console:  {base}/admin/"),
        format!(
            "  write key of environment \"{}\": {}",
            boot.environment.name, boot.write_key
        ),
    ];
    if let Some((token, file)) = &boot.admin_token {
        lines.push(format!(
            "  admin token:    {token}  (kept in {})",
            file.display()
        ));
    }
    for line in lines {
        // A closed stdout must not stop the collector.
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
}
