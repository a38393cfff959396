//! Segment filters run against real databases: the collector's migrations on a fresh
//! SQLite file and on a uniquely named PostgreSQL database, a handful of users written
//! with plain inserts, and every kind of condition checked to select exactly the users it
//! should, on both backends. Hostile strings go through every field a filter has and must
//! be matched literally.
//!
//! PostgreSQL is expected at `EBB_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`); its tests fail when it cannot be used.

use std::collections::BTreeSet;
use std::thread;

use chrono::{DateTime, TimeDelta, Utc};
use ebb_collector::segment::{Bind, Dialect, Filter};
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteSynchronous};
use sqlx::types::Json;
use sqlx::{Connection as _, PgPool, SqlitePool};
use tempfile::TempDir;

/// The environment the filters run in.
const ENV: &str = "env-segments";
/// Another environment, whose rows must never leak into `ENV`'s answers.
const OTHER_ENV: &str = "env-other";

fn time(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("a test time is RFC 3339")
        .with_timezone(&Utc)
}

/// The moment the `…DaysAgo` conditions count back from.
fn now() -> DateTime<Utc> {
    time("2026-03-01T12:00:00Z")
}

fn days_ago(days: i64) -> DateTime<Utc> {
    now() - TimeDelta::days(days)
}

/// One user to store.
struct User {
    environment: &'static str,
    key: String,
    user_id: String,
    traits: Value,
    consent: Option<Value>,
    gpc: Option<bool>,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    surveys: Vec<String>,
}

/// Binds a compiled filter's parameters to a sqlx query of either backend.
macro_rules! bind_all {
    ($query:expr, $binds:expr) => {{
        let mut query = $query;
        for bind in $binds {
            query = match bind {
                Bind::Text(text) => query.bind(text.as_str()),
                Bind::Float(number) => query.bind(*number),
                Bind::Int(number) => query.bind(*number),
                Bind::Time(time) => query.bind(*time),
                Bind::Json(value) => query.bind(Json(value)),
            };
        }
        query
    }};
}

/// Runs the same code on whichever pool the database has.
macro_rules! on_pool {
    ($database:expr, $pool:ident => $body:expr) => {
        match $database {
            Database::Sqlite { pool: $pool, .. } => $body,
            Database::Postgres { pool: $pool, .. } => $body,
        }
    };
}

/// A fresh, migrated database that is removed when dropped.
enum Database {
    Sqlite {
        pool: SqlitePool,
        _dir: TempDir,
    },
    Postgres {
        pool: PgPool,
        _dropped_last: PostgresDatabase,
    },
}

/// A uniquely named PostgreSQL database, dropped (with its connections) when this is
/// dropped, whether the test passed or panicked.
struct PostgresDatabase {
    server: String,
    name: String,
}

impl Drop for PostgresDatabase {
    fn drop(&mut self) {
        let statement = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(error) = run_on_server(&self.server, &statement) {
            // A panic inside a drop during unwinding would abort, hiding the first failure.
            if !thread::panicking() {
                panic!("could not drop the test database {}: {error}", self.name);
            }
        }
    }
}

/// Runs one statement on the PostgreSQL server from a thread of its own, so that it also
/// works from `Drop` inside the test's runtime.
fn run_on_server(server: &str, statement: &str) -> Result<(), String> {
    let (server, statement) = (server.to_owned(), statement.to_owned());
    thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let mut connection = sqlx::PgConnection::connect(&server)
                .await
                .map_err(|e| e.to_string())?;
            sqlx::query(&statement)
                .execute(&mut connection)
                .await
                .map_err(|e| e.to_string())?;
            connection.close().await.map_err(|e| e.to_string())
        })
    })
    .join()
    .map_err(|_| "the thread running the statement panicked".to_owned())?
}

impl Database {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("segments.db"))
            .create_if_missing(true)
            .foreign_keys(true)
            // A throwaway file: waiting for the disk on each insert only slows the test.
            .synchronous(SqliteSynchronous::Off);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .expect("the SQLite database opens");
        sqlx::migrate!("./migrations/sqlite")
            .run(&pool)
            .await
            .expect("the SQLite migrations run");
        Self::Sqlite { pool, _dir: dir }
    }

    async fn postgres() -> Self {
        let server = std::env::var("EBB_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
        let name = format!("ebb_segtest_{}", uuid::Uuid::new_v4().simple());
        run_on_server(&server, &format!("CREATE DATABASE {name}")).unwrap_or_else(|error| {
            panic!("PostgreSQL was expected at {server} but could not be used: {error}")
        });
        let guard = PostgresDatabase { server, name };

        let base = guard
            .server
            .rsplit_once('/')
            .map_or(guard.server.as_str(), |(base, _)| base);
        // One connection, so that statements sqlx caches per SQL text are reused across
        // filters of the same shape, as they will be in a busy collector.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&format!("{base}/{}", guard.name))
            .await
            .expect("the test database accepts connections");
        sqlx::migrate!("./migrations/postgres")
            .run(&pool)
            .await
            .expect("the PostgreSQL migrations run");
        Self::Postgres {
            pool,
            _dropped_last: guard,
        }
    }

    fn dialect(&self) -> Dialect {
        match self {
            Self::Sqlite { .. } => Dialect::Sqlite,
            Self::Postgres { .. } => Dialect::Postgres,
        }
    }

    async fn add_environments(&self) {
        for id in [ENV, OTHER_ENV] {
            on_pool!(self, pool => {
                sqlx::query("INSERT INTO environments (id, name, created_at) VALUES ($1, $1, $2)")
                    .bind(id)
                    .bind(now())
                    .execute(pool)
                    .await
                    .expect("the environment is stored");
            });
        }
    }

    async fn add_user(&self, user: &User) {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO users (environment_id, id, user_id, traits, consent, gpc, \
                 first_seen, last_seen) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(user.environment)
            .bind(&user.key)
            .bind(&user.user_id)
            .bind(Json(&user.traits))
            .bind(user.consent.as_ref().map(Json))
            .bind(user.gpc)
            .bind(user.first_seen)
            .bind(user.last_seen)
            .execute(pool)
            .await
            .expect("the user is stored");
        });
        for (index, survey) in user.surveys.iter().enumerate() {
            on_pool!(self, pool => {
                sqlx::query(
                    "INSERT INTO responses (environment_id, message_id, user_key, survey_id, \
                     answers, timestamp, received_at) VALUES ($1, $2, $3, $4, $5, $6, $6)",
                )
                .bind(user.environment)
                .bind(format!("{}-response-{index}", user.key))
                .bind(&user.key)
                .bind(survey)
                .bind(Json(json!({"score": 9})))
                .bind(user.last_seen)
                .execute(pool)
                .await
                .expect("the response is stored");
            });
        }
    }

    /// The user ids in `ENV` that the filter selects.
    async fn matching(&self, filter: &Filter) -> Result<BTreeSet<String>, sqlx::Error> {
        let compiled = filter.to_sql(self.dialect(), 2, now());
        let sql = format!(
            "SELECT u.user_id FROM users u WHERE u.environment_id = $1 AND ({})",
            compiled.sql
        );
        let ids: Vec<String> = on_pool!(self, pool => {
            let query = sqlx::query_scalar(&sql).bind(ENV);
            bind_all!(query, &compiled.binds).fetch_all(pool).await?
        });
        Ok(ids.into_iter().collect())
    }

    /// How many rows a table of `ENV` holds; fails if the table is gone.
    async fn count(&self, table: &str) -> i64 {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE environment_id = $1");
        on_pool!(self, pool => {
            sqlx::query_scalar(&sql)
                .bind(ENV)
                .fetch_one(pool)
                .await
                .unwrap_or_else(|error| panic!("{table} can still be read: {error}"))
        })
    }

    async fn close(self) {
        on_pool!(&self, pool => pool.close().await);
    }
}

// ---------------------------------------------------------------------------------------
// Every kind of condition

fn people() -> Vec<User> {
    let user = |key: &str, traits: Value| User {
        environment: ENV,
        key: format!("k-{key}"),
        user_id: key.to_owned(),
        traits,
        consent: None,
        gpc: None,
        first_seen: time("2024-06-01T00:00:00Z"),
        last_seen: now(),
        surveys: Vec::new(),
    };
    vec![
        User {
            consent: Some(json!({"analytics": true, "marketing": false})),
            gpc: Some(false),
            first_seen: time("2024-01-10T08:00:00.123456Z"),
            last_seen: days_ago(2),
            surveys: vec!["nps-2026".into()],
            ..user(
                "ada",
                json!({
                    "plan": "pro", "age": 36, "score": 4.5, "email": "ada@example.com",
                    "company": "Acme Corp", "vip": true, "n": 1, "big": 9_007_199_254_740_993_i64,
                    "address": {"city": "London"}
                }),
            )
        },
        User {
            consent: Some(json!({"analytics": false})),
            gpc: Some(true),
            first_seen: time("2024-03-01T00:00:00Z"),
            last_seen: days_ago(40),
            surveys: vec!["onboarding".into()],
            ..user(
                "bob",
                json!({
                    "plan": "free", "age": "36", "score": 2, "email": null,
                    "company": "ACME_ltd", "vip": false, "n": "1", "big": 9_007_199_254_740_992_i64
                }),
            )
        },
        User {
            first_seen: time("2023-12-31T23:59:59.999Z"),
            last_seen: days_ago(100),
            ..user(
                "cy",
                json!({
                    "plan": "Pro", "age": 17, "company": "100% Organic", "n": 1.0,
                    "address": "London"
                }),
            )
        },
        User {
            consent: Some(json!({"marketing": true})),
            surveys: vec!["nps-2026".into(), "onboarding".into()],
            ..user("dee", json!({}))
        },
        User {
            consent: Some(json!({"analytics": "yes"})),
            gpc: Some(false),
            first_seen: time("2024-01-01T00:00:00Z"),
            last_seen: days_ago(30),
            ..user(
                "eve",
                json!({
                    "plan": ["pro"], "age": {"years": 30}, "score": true, "n": [1],
                    "company": "acme", "email": ""
                }),
            )
        },
        // Same key as `cy`, in another environment, with a response `cy` lacks: the
        // response must not count for `cy`.
        User {
            environment: OTHER_ENV,
            consent: Some(json!({"analytics": true})),
            surveys: vec!["nps-2026".into()],
            ..user("cy", json!({"plan": "pro"}))
        },
    ]
}

/// Each filter with the users it must select, by user id.
fn cases() -> Vec<(Value, &'static [&'static str])> {
    const EVERYONE: &[&str] = &["ada", "bob", "cy", "dee", "eve"];
    let at_30_days = days_ago(30).to_rfc3339();
    let mut not7 = json!({"gpc": true});
    for _ in 0..7 {
        not7 = json!({"not": not7});
    }
    vec![
        (json!({}), EVERYONE),
        (json!({"all": []}), EVERYONE),
        (json!({"any": []}), &[]),
        // Equality keeps JSON types apart and compares numbers as numbers.
        (json!({"trait": "plan", "equals": "pro"}), &["ada"]),
        (json!({"trait": "plan", "equals": "Pro"}), &["cy"]),
        (
            json!({"trait": "plan", "notEquals": "pro"}),
            &["bob", "cy", "dee", "eve"],
        ),
        (json!({"trait": "n", "equals": 1}), &["ada", "cy"]),
        (json!({"trait": "n", "equals": 1.0}), &["ada", "cy"]),
        (json!({"trait": "n", "equals": "1"}), &["bob"]),
        (
            json!({"trait": "n", "notEquals": 1}),
            &["bob", "dee", "eve"],
        ),
        (json!({"trait": "vip", "equals": true}), &["ada"]),
        (json!({"trait": "vip", "equals": false}), &["bob"]),
        (json!({"trait": "email", "equals": null}), &["bob"]),
        (
            json!({"trait": "email", "notEquals": null}),
            &["ada", "cy", "dee", "eve"],
        ),
        // Exists: present and not null.
        (json!({"trait": "email", "exists": true}), &["ada", "eve"]),
        (
            json!({"trait": "email", "exists": false}),
            &["bob", "cy", "dee"],
        ),
        (json!({"trait": "address", "exists": true}), &["ada", "cy"]),
        // Nested paths; a string where an object is expected is simply no match.
        (
            json!({"trait": ["address", "city"], "equals": "London"}),
            &["ada"],
        ),
        (
            json!({"trait": ["address", "city"], "exists": false}),
            &["bob", "cy", "dee", "eve"],
        ),
        // Contains: case-insensitive, only on strings, no wildcards.
        (
            json!({"trait": "company", "contains": "acme"}),
            &["ada", "bob", "eve"],
        ),
        (json!({"trait": "company", "contains": "ACME c"}), &["ada"]),
        (json!({"trait": "company", "contains": "%"}), &["cy"]),
        (json!({"trait": "company", "contains": "100%"}), &["cy"]),
        (json!({"trait": "company", "contains": "_"}), &["bob"]),
        (json!({"trait": "company", "contains": "a_me"}), &[]),
        (json!({"trait": "company", "contains": "a%"}), &[]),
        (json!({"trait": "plan", "contains": "pro"}), &["ada", "cy"]),
        // Numeric comparisons skip strings, booleans, arrays and objects without an error.
        (json!({"trait": "age", "gte": 18}), &["ada"]),
        (json!({"trait": "age", "lt": 18}), &["cy"]),
        (json!({"trait": "age", "gt": 0}), &["ada", "cy"]),
        (json!({"trait": "score", "gt": 2}), &["ada"]),
        (
            json!({"trait": "score", "gte": 2, "lte": 4.5}),
            &["ada", "bob"],
        ),
        (json!({"trait": "score", "gt": 2, "lt": 4.5}), &[]),
        (json!({"trait": "score", "lt": 3.5}), &["bob"]),
        (json!({"trait": "score", "lt": 1e300}), &["ada", "bob"]),
        // Integers past 2^53 stay exact.
        (
            json!({"trait": "big", "equals": 9_007_199_254_740_993_i64}),
            &["ada"],
        ),
        (
            json!({"trait": "big", "gt": 9_007_199_254_740_992_i64}),
            &["ada"],
        ),
        (
            json!({"not": {"trait": "age", "gte": 18}}),
            &["bob", "cy", "dee", "eve"],
        ),
        // First and last seen: `after` inclusive, `before` exclusive, to the microsecond.
        (
            json!({"firstSeen": {"after": "2024-01-01T00:00:00Z"}}),
            &["ada", "bob", "dee", "eve"],
        ),
        (
            json!({"firstSeen": {"after": "2024-01-01T00:00:00.000001Z"}}),
            &["ada", "bob", "dee"],
        ),
        (json!({"firstSeen": {"before": "2024-01-01"}}), &["cy"]),
        (
            json!({"firstSeen": {"after": "2024-01-10T08:00:00.1234569Z"}}),
            &["ada", "bob", "dee"],
        ),
        (
            json!({"firstSeen": {"after": "2024-01-10T09:00:00.123457+01:00"}}),
            &["bob", "dee"],
        ),
        (
            json!({"firstSeen": {"after": "2024-01-01", "before": "2024-03-01"}}),
            &["ada", "eve"],
        ),
        (json!({"lastSeen": {"before": at_30_days}}), &["bob", "cy"]),
        (
            json!({"lastSeen": {"after": at_30_days}}),
            &["ada", "dee", "eve"],
        ),
        (
            json!({"lastSeenDaysAgo": {"atLeast": 30}}),
            &["bob", "cy", "eve"],
        ),
        (
            json!({"lastSeenDaysAgo": {"atMost": 30}}),
            &["ada", "dee", "eve"],
        ),
        (
            json!({"lastSeenDaysAgo": {"atLeast": 30, "atMost": 60}}),
            &["bob", "eve"],
        ),
        (json!({"lastSeenDaysAgo": {"atLeast": 0}}), EVERYONE),
        (json!({"firstSeenDaysAgo": {"atMost": 365}}), &[]),
        // Responses, in this environment only.
        (json!({"responded": "nps-2026"}), &["ada", "dee"]),
        (json!({"responded": "onboarding"}), &["bob", "dee"]),
        (json!({"responded": "NPS-2026"}), &[]),
        (json!({"responded": true}), &["ada", "bob", "dee"]),
        (json!({"responded": false}), &["cy", "eve"]),
        (
            json!({"not": {"responded": "nps-2026"}}),
            &["bob", "cy", "eve"],
        ),
        // Consent: granted and denied are explicit; `not` covers the rest.
        (json!({"consent": "analytics", "granted": true}), &["ada"]),
        (json!({"consent": "analytics", "granted": false}), &["bob"]),
        (
            json!({"not": {"consent": "analytics", "granted": true}}),
            &["bob", "cy", "dee", "eve"],
        ),
        (json!({"consent": "marketing", "granted": true}), &["dee"]),
        (json!({"consent": "marketing", "granted": false}), &["ada"]),
        (
            json!({"consentRecorded": true}),
            &["ada", "bob", "dee", "eve"],
        ),
        (json!({"consentRecorded": false}), &["cy"]),
        (json!({"gpc": true}), &["bob"]),
        (json!({"gpc": false}), &["ada", "cy", "dee", "eve"]),
        // Combinations.
        (
            json!({"any": [{"trait": "plan", "equals": "pro"}, {"responded": "onboarding"}]}),
            &["ada", "bob", "dee"],
        ),
        (
            json!({"all": [
                {"any": [{"trait": "plan", "equals": "pro"}, {"responded": "onboarding"}]},
                {"not": {"gpc": true}}
            ]}),
            &["ada", "dee"],
        ),
        (
            json!({"not": {"all": [
                {"trait": "email", "exists": true},
                {"responded": "nps-2026"}
            ]}}),
            &["bob", "cy", "dee", "eve"],
        ),
        (not7, &["ada", "cy", "dee", "eve"]),
    ]
}

async fn every_kind_of_condition_selects_the_expected_users(database: Database) {
    database.add_environments().await;
    for user in people() {
        database.add_user(&user).await;
    }

    let mut failures = Vec::new();
    for (json, expected) in cases() {
        let filter = Filter::parse(&json).expect("every case is a valid filter");
        let expected: BTreeSet<String> = expected.iter().map(|id| (*id).to_owned()).collect();
        match database.matching(&filter).await {
            Ok(found) if found == expected => {}
            Ok(found) => failures.push(format!("{json}: expected {expected:?}, got {found:?}")),
            Err(error) => failures.push(format!("{json}: the database refused it: {error}")),
        }
    }

    database.close().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn every_kind_of_condition_selects_the_expected_users_on_sqlite() {
    every_kind_of_condition_selects_the_expected_users(Database::sqlite().await).await;
}

#[tokio::test]
async fn every_kind_of_condition_selects_the_expected_users_on_postgres() {
    every_kind_of_condition_selects_the_expected_users(Database::postgres().await).await;
}

// ---------------------------------------------------------------------------------------
// Hostile strings

const HOSTILE: &[&str] = &[
    "'",
    "''",
    "'; DROP TABLE users; --",
    "' OR '1'='1",
    "\") OR 1=1 --",
    "%",
    "_",
    "%_%",
    "\\",
    "\\\\",
    "\"",
    "\\\"",
    "\\u0022",
    "$1",
    "$2",
    "?",
    "?1",
    ":name",
    "@x",
    "/*",
    "*/",
    ";",
    "$$",
    "$tag$",
    "E'\\x00'",
    "é",
    "日本語",
    "🙂",
    "a.b",
    "$.a",
    "$",
    "[0]",
    "a\nb",
    "\t",
    "\u{1}",
    "\u{7f}",
    "\u{2028}",
    "NULL",
    "null",
    "true",
    "1",
    "u.traits",
];

/// A user per hostile string, which it carries as a trait key and value, in a nested
/// key, as a consent category and as a survey id; and one plain user beside them.
fn hostile_users() -> Vec<User> {
    let mut users: Vec<User> = HOSTILE
        .iter()
        .enumerate()
        .map(|(index, text)| User {
            environment: ENV,
            key: format!("k-h{index}"),
            user_id: format!("h{index}"),
            traits: json!({*text: text, "k": text, "nested": {*text: index}}),
            consent: Some(json!({*text: true})),
            gpc: None,
            first_seen: now(),
            last_seen: now(),
            surveys: vec![(*text).to_owned()],
        })
        .collect();
    users.push(User {
        environment: ENV,
        key: "k-plain".into(),
        user_id: "plain".into(),
        traits: json!({"k": "plain", "nested": {"plain": 0}}),
        consent: Some(json!({"analytics": true})),
        gpc: None,
        first_seen: now(),
        last_seen: now(),
        surveys: vec!["plain-survey".into()],
    });
    users
}

async fn hostile_strings_are_matched_literally(database: Database) {
    database.add_environments().await;
    let users = hostile_users();
    for user in &users {
        database.add_user(user).await;
    }
    let everyone: BTreeSet<String> = users.iter().map(|u| u.user_id.clone()).collect();

    let mut failures = Vec::new();
    for (index, text) in HOSTILE.iter().enumerate() {
        let own: BTreeSet<String> = [format!("h{index}")].into();
        let others: BTreeSet<String> = everyone.difference(&own).cloned().collect();
        // What `contains` must find: the strings holding this one, ignoring ASCII case
        // (the case folding both backends share).
        let holding: BTreeSet<String> = users
            .iter()
            .filter(|u| {
                u.traits["k"]
                    .as_str()
                    .is_some_and(|k| k.to_ascii_lowercase().contains(&text.to_ascii_lowercase()))
            })
            .map(|u| u.user_id.clone())
            .collect();
        let checks = [
            (json!({"trait": text, "equals": text}), &own),
            (json!({"trait": text, "exists": true}), &own),
            (json!({"trait": text, "notEquals": text}), &others),
            (json!({"trait": "k", "equals": text}), &own),
            (json!({"trait": ["nested", text], "equals": index}), &own),
            (
                json!({"trait": ["nested", text], "gte": index, "lte": index}),
                &own,
            ),
            (json!({"trait": "k", "contains": text}), &holding),
            (json!({"responded": text}), &own),
            (json!({"consent": text, "granted": true}), &own),
        ];
        for (json, expected) in checks {
            let filter = Filter::parse(&json).expect("a hostile string is still a valid filter");
            match database.matching(&filter).await {
                Ok(found) if &found == expected => {}
                Ok(found) => {
                    failures.push(format!("{json}: expected {expected:?}, got {found:?}"));
                }
                Err(error) => failures.push(format!("{json}: the database refused it: {error}")),
            }
        }
    }

    let stored = i64::try_from(users.len()).expect("a small number");
    assert_eq!(database.count("users").await, stored);
    assert_eq!(database.count("responses").await, stored);
    database.close().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn hostile_strings_are_matched_literally_on_sqlite() {
    hostile_strings_are_matched_literally(Database::sqlite().await).await;
}

#[tokio::test]
async fn hostile_strings_are_matched_literally_on_postgres() {
    hostile_strings_are_matched_literally(Database::postgres().await).await;
}
