//! Wiring the HTTP server: shared state, routes, static files, the start-up banner.

use std::fs;
use std::io::Write as _;

use actix_files::Files;
use actix_web::dev::{fn_service, ServiceRequest, ServiceResponse};
use actix_web::{web, App, HttpResponse, HttpServer, ResponseError as _};
use anyhow::Context as _;
use serde_json::json;

use crate::bootstrap::{self, Bootstrapped};
use crate::config::Config;
use crate::error::ApiError;
use crate::store::{EnvironmentId, Store};
use crate::{admin, ingest};

/// What every request handler shares.
#[derive(Debug)]
pub struct AppState {
    /// The database.
    pub store: Store,
    /// The environment used when a request names none.
    pub default_environment: EnvironmentId,
    /// The default environment's write key, handed to the demo page.
    pub demo_write_key: String,
}

/// Opens the database, makes sure the default environment exists, and serves until a
/// shutdown signal (SIGINT, SIGTERM) arrives; in-flight requests are finished first.
///
/// # Errors
///
/// When the database cannot be opened or migrated, or the address cannot be bound.
pub async fn run(config: Config) -> anyhow::Result<()> {
    tracing::info!(config = ?config, "starting");
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
    let state = web::Data::new(AppState {
        store: store.clone(),
        default_environment: boot.environment.id.clone(),
        demo_write_key: boot.write_key.clone(),
    });

    let www_dir = config.www_dir.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(
                web::QueryConfig::default()
                    .error_handler(|error, _| ApiError::InvalidQuery(error.to_string()).into()),
            )
            .configure(ingest::routes)
            .configure(admin::routes)
            .route(
                "/healthz",
                web::get().to(|| async { HttpResponse::Ok().json(json!({"status": "ok"})) }),
            )
            .route("/demo/config.json", web::get().to(demo_config))
            .service(
                Files::new("/", &www_dir)
                    .index_file("index.html")
                    .redirect_to_slash_directory()
                    .default_handler(fn_service(|req: ServiceRequest| async {
                        let (req, _) = req.into_parts();
                        let response = ApiError::NotFound.error_response();
                        Ok(ServiceResponse::new(req, response))
                    })),
            )
    })
    .bind(&config.listen)
    .with_context(|| format!("while binding {}", config.listen))?
    .shutdown_timeout(30);

    let address = server
        .addrs()
        .first()
        .copied()
        .context("the server bound no address")?;
    print_banner(&format!("http://{address}"), &boot);
    tracing::info!(http.address = %address, "listening");

    server.run().await.context("while serving")?;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// `GET /demo/config.json`: what the demo page needs to load the SDK.
async fn demo_config(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok().json(json!({ "writeKey": state.demo_write_key }))
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
