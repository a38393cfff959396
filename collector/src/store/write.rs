//! The ingest write path: resolving who a message is about, then storing what it says.
//!
//! A request's messages are stored in one transaction, so a batch is either wholly durable
//! or not stored at all, and the collector acknowledges only after the commit.

use chrono::{DateTime, Utc};
use ebb_protocol::{Message, MessageType};
use serde_json::{Map, Value};
use sqlx::{Row, SqliteConnection};

use super::{db_time, EnvironmentId, Store};
use crate::error::Result;

/// A validated message, ready to store.
#[derive(Debug)]
pub struct Accepted {
    /// The message as sent (batch defaults merged in).
    pub message: Message,
    /// When it happened, corrected for client clock skew.
    pub time: DateTime<Utc>,
}

/// Context keys that are not stored: the IP address is personal data the collector does not
/// need, and traits in the context are stored on the user instead.
const UNSTORED_CONTEXT_KEYS: [&str; 2] = ["ip", "traits"];

impl Store {
    /// Stores the messages of one request in one transaction.
    ///
    /// A message whose `messageId` is already stored in the environment is skipped, so a
    /// retried batch changes nothing.
    pub async fn store_messages(
        &self,
        environment: &EnvironmentId,
        messages: &[Accepted],
        received_at: DateTime<Utc>,
    ) -> Result<()> {
        let received_at = db_time(received_at);
        let mut tx = self.writer.begin().await?;

        for accepted in messages {
            store_message(&mut tx, environment, accepted, &received_at).await?;
        }

        tx.commit().await?;
        Ok(())
    }
}

async fn store_message(
    conn: &mut SqliteConnection,
    env: &EnvironmentId,
    accepted: &Accepted,
    received_at: &str,
) -> Result<()> {
    let message = &accepted.message;
    let time = db_time(accepted.time);
    let user_id = message.user_id.as_ref().map(|id| id.as_str());
    let anonymous_id = message.anonymous_id.as_ref().map(|id| id.as_str());

    let user_key = resolve_user(conn, env, user_id, anonymous_id, &time).await?;
    if message.kind == MessageType::Alias {
        if let Some(previous) = message.previous_id.as_deref() {
            absorb_previous_identity(conn, env, &user_key, previous).await?;
        }
    }

    match message.kind {
        MessageType::Identify => {
            if let Some(traits) = message.effective_traits() {
                merge_traits(conn, env, &user_key, traits).await?;
            }
        }
        _ => insert_event(conn, env, &user_key, message, &time, received_at).await?,
    }

    // A message sent with `context.active: false` (a server acting for the user) is not a
    // sign of life and must not postpone the user's retention.
    let active = message.context.get("active") != Some(&Value::Bool(false));
    if active {
        sqlx::query(
            "UPDATE users SET last_seen = MAX(last_seen, ?1), first_seen = MIN(first_seen, ?1) \
             WHERE environment_id = ?2 AND id = ?3",
        )
        .bind(&time)
        .bind(env.as_str())
        .bind(&user_key)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn find_identity(
    conn: &mut SqliteConnection,
    env: &EnvironmentId,
    kind: &str,
    value: &str,
) -> Result<Option<String>> {
    let row = sqlx::query(
        "SELECT user_key FROM identities WHERE environment_id = ? AND kind = ? AND value = ?",
    )
    .bind(env.as_str())
    .bind(kind)
    .bind(value)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|row| row.get(0)))
}

async fn user_id_of(
    conn: &mut SqliteConnection,
    env: &EnvironmentId,
    user_key: &str,
) -> Result<Option<String>> {
    let row = sqlx::query("SELECT user_id FROM users WHERE environment_id = ? AND id = ?")
        .bind(env.as_str())
        .bind(user_key)
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.get(0))
}

/// Finds the user a message is about, creating or merging users as its ids require.
///
/// An anonymous visitor who identifies becomes that user: when both ids are already known
/// as two users, the anonymous one is merged into the identified one. An anonymous id that
/// already belongs to a different identified user (a shared browser) is not merged; a new
/// user is created for the new user id.
async fn resolve_user(
    conn: &mut SqliteConnection,
    env: &EnvironmentId,
    user_id: Option<&str>,
    anonymous_id: Option<&str>,
    time: &str,
) -> Result<String> {
    let by_user = match user_id {
        Some(id) => find_identity(conn, env, "user", id).await?,
        None => None,
    };
    let by_anonymous = match anonymous_id {
        Some(id) => find_identity(conn, env, "anonymous", id).await?,
        None => None,
    };

    let user_key = match (by_user, by_anonymous) {
        (Some(known), Some(visitor)) if known != visitor => {
            if user_id_of(conn, env, &visitor).await?.is_none() {
                merge_users(conn, env, &visitor, &known).await?;
            }
            known
        }
        (Some(known), _) => known,
        (None, Some(visitor)) if user_id.is_none() => visitor,
        (None, Some(visitor)) => match user_id_of(conn, env, &visitor).await? {
            None => visitor,
            Some(_) => create_user(conn, env, time).await?,
        },
        (None, None) => create_user(conn, env, time).await?,
    };

    if let Some(id) = user_id {
        add_identity(conn, env, "user", id, &user_key).await?;
        sqlx::query(
            "UPDATE users SET user_id = ? WHERE environment_id = ? AND id = ? AND user_id IS NULL",
        )
        .bind(id)
        .bind(env.as_str())
        .bind(&user_key)
        .execute(&mut *conn)
        .await?;
    }
    if let Some(id) = anonymous_id {
        add_identity(conn, env, "anonymous", id, &user_key).await?;
    }
    Ok(user_key)
}

async fn create_user(
    conn: &mut SqliteConnection,
    env: &EnvironmentId,
    time: &str,
) -> Result<String> {
    let user_key = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO users (environment_id, id, first_seen, last_seen) VALUES (?, ?, ?, ?)",
    )
    .bind(env.as_str())
    .bind(&user_key)
    .bind(time)
    .bind(time)
    .execute(&mut *conn)
    .await?;
    Ok(user_key)
}

async fn add_identity(
    conn: &mut SqliteConnection,
    env: &EnvironmentId,
    kind: &str,
    value: &str,
    user_key: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO identities (environment_id, kind, value, user_key) VALUES (?, ?, ?, ?) \
         ON CONFLICT (environment_id, kind, value) DO NOTHING",
    )
    .bind(env.as_str())
    .bind(kind)
    .bind(value)
    .bind(user_key)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// `alias`: the identity named by `previousId` (an anonymous id or an earlier user id) now
/// belongs to `user_key`; a user who had it is merged in.
async fn absorb_previous_identity(
    conn: &mut SqliteConnection,
    env: &EnvironmentId,
    user_key: &str,
    previous: &str,
) -> Result<()> {
    for kind in ["anonymous", "user"] {
        match find_identity(conn, env, kind, previous).await? {
            Some(other) if other != user_key => {
                return merge_users(conn, env, &other, user_key).await
            }
            Some(_) => return Ok(()),
            None => {}
        }
    }
    add_identity(conn, env, "anonymous", previous, user_key).await
}

/// Moves everything of user `from` to user `into` and removes `from`. Traits of `into` win.
async fn merge_users(
    conn: &mut SqliteConnection,
    env: &EnvironmentId,
    from: &str,
    into: &str,
) -> Result<()> {
    for table in ["events", "identities"] {
        // The table name is one of two constants, never input.
        let sql =
            format!("UPDATE {table} SET user_key = ? WHERE environment_id = ? AND user_key = ?");
        sqlx::query(&sql)
            .bind(into)
            .bind(env.as_str())
            .bind(from)
            .execute(&mut *conn)
            .await?;
    }

    let row = sqlx::query(
        "SELECT traits, first_seen, last_seen FROM users WHERE environment_id = ? AND id = ?",
    )
    .bind(env.as_str())
    .bind(from)
    .fetch_one(&mut *conn)
    .await?;
    let from_traits: Map<String, Value> = parse_traits(row.get(0));
    let (first_seen, last_seen): (String, String) = (row.get(1), row.get(2));

    let mut traits = read_traits(conn, env, into).await?;
    for (key, value) in from_traits {
        traits.entry(key).or_insert(value);
    }
    sqlx::query(
        "UPDATE users SET traits = ?, first_seen = MIN(first_seen, ?), \
         last_seen = MAX(last_seen, ?) WHERE environment_id = ? AND id = ?",
    )
    .bind(Value::Object(traits).to_string())
    .bind(first_seen)
    .bind(last_seen)
    .bind(env.as_str())
    .bind(into)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM users WHERE environment_id = ? AND id = ?")
        .bind(env.as_str())
        .bind(from)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

fn parse_traits(text: String) -> Map<String, Value> {
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

async fn read_traits(
    conn: &mut SqliteConnection,
    env: &EnvironmentId,
    user_key: &str,
) -> Result<Map<String, Value>> {
    let row = sqlx::query("SELECT traits FROM users WHERE environment_id = ? AND id = ?")
        .bind(env.as_str())
        .bind(user_key)
        .fetch_one(&mut *conn)
        .await?;
    Ok(parse_traits(row.get(0)))
}

/// Adds the given traits to the user's, replacing those of the same name.
async fn merge_traits(
    conn: &mut SqliteConnection,
    env: &EnvironmentId,
    user_key: &str,
    new: &Map<String, Value>,
) -> Result<()> {
    let mut traits = read_traits(conn, env, user_key).await?;
    for (key, value) in new {
        traits.insert(key.clone(), value.clone());
    }

    sqlx::query("UPDATE users SET traits = ? WHERE environment_id = ? AND id = ?")
        .bind(Value::Object(traits).to_string())
        .bind(env.as_str())
        .bind(user_key)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

async fn insert_event(
    conn: &mut SqliteConnection,
    env: &EnvironmentId,
    user_key: &str,
    message: &Message,
    time: &str,
    received_at: &str,
) -> Result<()> {
    let (name, properties) = match message.kind {
        MessageType::Group => (message.group_id.clone(), message.traits.clone()),
        MessageType::Alias => (message.previous_id.clone(), None),
        MessageType::Response => {
            let answers = message.answers.clone().unwrap_or(Value::Null);
            (
                message.survey_id.clone(),
                Some(Map::from_iter([("answers".into(), answers)])),
            )
        }
        _ => (message.name.clone(), message.properties.clone()),
    };
    let mut context = message.context.clone();
    for key in UNSTORED_CONTEXT_KEYS {
        context.remove(key);
    }
    let message_id = match &message.message_id {
        Some(id) => id.as_str().to_owned(),
        None => uuid::Uuid::new_v4().to_string(),
    };

    sqlx::query(
        "INSERT INTO events (environment_id, message_id, user_key, type, event, name, \
         properties, context, timestamp, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (environment_id, message_id) DO NOTHING",
    )
    .bind(env.as_str())
    .bind(message_id)
    .bind(user_key)
    .bind(message.kind.as_str())
    .bind(message.event.as_deref())
    .bind(name)
    .bind(Value::Object(properties.unwrap_or_default()).to_string())
    .bind(Value::Object(context).to_string())
    .bind(time)
    .bind(received_at)
    .execute(&mut *conn)
    .await?;
    Ok(())
}
