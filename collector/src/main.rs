//! The `ebb-collector` binary: settings → logging → database → server, or one operator
//! command (see `--help`).

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;

use ebb_collector::config::{Cli, Command, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let Cli { config, command } = Cli::parse_or_exit();

    // Commands print their own results; their logs stay quiet unless asked for.
    let serving = matches!(command, None | Some(Command::Serve));
    let default_level = if serving { "info" } else { "warn" };
    let filter =
        EnvFilter::try_from_env("EBB_LOG").unwrap_or_else(|_| EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match config.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

    let log_format = config.log_format;
    match command {
        Some(command) if !serving => ebb_collector::cli::run(config, command).await.into(),
        _ => match ebb_collector::server::run(config).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                // A log shipper reading JSON lines must get this one as JSON too.
                match log_format {
                    LogFormat::Json => tracing::error!(error = format!("{error:#}"), "stopped"),
                    LogFormat::Text => {
                        let _ = writeln!(std::io::stderr(), "ebb-collector: {error:#}");
                    }
                }
                ExitCode::FAILURE
            }
        },
    }
}
