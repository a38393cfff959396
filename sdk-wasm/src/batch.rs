//! Batches: the queued messages one request carries, and the body that carries them.
//!
//! The queue holds each message already serialised, so a batch body is put together by
//! joining them; nothing is serialised twice, and the size of a body is known exactly before
//! it is sent. A body stays within the collector's batch limit ([`MAX_BATCH_BYTES`]), and
//! every queued message is within the per-message limit, so each batch carries at least one.

use std::collections::VecDeque;

use ebb_protocol::MAX_BATCH_BYTES;

/// Queued messages on their way to the collector, with the request body that carries them.
///
/// A batch owns its messages while it is in flight: when delivery fails, hand it back with
/// [`Sdk::requeue`](crate::Sdk::requeue) so the messages go out again with their message ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    messages: Vec<String>,
    body: String,
}

impl Batch {
    /// Takes messages from the front of `queue` while the body stays within the batch limit.
    ///
    /// The body is `{"batch":[…],"sentAt":"…","writeKey":"…"}`. Returns `None` when the queue
    /// is empty.
    pub(crate) fn take(
        queue: &mut VecDeque<String>,
        write_key: &str,
        sent_at: &str,
    ) -> Option<Self> {
        let first = queue.pop_front()?;

        let tail = format!(
            "],\"sentAt\":{},\"writeKey\":{}}}",
            quote(sent_at),
            quote(write_key)
        );

        let mut body = String::from("{\"batch\":[");
        body.push_str(&first);
        let mut messages = vec![first];
        while let Some(next) = queue.front() {
            if body.len() + 1 + next.len() + tail.len() > MAX_BATCH_BYTES {
                break;
            }
            body.push(',');
            body.push_str(next);
            messages.extend(queue.pop_front());
        }
        body.push_str(&tail);

        Some(Self { messages, body })
    }

    /// The request body: JSON, sent as `text/plain` so that browsers need no preflight.
    pub fn body(&self) -> &str {
        &self.body
    }

    /// How many messages the batch carries.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether the batch carries no message (never true for a batch the SDK made).
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Gives back the serialised messages, oldest first.
    pub(crate) fn into_messages(self) -> Vec<String> {
        self.messages
    }
}

/// `text` as a JSON string literal, escapes included.
fn quote(text: &str) -> String {
    // Serialising a `&str` cannot fail; the fallback keeps a panic out of the page.
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

#[cfg(test)]
mod tests {
    use ebb_protocol::MAX_MESSAGE_BYTES;
    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn body_joins_the_messages_with_sent_at_and_write_key() {
        let mut queue = VecDeque::from([r#"{"a":1}"#.to_owned(), r#"{"b":2}"#.to_owned()]);

        let batch = Batch::take(&mut queue, "wk\"1", "2026-01-01T00:00:00.000Z").unwrap();

        assert_eq!(batch.len(), 2);
        assert!(queue.is_empty());
        let body: Value = serde_json::from_str(batch.body()).unwrap();
        assert_eq!(
            body,
            json!({
                "batch": [{"a": 1}, {"b": 2}],
                "sentAt": "2026-01-01T00:00:00.000Z",
                "writeKey": "wk\"1",
            })
        );
    }

    #[test]
    fn an_empty_queue_gives_no_batch() {
        assert_eq!(Batch::take(&mut VecDeque::new(), "wk", "t"), None);
    }

    #[test]
    fn a_body_never_passes_the_batch_limit() {
        let big = format!(r#"{{"p":"{}"}}"#, "x".repeat(MAX_MESSAGE_BYTES - 20));
        let mut queue: VecDeque<String> = std::iter::repeat_n(big, 40).collect();

        let first = Batch::take(&mut queue, "wk", "t").unwrap();
        let second = Batch::take(&mut queue, "wk", "t").unwrap();

        assert!(first.body().len() <= MAX_BATCH_BYTES);
        assert_eq!(first.len(), MAX_BATCH_BYTES / MAX_MESSAGE_BYTES);
        assert_eq!(first.len() + second.len() + queue.len(), 40);
    }
}
