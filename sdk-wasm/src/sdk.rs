//! The SDK's state: who the visitor is, and what waits to be sent.
//!
//! [`Sdk`] turns `identify` and `track` calls into wire [`Message`]s, queues them serialised,
//! and hands out [`Batch`]es to deliver. It neither sends nor schedules anything itself: the
//! browser bindings decide when to flush, perform the request, and report back through
//! [`Sdk::requeue`] when it failed.
//!
//! Limitation: the queue lives in memory only and is unbounded. Persisting it, bounding it
//! in bytes and counting drops belong to the delivery work described in DESIGN.md.

use std::collections::VecDeque;

use ebb_protocol::{
    AnonymousId, Message, MessageId, MessageType, UserId, MAX_ID_CHARS, MAX_MESSAGE_BYTES,
};
use serde_json::Map;

use crate::environment::text_object;
use crate::{ids, Batch, Config, Environment, Error, Fields, Result};

/// The name the SDK gives itself in `context.library`.
pub const LIBRARY_NAME: &str = "ebb-sdk";

/// The SDK's version, sent in `context.library`.
pub const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The state of one loaded SDK.
#[derive(Debug)]
pub struct Sdk<E> {
    config: Config,
    env: E,
    anonymous_id: AnonymousId,
    user_id: Option<UserId>,
    queue: VecDeque<String>,
}

impl<E: Environment> Sdk<E> {
    /// Starts the SDK with `config`, minting the visitor's anonymous id.
    ///
    /// Limitation: the anonymous id is minted at once and lives as long as the page. Consent
    /// (no id before a grant) and keeping the id across pages come with the consent work.
    ///
    /// # Errors
    ///
    /// [`Error::NoRandomSource`] when the environment cannot supply random bytes.
    pub fn new(config: Config, mut env: E) -> Result<Self> {
        let anonymous_id = AnonymousId::new(ids::uuid_v4(env.random_bytes()?));

        Ok(Self {
            config,
            env,
            anonymous_id,
            user_id: None,
            queue: VecDeque::new(),
        })
    }

    /// The settings the SDK was loaded with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The visitor's anonymous id, the same on every message.
    pub fn anonymous_id(&self) -> &AnonymousId {
        &self.anonymous_id
    }

    /// The user id given to the last `identify` that named one.
    pub fn user_id(&self) -> Option<&UserId> {
        self.user_id.as_ref()
    }

    /// Records who the user is: queues an `identify` message.
    ///
    /// With `user_id`, that id is remembered and sent on every later message; without one,
    /// the traits describe the visitor under the id known so far.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an empty or overlong user id, and the errors of
    /// [`Sdk::track`]. Nothing changes when it fails.
    pub fn identify(&mut self, user_id: Option<String>, traits: Option<Fields>) -> Result<()> {
        let user_id = match user_id {
            Some(id) if id.is_empty() || id.chars().nth(MAX_ID_CHARS).is_some() => {
                return Err(Error::InvalidArgument {
                    what: "userId",
                    why: "must be a non-empty string of at most 1000 characters",
                });
            }
            Some(id) => Some(UserId::new(id)),
            None => self.user_id.clone(),
        };

        let message = self.message(MessageType::Identify, user_id.clone())?;
        self.enqueue(&message, "traits", &traits.unwrap_or_default())?;

        self.user_id = user_id;
        Ok(())
    }

    /// Records something the user did: queues a `track` message.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for an empty event name,
    /// [`Error::MessageTooLarge`] when the message is over the collector's limit, and
    /// [`Error::NoRandomSource`] when no message id can be minted.
    pub fn track(&mut self, event: String, properties: Option<Fields>) -> Result<()> {
        if event.is_empty() {
            return Err(Error::InvalidArgument {
                what: "event",
                why: "must be a non-empty string naming what happened",
            });
        }

        let mut message = self.message(MessageType::Track, self.user_id.clone())?;
        message.event = Some(event);
        self.enqueue(&message, "properties", &properties.unwrap_or_default())
    }

    /// How many messages wait to be sent (messages in flight are not counted).
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Whether the queue has reached the `flushAt` count.
    pub fn should_flush(&self) -> bool {
        self.queue.len() >= self.config.flush_at()
    }

    /// Takes the oldest queued messages into a batch for one request, stamped with `sentAt`.
    ///
    /// Returns `None` when nothing is queued. Call it until it does to send everything.
    pub fn next_batch(&mut self) -> Option<Batch> {
        let sent_at = self.env.now();

        Batch::take(&mut self.queue, self.config.write_key(), &sent_at)
    }

    /// Puts the messages of a batch that could not be delivered back at the front of the
    /// queue, ahead of anything queued since, to go out again with the same message ids.
    pub fn requeue(&mut self, batch: Batch) {
        for message in batch.into_messages().into_iter().rev() {
            self.queue.push_front(message);
        }
    }

    /// A message of `kind` with what every message carries: ids, time and context.
    fn message(&mut self, kind: MessageType, user_id: Option<UserId>) -> Result<Message> {
        let library = text_object(&[("name", LIBRARY_NAME), ("version", LIBRARY_VERSION)]);
        let mut context = Map::new();
        context.insert("library".to_owned(), library);
        if let Some(page) = self.env.page() {
            context.insert("page".to_owned(), page.to_json());
        }

        let mut message = Message::new(kind);
        message.message_id = Some(MessageId::new(ids::uuid_v4(self.env.random_bytes()?)));
        message.anonymous_id = Some(self.anonymous_id.clone());
        message.user_id = user_id;
        message.timestamp = Some(self.env.now());
        message.context = context;
        Ok(message)
    }

    /// Serialises `message` with `fields` added under `name`, and queues it.
    ///
    /// `name` is `traits` or `properties`, which the message itself leaves empty: the
    /// fields are JSON text already (see [`Fields`]), so they are spliced in, not parsed.
    fn enqueue(&mut self, message: &Message, name: &str, fields: &Fields) -> Result<()> {
        // Cannot fail: a `Message` has string keys and JSON values only.
        let mut json = serde_json::to_string(message).map_err(|_| Error::InvalidArgument {
            what: "message",
            why: "cannot be written as JSON",
        })?;
        json.pop(); // the object's closing brace
        json.push_str(",\"");
        json.push_str(name);
        json.push_str("\":");
        json.push_str(fields.as_str());
        json.push('}');

        if json.len() > MAX_MESSAGE_BYTES {
            return Err(Error::MessageTooLarge {
                bytes: json.len(),
                limit: MAX_MESSAGE_BYTES,
            });
        }

        self.queue.push_back(json);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use ebb_protocol::decode::decode_batch;

    use serde_json::{json, Value};

    use super::*;
    use crate::Page;

    /// An environment with counting random bytes, a fixed clock and a fixed page.
    #[derive(Debug, Default)]
    struct Fixed {
        draws: u8,
        page: Option<Page>,
    }

    impl Environment for Fixed {
        fn random_bytes(&mut self) -> Result<[u8; 16]> {
            self.draws += 1;
            Ok([self.draws; 16])
        }

        fn now(&self) -> String {
            "2026-05-01T12:00:00.000Z".to_owned()
        }

        fn page(&self) -> Option<Page> {
            self.page.clone()
        }
    }

    fn sdk() -> Sdk<Fixed> {
        let config = Config::new("wk_test", "http://collector.test").unwrap();
        let page = Page {
            path: "/pricing".into(),
            url: "http://site.test/pricing?plan=pro".into(),
            search: "?plan=pro".into(),
            title: "Pricing".into(),
            referrer: "http://site.test/".into(),
        };

        Sdk::new(
            config,
            Fixed {
                draws: 0,
                page: Some(page),
            },
        )
        .unwrap()
    }

    fn fields(value: Value) -> Option<Fields> {
        value.as_object().map(Fields::from)
    }

    fn sent(batch: &Batch) -> Vec<Value> {
        let body: Value = serde_json::from_str(batch.body()).unwrap();
        body["batch"].as_array().unwrap().clone()
    }

    #[test]
    fn identify_then_track_build_the_wire_messages() {
        let mut sdk = sdk();

        sdk.identify(Some("u_1".into()), fields(json!({"plan": "pro"})))
            .unwrap();
        sdk.track("Signed Up".into(), fields(json!({"seats": 3})))
            .unwrap();
        let batch = sdk.next_batch().unwrap();

        let context = json!({
            "library": {"name": "ebb-sdk", "version": LIBRARY_VERSION},
            "page": {
                "path": "/pricing",
                "url": "http://site.test/pricing?plan=pro",
                "search": "?plan=pro",
                "title": "Pricing",
                "referrer": "http://site.test/",
            },
        });
        assert_eq!(
            sent(&batch),
            vec![
                json!({
                    "type": "identify",
                    "messageId": "02020202-0202-4202-8202-020202020202",
                    "anonymousId": "01010101-0101-4101-8101-010101010101",
                    "userId": "u_1",
                    "timestamp": "2026-05-01T12:00:00.000Z",
                    "context": context,
                    "traits": {"plan": "pro"},
                }),
                json!({
                    "type": "track",
                    "messageId": "03030303-0303-4303-8303-030303030303",
                    "anonymousId": "01010101-0101-4101-8101-010101010101",
                    "userId": "u_1",
                    "timestamp": "2026-05-01T12:00:00.000Z",
                    "context": context,
                    "event": "Signed Up",
                    "properties": {"seats": 3},
                }),
            ]
        );
    }

    #[test]
    fn batch_body_carries_sent_at_and_write_key() {
        let mut sdk = sdk();
        sdk.track("Opened".into(), None).unwrap();

        let batch = sdk.next_batch().unwrap();

        let body: Value = serde_json::from_str(batch.body()).unwrap();
        assert_eq!(body["sentAt"], "2026-05-01T12:00:00.000Z");
        assert_eq!(body["writeKey"], "wk_test");
        assert_eq!(body.as_object().unwrap().len(), 3);
    }

    #[test]
    fn the_collectors_decoder_accepts_every_message_of_a_batch() {
        let mut sdk = sdk();
        sdk.identify(Some("u_1".into()), fields(json!({"email": "a@b.test"})))
            .unwrap();
        sdk.track("Clicked".into(), fields(json!({"n": 1.5, "tags": ["a"]})))
            .unwrap();
        let batch = sdk.next_batch().unwrap();

        let envelope = decode_batch(batch.body().as_bytes()).unwrap();

        assert_eq!(envelope.write_key.as_deref(), Some("wk_test"));
        assert_eq!(envelope.items.len(), 2);
        let track = envelope.message(1).unwrap();
        assert_eq!(track.kind, MessageType::Track);
        assert_eq!(track.user_id, Some(UserId::new("u_1")));
        assert_eq!(track.sent_at.as_deref(), Some("2026-05-01T12:00:00.000Z"));
        assert_eq!(track.properties.unwrap()["n"], 1.5);
    }

    #[test]
    fn ids_persist_across_calls_and_message_ids_do_not_repeat() {
        let mut sdk = sdk();
        let anonymous_id = sdk.anonymous_id().clone();

        sdk.track("Before".into(), None).unwrap();
        sdk.identify(Some("u_9".into()), None).unwrap();
        sdk.track("After".into(), None).unwrap();
        sdk.identify(None, fields(json!({"name": "Ada"}))).unwrap();
        let messages = sent(&sdk.next_batch().unwrap());

        let field =
            |name: &str| -> Vec<Value> { messages.iter().map(|m| m[name].clone()).collect() };
        assert!(field("anonymousId")
            .iter()
            .all(|id| *id == anonymous_id.as_str()));
        assert_eq!(
            field("userId"),
            [Value::Null, json!("u_9"), json!("u_9"), json!("u_9")]
        );
        let message_ids: BTreeSet<String> = field("messageId")
            .iter()
            .map(|id| id.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(message_ids.len(), 4);
    }

    #[test]
    fn a_failed_batch_goes_back_ahead_of_newer_messages() {
        let mut sdk = sdk();
        sdk.track("First".into(), None).unwrap();
        sdk.track("Second".into(), None).unwrap();
        let failed = sdk.next_batch().unwrap();
        let failed_ids: Vec<Value> = sent(&failed)
            .iter()
            .map(|m| m["messageId"].clone())
            .collect();

        sdk.track("Third".into(), None).unwrap();
        sdk.requeue(failed);
        let retry = sdk.next_batch().unwrap();

        let events: Vec<Value> = sent(&retry).iter().map(|m| m["event"].clone()).collect();
        assert_eq!(events, ["First", "Second", "Third"]);
        let retry_ids: Vec<Value> = sent(&retry)
            .iter()
            .map(|m| m["messageId"].clone())
            .collect();
        assert_eq!(retry_ids[..2], failed_ids[..]);
        assert_eq!(sdk.queued(), 0);
    }

    #[test]
    fn should_flush_once_the_queue_reaches_flush_at() {
        let config = Config::new("wk", "http://h")
            .unwrap()
            .with_flush_at(2)
            .unwrap();
        let mut sdk = Sdk::new(config, Fixed::default()).unwrap();

        sdk.track("One".into(), None).unwrap();
        let after_one = sdk.should_flush();
        sdk.track("Two".into(), None).unwrap();

        assert!(!after_one);
        assert!(sdk.should_flush());
    }

    #[test]
    fn without_a_page_the_context_names_only_the_library() {
        let mut sdk = Sdk::new(Config::new("wk", "http://h").unwrap(), Fixed::default()).unwrap();

        sdk.track("Ran".into(), None).unwrap();
        let messages = sent(&sdk.next_batch().unwrap());

        assert_eq!(
            messages[0]["context"],
            json!({"library": {"name": "ebb-sdk", "version": LIBRARY_VERSION}})
        );
    }

    #[test]
    fn refused_calls_queue_nothing_and_keep_the_user_id() {
        let mut sdk = sdk();
        sdk.identify(Some("u_1".into()), None).unwrap();
        let huge = fields(json!({"blob": "x".repeat(MAX_MESSAGE_BYTES)}));

        let too_large = sdk.identify(Some("u_2".into()), huge.clone());
        let empty_id = sdk.identify(Some(String::new()), None);
        let empty_event = sdk.track(String::new(), None);
        let large_track = sdk.track("Big".into(), huge);

        assert!(matches!(too_large, Err(Error::MessageTooLarge { .. })));
        assert!(matches!(
            empty_id,
            Err(Error::InvalidArgument { what: "userId", .. })
        ));
        assert!(matches!(
            empty_event,
            Err(Error::InvalidArgument { what: "event", .. })
        ));
        assert!(matches!(large_track, Err(Error::MessageTooLarge { .. })));
        assert_eq!(sdk.user_id(), Some(&UserId::new("u_1")));
        assert_eq!(sdk.queued(), 1);
    }
}
