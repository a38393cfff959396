//! The operator's commands: the lifecycle operations of the admin API, run against the
//! configured database from a terminal or a script.
//!
//! Each command prints its result (a receipt, an export, a report) as JSON on stdout,
//! shows a progress bar on stderr for long work when stderr is a terminal, and exits with a
//! code a script can rely on: see [`Exit`]. Actions are audited with the actor
//! `cli:<user name>`.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::config::{Command, Config, ExportFormat};
use crate::error::ApiError;
use crate::jobs::JobRunner;
use crate::segment::Filter;
use crate::store::{Actor, Environment, Store};
use crate::sweeper::Sweeper;

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It did what was asked.
    Done = 0,
    /// It failed (database, I/O); nothing was half done beyond what a receipt shows.
    Failed = 1,
    /// The arguments or the confirmation were wrong.
    Usage = 2,
    /// The user or environment does not exist.
    NotFound = 3,
    /// The audit chain does not verify.
    Broken = 4,
    /// Another process holds the work (a sweep of the environment, the segment
    /// deletion's job), so this command left it alone; trying again later may succeed.
    Busy = 5,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// Runs one command; returns how it ended.
pub async fn run(config: Config, command: Command) -> Exit {
    match execute(&config, command).await {
        Ok(exit) => exit,
        Err(failure) => {
            let (exit, message) = match &failure {
                ApiError::UserNotFound | ApiError::EnvironmentNotFound(_) | ApiError::NotFound => {
                    (Exit::NotFound, failure.to_string())
                }
                ApiError::InvalidRequest(_) => (Exit::Usage, failure.to_string()),
                // The commands create and rename nothing, so a conflict is always work
                // held elsewhere: a retry may succeed, which a usage error never does.
                ApiError::Conflict(_) => (Exit::Busy, failure.to_string()),
                other => (Exit::Failed, other.to_string()),
            };
            let _ = writeln!(std::io::stderr(), "ebb-collector: {message}");
            exit
        }
    }
}

fn actor() -> Actor {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    Actor(format!("cli:{user}"))
}

fn print(value: &impl Serialize) -> Result<(), ApiError> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}").map_err(|e| ApiError::Internal(e.to_string()))
}

async fn environment(store: &Store, named: &str) -> Result<Environment, ApiError> {
    store
        .find_environment(named)
        .await?
        .ok_or_else(|| ApiError::EnvironmentNotFound(named.to_owned()))
}

fn progress(total: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let template = format!("{what} {{bar:40}} {{pos}}/{{len}} users ({{eta}} left)");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

async fn execute(config: &Config, command: Command) -> Result<Exit, ApiError> {
    let store = Store::open(&config.database_url())
        .await
        .map_err(|error| ApiError::Internal(format!("{error:#}")))?;

    match command {
        Command::Serve => Ok(Exit::Done),
        Command::DeleteUser {
            environment: named,
            user,
        } => {
            let environment = environment(&store, &named).await?;
            let receipt = store
                .delete_user(&environment.id, &user, &actor(), config.suppression_days)
                .await?
                .ok_or(ApiError::UserNotFound)?;
            print(&receipt)?;
            Ok(Exit::Done)
        }
        Command::DeleteSegment {
            environment: named,
            filter,
        } => {
            let environment = environment(&store, &named).await?;
            let filter: serde_json::Value = serde_json::from_str(&filter)
                .map_err(|e| ApiError::InvalidRequest(format!("--filter is not JSON: {e}")))?;
            let filter =
                Filter::parse(&filter).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
            let total = store
                .segment_count(&environment.id, &filter, Utc::now())
                .await?;
            let job = store
                .create_job(&environment.id, &filter, total, &actor())
                .await?;
            let bar = progress(total, "deleting");
            let runner = JobRunner::new(
                store.clone(),
                config.suppression_days,
                Duration::from_secs(config.job_lease),
            );
            let finished = runner
                .run_claimed(&job, |job| bar.set_position(job.done))
                .await?;
            bar.finish_and_clear();
            print(&finished)?;
            Ok(Exit::Done)
        }
        Command::Purge {
            environment: named,
            confirm,
        } => {
            let environment = environment(&store, &named).await?;
            if confirm != environment.name {
                let message = format!(
                    "this cannot be undone: confirm with --confirm {}, the environment's name",
                    environment.name
                );
                return Err(ApiError::InvalidRequest(message));
            }
            let receipt = store.purge_environment(&environment.id, &actor()).await?;
            print(&receipt)?;
            Ok(Exit::Done)
        }
        Command::Export {
            environment: named,
            format,
            user,
        } => {
            let environment = environment(&store, &named).await?;
            let export = store
                .user_export(&environment.id, &user)
                .await?
                .ok_or(ApiError::UserNotFound)?;
            let profile = &export.profile;
            let id_hash = crate::store::suppression_hash(store.suppression_key(), &user);
            let request = serde_json::json!({ "idHash": id_hash, "format": format!("{format:?}").to_lowercase() });
            let counts = serde_json::json!({ "events": profile.events.len(), "responses": profile.responses.len() });
            store
                .audit(
                    Some(&environment.id),
                    &actor(),
                    "export_user",
                    request,
                    counts,
                )
                .await?;
            match format {
                ExportFormat::Json => print(&export)?,
                ExportFormat::Ndjson => {
                    let mut out = std::io::stdout().lock();
                    write!(out, "{}", crate::admin::export_batches(profile))
                        .map_err(|e| ApiError::Internal(e.to_string()))?;
                }
            }
            Ok(Exit::Done)
        }
        Command::SweepNow { environment: named } => {
            let sweeper = Sweeper::new(
                store.clone(),
                Duration::from_secs(config.retention_interval),
                config.suppression_days,
            );
            let environments = match named {
                Some(named) => vec![environment(&store, &named).await?],
                None => store
                    .environments()
                    .await?
                    .into_iter()
                    .filter(|e| e.retention.is_set())
                    .collect(),
            };
            let mut runs = Vec::new();
            for environment in environments {
                let due = store
                    .retention_preview(&environment.id, &environment.retention, Utc::now())
                    .await?;
                let bar = progress(due.would_delete, &format!("sweeping {}", environment.name));
                let run = sweeper
                    .sweep_now_reporting(&environment, |users| {
                        // Users may have become due since the preview counted them.
                        if bar.length().is_some_and(|length| users > length) {
                            bar.set_length(users);
                        }
                        bar.set_position(users);
                    })
                    .await?;
                bar.finish_and_clear();
                match run {
                    Some(run) => runs.push(run),
                    None => {
                        return Err(ApiError::Conflict(format!(
                            "a sweep of {} is running elsewhere; try again",
                            environment.name
                        )))
                    }
                }
            }
            print(&runs)?;
            Ok(Exit::Done)
        }
        Command::AuditVerify => {
            let check = store.verify_audit().await?;
            print(&check)?;
            Ok(if check.valid {
                Exit::Done
            } else {
                Exit::Broken
            })
        }
    }
}
