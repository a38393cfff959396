//! One message of the Tracking API, as it travels on the wire.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{AnonymousId, MessageId, UserId};

/// What a message records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    /// Who the user is, and their traits.
    Identify,
    /// Something the user did (`event`, `properties`).
    Track,
    /// A page view on the web.
    Page,
    /// A screen view in an app.
    Screen,
    /// The user's membership of a group (`groupId`, `traits`).
    Group,
    /// Two ids name one user (`previousId` → `userId`).
    Alias,
    /// Ebb's addition: an answer to a survey (`surveyId`, `answers`).
    Response,
}

impl MessageType {
    /// The name used on the wire and in storage.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Identify => "identify",
            Self::Track => "track",
            Self::Page => "page",
            Self::Screen => "screen",
            Self::Group => "group",
            Self::Alias => "alias",
            Self::Response => "response",
        }
    }
}

/// One message: the common fields of every type, and the fields particular to each.
///
/// Unknown fields are ignored rather than fatal, because clients add their own. Timestamps
/// stay text here; the collector parses them leniently (see `decode::parse_timestamp`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// What the message records.
    #[serde(rename = "type")]
    pub kind: MessageType,
    /// The client's id for this message; retries carry the same one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message_id: Option<MessageId>,
    /// The site's id for the user, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// The visitor's id before (or without) a user id. Some clients send `null`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anonymous_id: Option<AnonymousId>,
    /// When it happened, by the client's clock (ISO-8601).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    /// Some clients name the client-clock time this way instead of `timestamp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub original_timestamp: Option<String>,
    /// When the client sent it, by the same clock; used to correct clock skew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<String>,
    /// Everything about the circumstances: library, page, consent, traits, GPC, user hash.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub context: Map<String, Value>,
    /// Per-destination switches. Read and checked, batch defaults merged in, but not
    /// stored: the collector forwards to no destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrations: Option<Map<String, Value>>,
    /// `identify` and `group`: attributes of the user or group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traits: Option<Map<String, Value>>,
    /// `track`: the name of what happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// `track`, `page`, `screen`: details of what happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub properties: Option<Map<String, Value>>,
    /// `page` and `screen`: the name of the view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `page`: the category of the view.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// `group`: the group's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// `alias`: the id the user had before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_id: Option<String>,
    /// `response`: the survey answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survey_id: Option<String>,
    /// `response`: the answers, keyed by question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<Value>,
}

impl Message {
    /// A message of the given type with every optional field empty.
    pub fn new(kind: MessageType) -> Self {
        Self {
            kind,
            message_id: None,
            user_id: None,
            anonymous_id: None,
            timestamp: None,
            original_timestamp: None,
            sent_at: None,
            context: Map::new(),
            integrations: None,
            traits: None,
            event: None,
            properties: None,
            name: None,
            category: None,
            group_id: None,
            previous_id: None,
            survey_id: None,
            answers: None,
        }
    }

    /// The traits of an `identify`: `traits`, or failing that `context.traits`, where some
    /// clients put them.
    pub fn effective_traits(&self) -> Option<&Map<String, Value>> {
        self.traits
            .as_ref()
            .or_else(|| self.context.get("traits")?.as_object())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_serialises_to_the_camel_case_wire_names() {
        let mut message = Message::new(MessageType::Track);
        message.event = Some("Clicked".into());
        message.anonymous_id = Some(AnonymousId::new("a1"));
        message.message_id = Some(MessageId::new("m1"));

        let json = serde_json::to_value(&message).unwrap();

        assert_eq!(
            json,
            serde_json::json!({
                "type": "track", "event": "Clicked", "anonymousId": "a1", "messageId": "m1"
            })
        );
    }

    #[test]
    fn traits_fall_back_to_context_traits() {
        let json = r#"{"type":"identify","userId":"u","context":{"traits":{"plan":"pro"}}}"#;

        let message: Message = serde_json::from_str(json).unwrap();

        assert_eq!(message.effective_traits().unwrap()["plan"], "pro");
    }

    #[test]
    fn top_level_traits_win_over_context_traits() {
        let json = r#"{"type":"identify","userId":"u","traits":{"plan":"team"},
                       "context":{"traits":{"plan":"pro"}}}"#;

        let message: Message = serde_json::from_str(json).unwrap();

        assert_eq!(message.effective_traits().unwrap()["plan"], "team");
    }
}
