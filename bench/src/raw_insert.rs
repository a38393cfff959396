//! Measurement (a), the ceiling: the rows of the same messages written into the same schema
//! with plain SQL, without the collector.
//!
//! The bodies the load generator sends are decoded off the clock and turned into the rows
//! ingest writes for them: a message id row per message, an event row per `track` and
//! `page`, the traits of each `identify` on its user, and each user's first and last seen.
//! The users and their identities exist before the clock starts, and each message's user
//! is looked up in memory, so the database does no reads. What the clock counts is one
//! transaction per group of [`MAX_GROUP_MESSAGES`] messages: the inserts, one multi-row
//! `UPDATE` of the users' traits and one of their activity, and the commit. No
//! deduplication, no suppression or identity check, no consent bookkeeping.
//!
//! The inserts are written in each of the ways a program can hand a database many rows
//! ([`Form`]), each measured on a fresh database; the ceiling is the fastest. That is the
//! most the collector could reach on this schema.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, SecondsFormat, Utc};
use ebb_collector::store::writer::MAX_GROUP_MESSAGES;
use ebb_collector::store::Store;
use ebb_protocol::decode::{decode_batch, event_time};
use ebb_protocol::MessageType;
use serde_json::{Map, Value as Json};

use crate::ceiling::Ceiling;
use crate::cpu;
use crate::sql::{bind_all, Sql, Statement, Value};
use crate::traffic::Traffic;

/// Rows per `INSERT … VALUES` statement: 2,000 bound values for an event row's ten
/// columns.
const ROWS_PER_STATEMENT: usize = 200;

/// Users per `UPDATE`, as the collector writes them on SQLite.
const USERS_PER_UPDATE: usize = 500;

/// How the inserts hand their rows to the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `INSERT … VALUES (…), (…)` with every value bound, [`ROWS_PER_STATEMENT`] rows a
    /// statement.
    Values,
    /// `INSERT … SELECT` from one JSON array of all the rows, bound as one value.
    JsonArray,
    /// PostgreSQL's `COPY … FROM STDIN`, its bulk-loading protocol.
    Copy,
}

impl Form {
    /// The forms `sql`'s database offers.
    pub fn all(sql_is_postgres: bool) -> Vec<Self> {
        if sql_is_postgres {
            vec![Self::Values, Self::JsonArray, Self::Copy]
        } else {
            vec![Self::Values, Self::JsonArray]
        }
    }

    /// A short name for reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Values => "multi-row VALUES",
            Self::JsonArray => "JSON array",
            Self::Copy => "COPY",
        }
    }
}

/// The rows of one group of messages, with their users' keys already known.
#[derive(Debug, Default)]
struct Rows {
    /// Message id and user key.
    message_ids: Vec<(String, String)>,
    events: Vec<EventRow>,
    /// User key → the traits its `identify` messages set, merged.
    traits: HashMap<String, Map<String, Json>>,
    /// User key → earliest and latest event time.
    activity: HashMap<String, (DateTime<Utc>, DateTime<Utc>)>,
    received_at: Option<DateTime<Utc>>,
}

#[derive(Debug)]
struct EventRow {
    message_id: String,
    user_key: String,
    kind: &'static str,
    event: Option<String>,
    name: Option<String>,
    properties: String,
    context: String,
    time: DateTime<Utc>,
}

/// Writes traffic into the fresh database at `url` for `warmup` (not counted), then for
/// `duration` of database time, and reports the rate.
///
/// # Errors
///
/// When the database cannot be opened or a statement fails.
pub async fn measure(
    url: &str,
    form: Form,
    traffic: &Traffic,
    batch_size: usize,
    warmup: Duration,
    duration: Duration,
) -> anyhow::Result<Ceiling> {
    let store = Store::open(url).await?;
    let environment = store
        .create_environment("bench", "wk_bench_raw", None)
        .await
        .context("while creating the benchmark environment")?
        .id;
    store.close().await;
    let sql = Sql::open(url).await?;
    let env = environment.as_str();
    let users = create_users(&sql, env, traffic.users()).await?;

    let mut warm = Duration::ZERO;
    while warm < warmup {
        warm += write_group(&sql, form, env, &users, traffic, batch_size)
            .await?
            .1;
    }
    let mut ceiling = Ceiling {
        messages: 0,
        busy: Duration::ZERO,
        transactions: 0,
        others: 0.0,
    };
    let before = cpu::Sample::take()?;
    while ceiling.busy < duration {
        let (messages, busy) = write_group(&sql, form, env, &users, traffic, batch_size).await?;
        ceiling.messages += messages;
        ceiling.busy += busy;
        ceiling.transactions += 1;
    }
    ceiling.others = cpu::Sample::take()?.since(&before).others();

    sql.close().await;
    Ok(ceiling)
}

/// Creates every user the traffic names, with its identities; returns each anonymous id's
/// user key. Off the clock.
async fn create_users(sql: &Sql, env: &str, count: u64) -> anyhow::Result<HashMap<String, String>> {
    let now = Utc::now();
    let mut users = HashMap::new();
    let mut user_rows = Vec::new();
    let mut identity_rows = Vec::new();
    for user in 0..count {
        let key = format!("raw-{user}");
        let anonymous = format!("anon-{user:06}");
        let user_id = (user % 4 != 0).then(|| format!("user-{user:06}"));
        user_rows.push(vec![
            Value::from(key.as_str()),
            Value::OptText(user_id.clone()),
            "{}".into(),
            now.into(),
            now.into(),
        ]);
        identity_rows.push(vec![
            "anonymous".into(),
            anonymous.as_str().into(),
            key.as_str().into(),
        ]);
        if let Some(user_id) = user_id {
            identity_rows.push(vec![
                "user".into(),
                user_id.as_str().into(),
                key.as_str().into(),
            ]);
        }
        users.insert(anonymous, key);
    }

    let json = json_cast(sql);
    let mut statements = insert_statements(
        "users (environment_id, id, user_id, traits, first_seen, last_seen)",
        &["", "", json, "", ""],
        env,
        user_rows,
    );
    statements.extend(insert_statements(
        "identities (environment_id, kind, value, user_key)",
        &["", "", ""],
        env,
        identity_rows,
    ));
    sql.transaction(&statements).await?;
    Ok(users)
}

/// Decodes one group's bodies into rows, then writes them in one transaction; returns the
/// number of messages and the time the database took.
async fn write_group(
    sql: &Sql,
    form: Form,
    env: &str,
    users: &HashMap<String, String>,
    traffic: &Traffic,
    batch_size: usize,
) -> anyhow::Result<(u64, Duration)> {
    let mut rows = Rows::default();
    let mut messages = 0;
    while messages + batch_size <= MAX_GROUP_MESSAGES.max(batch_size) {
        add_rows(&mut rows, users, &traffic.batch(batch_size))?;
        messages += batch_size;
    }
    let expected = rows.message_ids.len() as u64;

    let (inserted, busy) = match form {
        Form::Copy => copy_group(sql, env, rows).await?,
        Form::Values | Form::JsonArray => {
            let statements = statements(sql, form, env, rows)?;
            let started = Instant::now();
            let affected = sql.transaction(&statements).await?;
            let busy = started.elapsed();
            let inserted = match form {
                Form::JsonArray => affected.first().copied().unwrap_or_default(),
                _ => affected
                    .iter()
                    .take(expected.div_ceil(ROWS_PER_STATEMENT as u64) as usize)
                    .sum(),
            };
            (inserted, busy)
        }
    };
    anyhow::ensure!(
        inserted == expected,
        "{} inserted {inserted} of {expected} message ids",
        form.name()
    );
    Ok((messages as u64, busy))
}

/// Writes a group with `COPY` on PostgreSQL; returns the message ids inserted and the time
/// the database took.
async fn copy_group(sql: &Sql, env: &str, rows: Rows) -> anyhow::Result<(u64, Duration)> {
    let Sql::Postgres(pool) = sql else {
        anyhow::bail!("COPY is PostgreSQL's");
    };
    let received_at = rows.received_at.unwrap_or_else(Utc::now);
    let received = copy_text(&received_at.to_rfc3339());
    let mut message_ids = String::new();
    for (id, user_key) in &rows.message_ids {
        let line = [env, id.as_str(), user_key.as_str()]
            .map(copy_text)
            .join("\t");
        message_ids.push_str(&format!("{line}\t{received}\n"));
    }
    let mut events = String::new();
    for row in &rows.events {
        let fields = [
            copy_text(env),
            copy_text(&row.message_id),
            copy_text(&row.user_key),
            copy_text(row.kind),
            row.event.as_deref().map_or("\\N".into(), copy_text),
            row.name.as_deref().map_or("\\N".into(), copy_text),
            copy_text(&row.properties),
            copy_text(&row.context),
            copy_text(&row.time.to_rfc3339()),
            received.clone(),
        ];
        events.push_str(&fields.join("\t"));
        events.push('\n');
    }
    let updates: Vec<Statement> = update_statements(sql, env, rows.traits, rows.activity);

    let started = Instant::now();
    let mut tx = pool.begin().await?;
    let mut copy = tx
        .copy_in_raw(
            "COPY message_ids (environment_id, message_id, user_key, received_at) FROM STDIN",
        )
        .await?;
    copy.send(message_ids.into_bytes()).await?;
    let inserted = copy.finish().await?;
    let mut copy = tx
        .copy_in_raw(
            "COPY events (environment_id, message_id, user_key, type, event, name, \
             properties, context, timestamp, received_at) FROM STDIN",
        )
        .await?;
    copy.send(events.into_bytes()).await?;
    copy.finish().await?;
    for (text, values) in &updates {
        bind_all!(sqlx::query(text), values)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok((inserted, started.elapsed()))
}

/// A value as `COPY`'s text format spells it.
fn copy_text(value: &str) -> String {
    let mut text = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => text.push_str("\\\\"),
            '\n' => text.push_str("\\n"),
            '\r' => text.push_str("\\r"),
            '\t' => text.push_str("\\t"),
            c => text.push(c),
        }
    }
    text
}

/// Adds the rows of one body's messages.
fn add_rows(rows: &mut Rows, users: &HashMap<String, String>, body: &str) -> anyhow::Result<()> {
    let received_at = Utc::now();
    rows.received_at.get_or_insert(received_at);
    let envelope = decode_batch(body.as_bytes())?;
    for index in 0..envelope.items.len() {
        let message = envelope.message(index)?;
        let time = event_time(&message, received_at);
        let anonymous = message
            .anonymous_id
            .as_ref()
            .context("generated messages carry an anonymous id")?;
        let user_key = users
            .get(anonymous.as_str())
            .context("the traffic named a user that was not created")?
            .clone();
        let message_id = message
            .message_id
            .as_ref()
            .context("generated messages carry a message id")?
            .as_str()
            .to_owned();

        rows.message_ids
            .push((message_id.clone(), user_key.clone()));
        let span = rows
            .activity
            .entry(user_key.clone())
            .or_insert((time, time));
        span.0 = span.0.min(time);
        span.1 = span.1.max(time);
        if message.kind == MessageType::Identify {
            let traits = rows.traits.entry(user_key).or_default();
            if let Some(new) = message.effective_traits() {
                traits.extend(new.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            continue;
        }
        rows.events.push(EventRow {
            message_id,
            user_key,
            kind: message.kind.as_str(),
            event: message.event.clone(),
            name: message.name.clone(),
            properties: serde_json::to_string(&message.properties.unwrap_or_default())?,
            context: serde_json::to_string(&message.context)?,
            time,
        });
    }
    Ok(())
}

/// The group's statements: message ids, events, traits, activity.
fn statements(sql: &Sql, form: Form, env: &str, rows: Rows) -> anyhow::Result<Vec<Statement>> {
    let json = json_cast(sql);
    let received_at = rows.received_at.unwrap_or_else(Utc::now);

    let mut statements = if form == Form::JsonArray {
        json_statements(sql, env, &rows, received_at)?
    } else {
        let message_ids = rows
            .message_ids
            .iter()
            .map(|(id, user_key)| {
                vec![
                    id.as_str().into(),
                    user_key.as_str().into(),
                    received_at.into(),
                ]
            })
            .collect();
        let mut statements = insert_statements(
            "message_ids (environment_id, message_id, user_key, received_at)",
            &["", "", ""],
            env,
            message_ids,
        );
        let events = rows
            .events
            .iter()
            .map(|row| {
                vec![
                    row.message_id.as_str().into(),
                    row.user_key.as_str().into(),
                    row.kind.into(),
                    Value::OptText(row.event.clone()),
                    Value::OptText(row.name.clone()),
                    row.properties.as_str().into(),
                    row.context.as_str().into(),
                    row.time.into(),
                    received_at.into(),
                ]
            })
            .collect();
        statements.extend(insert_statements(
            "events (environment_id, message_id, user_key, type, event, name, properties, \
             context, timestamp, received_at)",
            &["", "", "", "", "", json, json, "", ""],
            env,
            events,
        ));
        statements
    };
    statements.extend(update_statements(sql, env, rows.traits, rows.activity));
    Ok(statements)
}

/// The inserts of a group as one statement per table over a JSON array of its rows, with
/// times as the text each database stores or casts.
fn json_statements(
    sql: &Sql,
    env: &str,
    rows: &Rows,
    received_at: DateTime<Utc>,
) -> anyhow::Result<Vec<Statement>> {
    let received = received_at.to_rfc3339_opts(SecondsFormat::AutoSi, false);
    let message_ids: Vec<[&str; 3]> = rows
        .message_ids
        .iter()
        .map(|(id, user_key)| [id.as_str(), user_key.as_str(), received.as_str()])
        .collect();
    let events: Vec<Json> = rows
        .events
        .iter()
        .map(|row| {
            serde_json::json!([
                row.message_id,
                row.user_key,
                row.kind,
                row.event,
                row.name,
                row.properties,
                row.context,
                row.time.to_rfc3339_opts(SecondsFormat::AutoSi, false),
                received,
            ])
        })
        .collect();
    let (from, time, json) = if sql.is_postgres() {
        (
            "jsonb_array_elements($2::jsonb)",
            "::timestamptz",
            "::jsonb",
        )
    } else {
        ("json_each($2)", "", "")
    };
    Ok(vec![
        (
            format!(
                "INSERT INTO message_ids (environment_id, message_id, user_key, received_at) \
                 SELECT $1, value ->> 0, value ->> 1, (value ->> 2){time} FROM {from}"
            ),
            vec![env.into(), serde_json::to_string(&message_ids)?.into()],
        ),
        (
            format!(
                "INSERT INTO events (environment_id, message_id, user_key, type, event, name, \
                 properties, context, timestamp, received_at) \
                 SELECT $1, value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, \
                 (value ->> 5){json}, (value ->> 6){json}, (value ->> 7){time}, \
                 (value ->> 8){time} FROM {from}"
            ),
            vec![env.into(), serde_json::to_string(&events)?.into()],
        ),
    ])
}

/// The group's two `UPDATE`s of its users: traits, then first and last seen.
fn update_statements(
    sql: &Sql,
    env: &str,
    traits: HashMap<String, Map<String, Json>>,
    activity: HashMap<String, (DateTime<Utc>, DateTime<Utc>)>,
) -> Vec<Statement> {
    let json = json_cast(sql);
    let mut statements = Vec::new();
    let traits: Vec<Vec<Value>> = traits
        .into_iter()
        .map(|(key, traits)| vec![key.into(), Json::Object(traits).to_string().into()])
        .collect();
    if !traits.is_empty() {
        statements.extend(update_statement(
            "traits = t.column2",
            &["", json],
            env,
            traits,
        ));
    }

    let activity: Vec<Vec<Value>> = activity
        .into_iter()
        .map(|(key, (first, last))| vec![key.into(), first.into(), last.into()])
        .collect();
    statements.extend(update_statement(
        "first_seen = CASE WHEN t.column2 < users.first_seen THEN t.column2 \
         ELSE users.first_seen END, \
         last_seen = CASE WHEN t.column3 > users.last_seen THEN t.column3 \
         ELSE users.last_seen END",
        &["", "", ""],
        env,
        activity,
    ));
    statements
}

/// `INSERT INTO {table} VALUES …` for `rows`, [`ROWS_PER_STATEMENT`] at a time, with the
/// environment as `$1` and each row's values after it; `casts` are appended to each
/// column's placeholder.
fn insert_statements(
    table: &str,
    casts: &[&str],
    env: &str,
    rows: Vec<Vec<Value>>,
) -> Vec<Statement> {
    let mut statements = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Value>> = rows.by_ref().take(ROWS_PER_STATEMENT).collect();
        let (tuples, values) = tuples(casts, env, chunk, true);
        statements.push((format!("INSERT INTO {table} VALUES {tuples}"), values));
    }
    statements
}

/// `UPDATE users … FROM (VALUES …)` of `rows`, each `(user key, …)`, [`USERS_PER_UPDATE`]
/// at a time; `set` names the values `t.column1`, `t.column2` and so on, as both databases
/// call them.
fn update_statement(set: &str, casts: &[&str], env: &str, rows: Vec<Vec<Value>>) -> Vec<Statement> {
    let mut statements = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<Vec<Value>> = rows.by_ref().take(USERS_PER_UPDATE).collect();
        let (tuples, values) = tuples(casts, env, chunk, false);
        statements.push((
            format!(
                "UPDATE users SET {set} FROM (VALUES {tuples}) AS t \
                 WHERE users.environment_id = $1 AND users.id = t.column1"
            ),
            values,
        ));
    }
    statements
}

/// `($2, $3, …), (…)` for `rows`, and the values to bind, the environment first. With
/// `with_env`, each tuple starts with `$1`.
fn tuples(
    casts: &[&str],
    env: &str,
    rows: Vec<Vec<Value>>,
    with_env: bool,
) -> (String, Vec<Value>) {
    let mut text = String::new();
    let mut values = vec![Value::from(env)];
    for row in rows {
        text.push_str(if text.is_empty() { "(" } else { ", (" });
        if with_env {
            text.push_str("$1, ");
        }
        for (column, value) in row.into_iter().enumerate() {
            values.push(value);
            if column > 0 {
                text.push_str(", ");
            }
            text.push('$');
            text.push_str(&values.len().to_string());
            text.push_str(casts.get(column).copied().unwrap_or_default());
        }
        text.push(')');
    }
    (text, values)
}

/// What JSON text needs to become a JSON column: a cast on PostgreSQL, nothing on SQLite.
fn json_cast(sql: &Sql) -> &'static str {
    if sql.is_postgres() {
        "::jsonb"
    } else {
        ""
    }
}
