//! JSON Schemas of the request bodies, for the collector's OpenAPI description.
//!
//! The field types come from [`Message`]'s derived schema. What the derive cannot see is
//! what each message type needs (the rules of `decode::validate`): a `track` needs a
//! non-empty `event`, every message a `userId` or an `anonymousId`, and so on. This module
//! adds those rules per type, so that a body the description calls valid is one the
//! collector stores, and the other way round. The tests below hold the two together.
//!
//! The types here are markers: they exist only to name a schema in the description.

use std::borrow::Cow;

use serde_json::{json, Value};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::{Message, MessageType, MAX_ID_CHARS};

/// Every message type, in the order the description lists them.
pub const MESSAGE_TYPES: [MessageType; 7] = [
    MessageType::Identify,
    MessageType::Track,
    MessageType::Page,
    MessageType::Screen,
    MessageType::Group,
    MessageType::Alias,
    MessageType::Response,
];

/// The timestamps `decode::parse_timestamp` reads: a date, a time with seconds (any
/// fraction) and an optional offset, or a time to the minute. `format: date-time` alone
/// would not do: OpenAPI 3.1 treats formats as annotations, so `""` would pass.
pub const TIMESTAMP_PATTERN: &str = concat!(
    r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])",
    r"(T([01]\d|2[0-3]):[0-5]\d(:[0-5]\d(\.\d{1,9})?(Z|[+-]([01]\d|2[0-3]):?[0-5]\d)?)?",
    r"| ([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{1,9})?([+-]([01]\d|2[0-3]):?[0-5]\d)?)?$",
);

/// The fields a message type needs besides an identity, each non-empty (`answers`: present
/// and not `null`).
pub fn required_fields(kind: MessageType) -> &'static [&'static str] {
    match kind {
        MessageType::Identify | MessageType::Page | MessageType::Screen => &[],
        MessageType::Track => &["event"],
        MessageType::Group => &["groupId"],
        MessageType::Alias => &["previousId", "userId"],
        MessageType::Response => &["surveyId", "answers"],
    }
}

/// The name of a message type's schema in the description, such as `TrackMessage`.
pub fn schema_name(kind: MessageType) -> String {
    let name = kind.as_str();
    format!("{}{}Message", name[..1].to_uppercase(), &name[1..])
}

/// The schema of one message of type `kind`: in a batch, where `type` names it, or alone
/// on its own route, where the route names it and a `type` in the body is ignored.
pub fn message_schema(kind: MessageType, in_batch: bool) -> Value {
    let mut schema = serde_json::to_value(Message::schema()).unwrap_or_default();
    let id = json!({
        "oneOf": [
            {"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS},
            {"type": "integer", "minimum": i64::MIN, "maximum": u64::MAX},
        ]
    });
    let text = json!({"type": "string", "minLength": 1});
    let short_text = json!({"type": "string", "minLength": 1, "maxLength": MAX_ID_CHARS});
    let timestamp = json!({
        "type": ["string", "null"],
        "format": "date-time",
        "pattern": TIMESTAMP_PATTERN,
    });

    let properties = &mut schema["properties"];
    for field in ["timestamp", "originalTimestamp", "sentAt"] {
        replace(&mut properties[field], timestamp.clone());
    }
    // Ids longer than the limit are refused wherever they appear.
    for field in ["groupId", "previousId"] {
        properties[field]["maxLength"] = json!(MAX_ID_CHARS);
    }
    let mut required: Vec<&str> = required_fields(kind).to_vec();
    for &field in &required {
        let schema = match field {
            "userId" => id.clone(),
            "groupId" | "previousId" => short_text.clone(),
            "answers" => json!({"type": ["object", "array", "string", "number", "boolean"]}),
            _ => text.clone(),
        };
        replace(&mut properties[field], schema);
    }
    if in_batch {
        properties["type"] = json!({"type": "string", "const": kind.as_str()});
        required.insert(0, "type");
    } else if let Some(properties) = properties.as_object_mut() {
        properties.remove("type");
    }
    schema["required"] = json!(required);
    if !required.contains(&"userId") {
        schema["anyOf"] = json!([
            {"required": ["userId"], "properties": {"userId": id}},
            {"required": ["anonymousId"], "properties": {"anonymousId": id}},
        ]);
    }
    schema["title"] = json!(schema_name(kind));
    let mut needs: Vec<String> = required_fields(kind)
        .iter()
        .map(|field| format!("`{field}`"))
        .collect();
    if !needs.contains(&"`userId`".to_owned()) {
        needs.insert(0, "a `userId` or an `anonymousId`".to_owned());
    }
    schema["description"] = json!(format!(
        "A `{}` message. It needs {}, none of them empty. Text anywhere in it must not \
         contain the NUL character, and the whole message may take at most 32 KiB as JSON; \
         a message that breaks a rule is refused on its own.",
        kind.as_str(),
        needs.join(" and "),
    ));
    schema
}

/// Puts `schema` in the place of a property's schema, keeping its description.
fn replace(property: &mut Value, mut schema: Value) {
    if let Some(description) = property.get("description").filter(|d| d.is_string()) {
        schema["description"] = description.clone();
    }
    *property = schema;
}

/// Every request-body schema of the ingest routes, by its name in the description: one per
/// message type, the batch, and the body of each single-message route.
///
/// These are JSON rather than utoipa's schema types, which cannot hold `const` or an
/// `anyOf` beside `properties`; the collector puts them into its description under these
/// names, replacing the placeholders of the marker types below.
pub fn request_schemas() -> Vec<(String, Value)> {
    let mut schemas: Vec<(String, Value)> = MESSAGE_TYPES
        .iter()
        .map(|&kind| (schema_name(kind), message_schema(kind, true)))
        .collect();
    schemas.push((BatchBody::name().into_owned(), batch_schema()));
    for (name, kind) in SINGLE_BODIES {
        let mut schema = message_schema(kind, false);
        schema["properties"]["writeKey"] = json!({
            "description": "The write key, when it is not the HTTP Basic user name; a value \
                that is not a string is ignored.",
        });
        schemas.push((name.to_owned(), schema));
    }
    schemas
}

fn batch_schema() -> Value {
    let messages: Vec<Value> = MESSAGE_TYPES
        .iter()
        .map(|&kind| json!({"$ref": format!("#/components/schemas/{}", schema_name(kind))}))
        .collect();
    json!({
        "type": "object",
        "description": "A batch of messages, with what applies to all of them. Other fields \
            are ignored.",
        "required": ["batch"],
        "properties": {
            "batch": {
                "type": "array",
                "minItems": 1,
                "description": "The messages. Each is checked on its own; a message id may \
                    appear only once in a batch.",
                "items": {"oneOf": messages},
            },
            "writeKey": {
                "type": ["string", "null"],
                "description": "The write key, when it is not the HTTP Basic user name.",
            },
            "sentAt": {
                "type": ["string", "null"],
                "format": "date-time",
                "pattern": TIMESTAMP_PATTERN,
                "description": "When the client sent the batch; the default of every \
                    message's `sentAt`.",
            },
            "context": {
                "type": ["object", "null"],
                "description": "Context merged under every message's own.",
            },
            "integrations": {
                "type": ["object", "null"],
                "description": "Integrations merged under every message's own.",
            },
        },
    })
}

/// A schema that [`request_schemas`] replaces, so that the marker types can be named in
/// handler annotations.
fn placeholder() -> RefOr<Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .description(Some("replaced by ebb_protocol::openapi::request_schemas"))
        .into()
}

macro_rules! marker {
    ($(#[$doc:meta])* $name:ident, $schema:literal) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;

        impl PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                placeholder()
            }
        }

        impl ToSchema for $name {
            fn name() -> Cow<'static, str> {
                Cow::Borrowed($schema)
            }

            fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
                <Message as ToSchema>::schemas(schemas);
            }
        }
    };
}

marker!(
    /// The body of `POST /v1/batch` (and `/v1/import`, `/v1/b`).
    BatchBody,
    "Batch"
);
marker!(
    /// The body of `POST /v1/identify`.
    IdentifyBody,
    "IdentifyRequest"
);
marker!(
    /// The body of `POST /v1/track`.
    TrackBody,
    "TrackRequest"
);
marker!(
    /// The body of `POST /v1/page`.
    PageBody,
    "PageRequest"
);
marker!(
    /// The body of `POST /v1/screen`.
    ScreenBody,
    "ScreenRequest"
);
marker!(
    /// The body of `POST /v1/group`.
    GroupBody,
    "GroupRequest"
);
marker!(
    /// The body of `POST /v1/alias`.
    AliasBody,
    "AliasRequest"
);

/// The single-message routes' body schemas by name, with the type each route gives.
const SINGLE_BODIES: [(&str, MessageType); 6] = [
    ("IdentifyRequest", MessageType::Identify),
    ("TrackRequest", MessageType::Track),
    ("PageRequest", MessageType::Page),
    ("ScreenRequest", MessageType::Screen),
    ("GroupRequest", MessageType::Group),
    ("AliasRequest", MessageType::Alias),
];

#[cfg(test)]
#[cfg(feature = "server")]
mod tests {
    use serde_json::Map;

    use super::*;
    use crate::decode::decode_batch;

    /// The smallest message of `kind` that the schema allows: its required fields, and a
    /// user id where the schema asks for an identity.
    fn minimal(kind: MessageType) -> Map<String, Value> {
        let schema = message_schema(kind, true);
        let mut message = Map::new();
        for field in schema["required"].as_array().unwrap() {
            let field = field.as_str().unwrap();
            let value = match field {
                "type" => json!(kind.as_str()),
                "answers" => json!({"q1": "yes"}),
                _ => json!("x"),
            };
            message.insert(field.to_owned(), value);
        }
        if schema.get("anyOf").is_some() {
            message.insert("anonymousId".into(), json!("a"));
        }
        message
    }

    fn is_stored(message: &Map<String, Value>) -> bool {
        let body = json!({ "batch": [message] }).to_string();
        decode_batch(body.as_bytes()).unwrap().message(0).is_ok()
    }

    #[test]
    fn the_smallest_message_the_schema_allows_is_stored() {
        for kind in MESSAGE_TYPES {
            assert!(is_stored(&minimal(kind)), "{kind:?}");
        }
    }

    #[test]
    fn every_field_the_schema_requires_is_needed() {
        for kind in MESSAGE_TYPES {
            let full = minimal(kind);
            for field in full.keys().filter(|field| *field != "type") {
                let mut without = full.clone();
                without.remove(field);

                assert!(!is_stored(&without), "{kind:?} without {field}");
            }
        }
    }

    #[test]
    fn required_text_must_not_be_empty() {
        for kind in MESSAGE_TYPES {
            for &field in required_fields(kind).iter().filter(|f| **f != "answers") {
                let mut message = minimal(kind);
                message.insert(field.to_owned(), json!(""));

                assert!(!is_stored(&message), "{kind:?} with an empty {field}");
            }
        }
    }

    #[test]
    fn timestamps_of_the_pattern_are_read() {
        let samples = [
            "2024-01-31",
            "2024-01-31T09:30",
            "2024-01-31T09:30:00",
            "2024-01-31T09:30:00Z",
            "2024-01-31T09:30:00.123456+02:00",
            "2024-01-31T09:30:00-0500",
            "2024-01-31 09:30:00",
            "2024-01-31 09:30:00.5+00:00",
            "0000-01-01T00:00:00Z",
        ];
        for sample in samples {
            assert!(crate::decode::parse_timestamp(sample).is_some(), "{sample}");
        }
        assert!(TIMESTAMP_PATTERN.starts_with('^') && TIMESTAMP_PATTERN.ends_with('$'));
    }

    #[test]
    fn schemas_name_every_message_type() {
        let names: Vec<String> = MESSAGE_TYPES.iter().map(|&k| schema_name(k)).collect();

        assert_eq!(names[1], "TrackMessage");
        assert_eq!(names.len(), 7);
    }
}
