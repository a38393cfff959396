//! The collector's settings, from flags and `EBB_*` environment variables.
//!
//! Every setting has a flag and an environment variable of the same name; the flag wins.
//! Secrets (`EBB_WRITE_KEY`, `EBB_ADMIN_TOKEN`) are never printed: `Debug` redacts them and
//! `--help` does not show their values.

use std::fmt;
use std::path::PathBuf;

use clap::error::{ContextKind, ContextValue};
use clap::{Args, CommandFactory as _, Parser, Subcommand, ValueEnum};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The command line: settings, and optionally an operation to run instead of serving.
#[derive(Debug, Parser)]
#[command(
    name = "ebb-collector",
    version,
    about = "Ebb's collector: consent-first user data in, on-schedule deletion out",
    after_help = "Without a command, serves the API, the demo site and the admin console.\n\
                  Exit codes of the commands: 0 done, 1 failed, 2 usage or confirmation \
                  error, 3 not found, 4 audit chain broken, 5 busy: another process is \
                  sweeping the environment or running the job (try again later)."
)]
pub struct Cli {
    /// Settings shared by the server and the commands.
    #[command(flatten)]
    pub config: Config,
    /// An operation to run against the configured database, instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// Reads the flags and `EBB_*` variables. On a bad value it prints an error naming the
    /// flag and the variable of the setting, and exits with code 2.
    pub fn parse_or_exit() -> Self {
        Self::try_parse().unwrap_or_else(|error| name_variable(error).exit())
    }
}

/// Adds to an error about a setting's value the environment variable of that setting.
/// clap names only the flag, while the value may well have come from the variable (as in
/// a container, where settings are variables).
fn name_variable(mut error: clap::Error) -> clap::Error {
    let Some(ContextValue::String(invalid)) = error.get(ContextKind::InvalidArg) else {
        return error;
    };
    let mut command = Cli::command();
    // Built, an argument displays as the error shows it (`--listen <LISTEN>`).
    command.build();
    let Some(setting) = command
        .get_arguments()
        .find(|arg| arg.to_string() == *invalid)
    else {
        return error;
    };
    let (Some(flag), Some(variable)) = (setting.get_long(), setting.get_env()) else {
        return error;
    };

    let tip = format!(
        "this setting is `--{flag}` on the command line or `{}` in the environment",
        variable.to_string_lossy()
    );
    let mut tips = match error.get(ContextKind::Suggested) {
        Some(ContextValue::StyledStrs(tips)) => tips.clone(),
        _ => Vec::new(),
    };
    tips.push(tip.into());
    error.insert(ContextKind::Suggested, ContextValue::StyledStrs(tips));
    error
}

/// Operations on the configured database, for scripts and terminals.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve the API, the demo site and the admin console (the default).
    Serve,
    /// Delete one user (by user id or anonymous id) with every record of theirs.
    DeleteUser {
        /// The environment, by name or id.
        #[arg(long, default_value = "default")]
        environment: String,
        /// The user id or anonymous id.
        user: String,
    },
    /// Delete every user matching a segment filter (JSON), in chunks.
    DeleteSegment {
        /// The environment, by name or id.
        #[arg(long, default_value = "default")]
        environment: String,
        /// The filter, as the admin API takes it, e.g. '{"trait": "plan", "equals": "free"}'.
        #[arg(long)]
        filter: String,
    },
    /// Delete all user data of an environment; keys and settings stay.
    Purge {
        /// The environment, by name or id.
        #[arg(long)]
        environment: String,
        /// The environment's name again, to confirm.
        #[arg(long)]
        confirm: String,
    },
    /// Print everything stored of one user.
    Export {
        /// The environment, by name or id.
        #[arg(long, default_value = "default")]
        environment: String,
        /// `json` (access) or `ndjson` (Segment batches, for import elsewhere).
        #[arg(long, value_enum, default_value = "json")]
        format: ExportFormat,
        /// The user id or anonymous id.
        user: String,
    },
    /// Apply the retention rules now (one environment, or every one with a rule).
    SweepNow {
        /// The environment, by name or id; all when absent.
        #[arg(long)]
        environment: Option<String>,
    },
    /// Recompute the audit chain and report the first broken link.
    AuditVerify,
}

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// Every record of the user as one JSON document.
    Json,
    /// Segment batches, one per line.
    Ndjson,
}

/// Settings of one collector process.
#[derive(Clone, Args)]
pub struct Config {
    /// Address to listen on (IP:port); port 0 picks a free port (printed at start-up).
    #[arg(long, env = "EBB_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,

    /// Folder for the embedded database and the generated admin token.
    #[arg(long, env = "EBB_DATA_DIR", default_value = "ebb-data")]
    pub data_dir: PathBuf,

    /// Database to use: `sqlite://PATH` or `postgres://…`; defaults to the SQLite file
    /// `ebb.db` in the data folder.
    #[arg(long, env = "EBB_DATABASE_URL", hide_env_values = true, value_parser = parse_database_url)]
    pub database_url: Option<String>,

    /// Write key of the default environment, used when that environment is first created.
    #[arg(long, env = "EBB_WRITE_KEY", hide_env_values = true)]
    pub write_key: Option<String>,

    /// An admin token with access to every environment, accepted in addition to stored ones.
    #[arg(long, env = "EBB_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Folder with the demo site, the admin console and the built SDK.
    #[arg(long, env = "EBB_WWW_DIR", default_value = "www")]
    pub www_dir: PathBuf,

    /// Ingest requests per second allowed per write key; 0 turns the limit off.
    #[arg(long, env = "EBB_RATE_LIMIT", default_value_t = 0)]
    pub rate_limit: u32,

    /// Days the ids of a deleted user stay suppressed: messages naming them are dropped.
    #[arg(long, env = "EBB_SUPPRESSION_DAYS", default_value_t = 30, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub suppression_days: u32,

    /// Seconds between retention sweeps of each environment.
    #[arg(long, env = "EBB_RETENTION_INTERVAL", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    pub retention_interval: u64,

    /// Seconds a segment-deletion job stays with its collector without progress before
    /// another collector may take it over (when the first one died).
    #[arg(long, env = "EBB_JOB_LEASE", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub job_lease: u64,

    /// Let the demo site ask for the identity-verification hash of any user id of the
    /// default environment (`/demo/user-hash`). For the demo only: it lets anyone prove
    /// any identity, which is what verification is there to prevent.
    #[arg(long, env = "EBB_DEMO_USER_HASH", default_value_t = false)]
    pub demo_user_hash: bool,

    /// Log line format.
    #[arg(long, env = "EBB_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

impl Config {
    /// The database URL in force: the configured one, or SQLite in the data folder.
    pub fn database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}", self.data_dir.join("ebb.db").display()),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |set: bool| if set { "<set>" } else { "<unset>" };
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("database", &self.database_url.as_deref().map(redact_url))
            .field("write_key", &redact(self.write_key.is_some()))
            .field("admin_token", &redact(self.admin_token.is_some()))
            .field("www_dir", &self.www_dir)
            .field("rate_limit", &self.rate_limit)
            .field("suppression_days", &self.suppression_days)
            .field("retention_interval", &self.retention_interval)
            .field("demo_user_hash", &self.demo_user_hash)
            .field("job_lease", &self.job_lease)
            .field("log_format", &self.log_format)
            .finish()
    }
}

fn parse_database_url(url: &str) -> Result<String, String> {
    let known = ["sqlite:", "postgres://", "postgresql://"];
    if known.iter().any(|prefix| url.starts_with(prefix)) {
        Ok(url.to_owned())
    } else {
        Err("a database URL starts with sqlite:, postgres:// or postgresql://".into())
    }
}

/// Drops the password from a database URL, keeping scheme, host and database.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://<credentials>{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_never_shows_secrets() {
        let config = Cli::parse_from([
            "ebb-collector",
            "--write-key=wk_secret",
            "--admin-token=tok_secret",
            "--database-url=postgres://ebb:pw_secret@db/ebb",
        ])
        .config;

        let shown = format!("{config:?}");

        for secret in ["wk_secret", "tok_secret", "pw_secret"] {
            assert!(!shown.contains(secret), "{secret} leaked into {shown}");
        }
        assert!(shown.contains("@db/ebb"));
    }

    #[test]
    fn bad_settings_are_refused_with_a_message_naming_them() {
        let cases = [
            (vec!["--listen=localhost"], "--listen"),
            (vec!["--database-url=mysql://db/ebb"], "--database-url"),
            (vec!["--rate-limit=-5"], "--rate-limit"),
            (vec!["--log-format=xml"], "--log-format"),
        ];

        for (args, named) in cases {
            let error = Cli::try_parse_from(["ebb-collector"].into_iter().chain(args.clone()))
                .expect_err("the setting is invalid");

            assert!(error.to_string().contains(named), "{args:?}: {error}");
        }
    }

    #[test]
    fn an_error_about_a_value_names_the_variable_of_the_setting_too() {
        let cases = [
            ("--listen=localhost", "`EBB_LISTEN`"),
            ("--retention-interval=0", "`EBB_RETENTION_INTERVAL`"),
            ("--log-format=xml", "`EBB_LOG_FORMAT`"),
        ];

        for (arg, variable) in cases {
            let error = Cli::try_parse_from(["ebb-collector", arg]).expect_err("invalid");
            let shown = name_variable(error).to_string();

            assert!(shown.contains(variable), "{arg}: {shown}");
        }
    }

    #[test]
    fn every_setting_is_in_the_readme_table() {
        let readme = include_str!("../../README.md");
        let command = Cli::command();

        for setting in command.get_arguments() {
            let (Some(variable), Some(flag)) = (setting.get_env(), setting.get_long()) else {
                continue;
            };
            let row = format!("| `{}` | `--{flag}` |", variable.to_string_lossy());

            assert!(readme.contains(&row), "the README has no row `{row}`");
        }
    }

    #[test]
    fn the_default_database_is_sqlite_in_the_data_folder() {
        let config = Cli::parse_from(["ebb-collector", "--data-dir=/var/lib/ebb"]).config;

        assert_eq!(config.database_url(), "sqlite:///var/lib/ebb/ebb.db");
    }
}
