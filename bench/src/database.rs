//! A fresh, empty database for each measurement.
//!
//! SQLite: a file in a temporary folder. PostgreSQL: a uniquely named database
//! (`ebb_bench_…`) created on the server and dropped afterwards; no other database is
//! touched.

use std::fmt;

use anyhow::Context as _;
use clap::ValueEnum;
use sqlx::Connection as _;

/// Which database the collector uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Embedded SQLite.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "PostgreSQL",
        })
    }
}

/// One fresh database; call [`Database::remove`] when done.
#[derive(Debug)]
pub enum Database {
    /// A SQLite file in a folder removed with it.
    Sqlite(tempfile::TempDir),
    /// A database on a PostgreSQL server: the server's URL and the database's name.
    Postgres { server: String, name: String },
}

impl Database {
    /// Creates an empty database of `backend`; PostgreSQL ones on `server`.
    ///
    /// # Errors
    ///
    /// When the folder or the database cannot be created.
    pub async fn create(backend: Backend, server: &str) -> anyhow::Result<Self> {
        match backend {
            Backend::Sqlite => Ok(Self::Sqlite(
                tempfile::tempdir().context("while creating a folder for SQLite")?,
            )),
            Backend::Postgres => {
                let name = format!("ebb_bench_{}", uuid::Uuid::new_v4().simple());
                run_on(server, &format!("CREATE DATABASE {name}"))
                    .await
                    .with_context(|| format!("while creating a database on {server}"))?;
                Ok(Self::Postgres {
                    server: server.to_owned(),
                    name,
                })
            }
        }
    }

    /// The URL the store and the collector open.
    pub fn url(&self) -> String {
        match self {
            Self::Sqlite(folder) => format!("sqlite://{}", folder.path().join("ebb.db").display()),
            Self::Postgres { server, name } => {
                let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
                format!("{base}/{name}")
            }
        }
    }

    /// Drops the PostgreSQL database (closing its connections) or removes the folder.
    ///
    /// # Errors
    ///
    /// When the database cannot be dropped.
    pub async fn remove(self) -> anyhow::Result<()> {
        match self {
            Self::Sqlite(folder) => Ok(folder.close()?),
            Self::Postgres { server, name } => run_on(
                &server,
                &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            )
            .await
            .with_context(|| format!("while dropping the database {name}")),
        }
    }
}

async fn run_on(server: &str, statement: &str) -> anyhow::Result<()> {
    let mut connection = sqlx::PgConnection::connect(server).await?;
    sqlx::query(statement).execute(&mut connection).await?;
    connection.close().await?;
    Ok(())
}
