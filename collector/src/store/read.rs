//! Reading users back: what the admin API shows of one user.

use serde::Serialize;
use serde_json::Value;
use sqlx::Row;

use super::{EnvironmentId, Store};
use crate::error::Result;

/// The most events returned with one profile, newest kept.
const PROFILE_EVENT_LIMIT: i64 = 1000;

/// One user as stored: ids, traits, activity.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UserProfile {
    /// The site's id for the user, once identified.
    pub user_id: Option<String>,
    /// Every anonymous id the user was seen with.
    pub anonymous_ids: Vec<String>,
    /// The merged traits.
    pub traits: Value,
    /// The time of the user's first message.
    pub first_seen: String,
    /// The time of the user's latest activity.
    pub last_seen: String,
    /// The user's events, oldest first (at most the latest 1,000).
    pub events: Vec<StoredEvent>,
}

/// One stored activity record.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    /// The client's message id.
    pub message_id: String,
    /// `track`, `page`, `screen`, `group`, `alias` or `response`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The event name of a `track`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// The page or screen name (group id, previous id, survey id for those types).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The event's properties.
    pub properties: Value,
    /// When it happened (clock-skew corrected).
    pub timestamp: String,
    /// When the collector received it.
    pub received_at: String,
}

impl Store {
    /// The user known by `id` (a user id, or failing that an anonymous id).
    pub async fn user_profile(&self, env: &EnvironmentId, id: &str) -> Result<Option<UserProfile>> {
        let row = sqlx::query(
            "SELECT u.id, u.user_id, u.traits, u.first_seen, u.last_seen \
             FROM identities i JOIN users u \
               ON u.environment_id = i.environment_id AND u.id = i.user_key \
             WHERE i.environment_id = ? AND i.value = ? \
             ORDER BY i.kind DESC LIMIT 1",
        )
        .bind(env.as_str())
        .bind(id)
        .fetch_optional(&self.reader)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let user_key: String = row.get(0);

        let anonymous_ids = sqlx::query(
            "SELECT value FROM identities \
             WHERE environment_id = ? AND user_key = ? AND kind = 'anonymous' ORDER BY value",
        )
        .bind(env.as_str())
        .bind(&user_key)
        .fetch_all(&self.reader)
        .await?
        .into_iter()
        .map(|row| row.get(0))
        .collect();

        let mut events: Vec<StoredEvent> = sqlx::query(
            "SELECT message_id, type, event, name, properties, timestamp, received_at \
             FROM events WHERE environment_id = ? AND user_key = ? \
             ORDER BY timestamp DESC, message_id DESC LIMIT ?",
        )
        .bind(env.as_str())
        .bind(&user_key)
        .bind(PROFILE_EVENT_LIMIT)
        .fetch_all(&self.reader)
        .await?
        .into_iter()
        .map(|row| StoredEvent {
            message_id: row.get(0),
            kind: row.get(1),
            event: row.get(2),
            name: row.get(3),
            properties: json_column(row.get(4)),
            timestamp: row.get(5),
            received_at: row.get(6),
        })
        .collect();
        events.reverse();

        Ok(Some(UserProfile {
            user_id: row.get(1),
            anonymous_ids,
            traits: json_column(row.get(2)),
            first_seen: row.get(3),
            last_seen: row.get(4),
            events,
        }))
    }
}

fn json_column(text: String) -> Value {
    serde_json::from_str(&text).unwrap_or(Value::Null)
}
