//! The queue of serialised messages: bounded in bytes, cut into batches, stored as text.
//!
//! Messages wait in order. [`Queue::take`] moves the oldest into a [`Batch`] (a *flight*)
//! that stays counted, and stored, until [`Queue::settle`] says how it ended: delivered or
//! refused for good (gone), or to be retried (back in place, by age). So a page that closes
//! mid-request keeps the flight in storage and sends it again on the next load, with the
//! same message ids.
//!
//! The bound counts the bytes of waiting and flying messages. Past it the oldest waiting
//! messages are dropped, and how many is sent as `context.dropped` on the first message of
//! the next batch.

use crate::prelude::*;

use crate::json::{self, Object};

/// One queued message and its place in the order of queueing.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    seq: u64,
    text: String,
}

/// Messages cut from the queue for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    id: u64,
    count: usize,
    body: String,
}

impl Batch {
    /// The flight's id, for [`Queue::settle`].
    pub fn id(&self) -> u64 {
        self.id
    }

    /// How many messages it carries.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether it carries no message (never true for a batch from [`Queue::take`]).
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The request body: `{"batch":[…],"sentAt":"…","writeKey":"…"}`.
    pub fn body(&self) -> &str {
        &self.body
    }
}

/// What became of a flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Delivered, or refused for good: its messages are gone.
    Done,
    /// To be sent again: its messages go back in place.
    Retry,
}

/// A flight under way: its messages and the drop count it carried.
#[derive(Debug)]
struct Flight {
    id: u64,
    entries: Vec<Entry>,
    dropped: u64,
}

/// The SDK's outgoing messages.
#[derive(Debug)]
pub struct Queue {
    /// The waiting messages from `head` on, oldest first. Those before `head` were taken
    /// or dropped (their text already freed); they are cut off once they are half of it,
    /// so that taking from the front costs no move of the rest, as at the byte bound,
    /// where every new message drops the oldest. (A `VecDeque` does the same in more code.)
    waiting: Vec<Entry>,
    head: usize,
    flights: Vec<Flight>,
    bytes: usize,
    cap: usize,
    dropped: u64,
    next_seq: u64,
    next_flight: u64,
}

impl Queue {
    /// An empty queue that keeps at most `cap` bytes of messages.
    pub fn new(cap: usize) -> Self {
        Self {
            waiting: Vec::new(),
            head: 0,
            flights: Vec::new(),
            bytes: 0,
            cap,
            dropped: 0,
            next_seq: 0,
            next_flight: 0,
        }
    }

    /// Queues a message (a JSON object as text, its last member `context`); returns how many
    /// older messages the byte bound dropped for it.
    pub fn push(&mut self, text: String) -> usize {
        self.bytes += text.len() + 1;
        self.waiting.push(Entry {
            seq: self.next_seq,
            text,
        });
        self.next_seq += 1;

        let mut dropped = 0;
        // The newest message stays even when it alone is over the bound.
        while self.bytes > self.cap && self.head + 1 < self.waiting.len() {
            let oldest = core::mem::take(&mut self.waiting[self.head].text);
            self.bytes -= oldest.len() + 1;
            self.head += 1;
            dropped += 1;
        }
        self.compact();
        self.dropped += dropped as u64;
        dropped
    }

    /// The messages waiting, oldest first.
    fn live(&self) -> &[Entry] {
        self.waiting.get(self.head..).unwrap_or_default()
    }

    /// Cuts off the spent entries before `head` once they are half of the vector.
    fn compact(&mut self) {
        if self.head * 2 >= self.waiting.len() {
            self.waiting.drain(..self.head);
            self.head = 0;
        }
    }

    /// Counts calls that were dropped before they became messages, so the count travels
    /// with the next batch too.
    pub fn count_dropped(&mut self, count: usize) {
        self.dropped += count as u64;
    }

    /// Messages waiting (not in a flight).
    pub fn waiting(&self) -> usize {
        self.live().len()
    }

    /// Bytes of the queued messages, waiting and flying.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether any flight is under way.
    pub fn flying(&self) -> bool {
        !self.flights.is_empty()
    }

    /// The sequence number the next queued message will get: a flush waits for everything
    /// below it.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Whether a message queued before `seq` is still waiting or flying.
    pub fn holds_before(&self, seq: u64) -> bool {
        self.live().first().is_some_and(|entry| entry.seq < seq)
            || self
                .flights
                .iter()
                .any(|flight| flight.entries.iter().any(|entry| entry.seq < seq))
    }

    /// Moves the oldest waiting messages into a batch of at most `max_count` messages and
    /// `max_bytes` of body (one larger message still goes alone), or `None` when nothing
    /// waits.
    pub fn take(
        &mut self,
        max_count: usize,
        max_bytes: usize,
        write_key: &str,
        sent_at: &str,
    ) -> Option<Batch> {
        let tail = Object::new()
            .string("sentAt", sent_at)
            .string("writeKey", write_key)
            .finish();
        let dropped_note = 24;
        let mut size = "{\"batch\":[],".len() + tail.len() + dropped_note;
        let mut count = 0;
        for next in self.live() {
            let grown = size + next.text.len() + 1;
            if count > 0 && (count >= max_count || grown > max_bytes) {
                break;
            }
            size = grown;
            count += 1;
        }
        if count == 0 {
            return None;
        }
        let entries: Vec<Entry> = self.waiting[self.head..self.head + count]
            .iter_mut()
            .map(|entry| Entry {
                seq: entry.seq,
                text: core::mem::take(&mut entry.text),
            })
            .collect();
        self.head += count;
        self.compact();

        let mut body = String::with_capacity(size);
        body.push_str("{\"batch\":[");
        for (index, entry) in entries.iter().enumerate() {
            if index > 0 {
                body.push(',');
            }
            match (index, self.dropped) {
                (0, dropped) if dropped > 0 && entry.text.ends_with("}}") => {
                    // `context` is every message's last member, so its closing brace is
                    // the second to last character.
                    let open = entry.text.get(..entry.text.len() - 2).unwrap_or_default();
                    body.push_str(open);
                    if !open.ends_with('{') {
                        body.push(',');
                    }
                    body.push_str("\"dropped\":");
                    json::push_number(&mut body, dropped);
                    body.push_str("}}");
                }
                _ => body.push_str(&entry.text),
            }
        }
        body.push_str("],");
        body.push_str(tail.get(1..).unwrap_or_default());

        self.next_flight += 1;
        let batch = Batch {
            id: self.next_flight,
            count: entries.len(),
            body,
        };
        self.flights.push(Flight {
            id: batch.id,
            entries,
            dropped: self.dropped,
        });
        self.dropped = 0;
        Some(batch)
    }

    /// Ends the flight `id`: its messages go, or go back in place by age with their drop
    /// count. An unknown id (a flight from before [`Queue::clear`]) is ignored.
    pub fn settle(&mut self, id: u64, settled: Settled) {
        let Some(index) = self.flights.iter().position(|flight| flight.id == id) else {
            return;
        };
        let flight = self.flights.swap_remove(index);

        match settled {
            Settled::Done => {
                self.bytes -= flight
                    .entries
                    .iter()
                    .map(|e| e.text.len() + 1)
                    .sum::<usize>();
            }
            Settled::Retry => {
                self.dropped += flight.dropped;
                for entry in flight.entries {
                    let at = self
                        .live()
                        .iter()
                        .position(|other| other.seq > entry.seq)
                        .map_or(self.waiting.len(), |at| self.head + at);
                    self.waiting.insert(at, entry);
                }
            }
        }
    }

    /// Forgets every message, waiting or flying, and the drop count.
    pub fn clear(&mut self) {
        self.waiting.clear();
        self.head = 0;
        self.flights.clear();
        self.bytes = 0;
        self.dropped = 0;
    }

    /// The queue as stored text: a first line with the drop count, then one message per
    /// line, flights included, oldest first. JSON text written compactly has no raw line
    /// break, so lines separate messages safely.
    pub fn encode(&self) -> String {
        // Few flights are ever under way: placing each of their entries by a scan is
        // cheaper in code than a sort.
        let mut all: Vec<&Entry> = self.live().iter().collect();
        for entry in self.flights.iter().flat_map(|flight| &flight.entries) {
            let at = all
                .iter()
                .position(|other| other.seq > entry.seq)
                .unwrap_or(all.len());
            all.insert(at, entry);
        }
        let dropped = self.dropped + self.flights.iter().map(|f| f.dropped).sum::<u64>();

        let mut text = String::with_capacity(self.bytes + 24);
        text.push('v');
        json::push_number(&mut text, dropped);
        for entry in all {
            text.push('\n');
            text.push_str(&entry.text);
        }
        text
    }

    /// Adds the messages of stored text (from [`Queue::encode`]) behind those queued, with
    /// its drop count; returns how many lines were unreadable and skipped.
    ///
    /// An unreadable first line (the drop count) is skipped like any other broken line: the
    /// messages after it are whole and are kept.
    pub fn restore(&mut self, text: &str) -> usize {
        let mut skipped = 0;
        for (index, line) in json::lines(text).enumerate() {
            let header = line.strip_prefix('v').filter(|_| index == 0);
            if let Some(dropped) = header.and_then(|count| count.parse::<u64>().ok()) {
                self.dropped += dropped;
            } else if json::is_object(line) && line.ends_with("}}") {
                self.push(line.to_owned());
            } else {
                skipped += 1;
            }
        }
        skipped
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use ebb_protocol::decode::decode_batch;
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    fn message(n: usize) -> String {
        format!(r#"{{"type":"track","event":"e{n}","anonymousId":"a","context":{{"n":{n}}}}}"#)
    }

    fn events(batch: &Batch) -> Vec<String> {
        let body: Value = serde_json::from_str(batch.body()).unwrap();
        body["batch"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["event"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn a_batch_body_joins_messages_with_sent_at_and_write_key() {
        let mut queue = Queue::new(1 << 20);
        queue.push(message(1));
        queue.push(message(2));

        let batch = queue
            .take(20, 60_000, "wk\"1", "2026-01-01T00:00:00.000Z")
            .unwrap();

        let body: Value = serde_json::from_str(batch.body()).unwrap();
        assert_eq!(body["sentAt"], "2026-01-01T00:00:00.000Z");
        assert_eq!(body["writeKey"], "wk\"1");
        assert_eq!(events(&batch), ["e1", "e2"]);
        assert_eq!(
            decode_batch(batch.body().as_bytes()).unwrap().items.len(),
            2
        );
    }

    #[test]
    fn batches_are_cut_by_count_and_by_bytes() {
        let mut queue = Queue::new(1 << 20);
        for n in 0..5 {
            queue.push(message(n));
        }

        let by_count = queue.take(2, 60_000, "wk", "t").unwrap();
        let by_bytes = queue.take(20, 150, "wk", "t").unwrap();

        assert_eq!(events(&by_count), ["e0", "e1"]);
        assert_eq!(by_bytes.len(), 1, "a second message would pass 150 bytes");
        assert!(by_bytes.body().len() <= 150);
        assert_eq!(queue.waiting(), 2);
    }

    #[test]
    fn the_byte_bound_drops_the_oldest_and_the_next_batch_says_how_many() {
        let size = message(0).len() + 1;
        let mut queue = Queue::new(size * 3);

        let dropped: usize = (0..5).map(|n| queue.push(message(n))).sum();
        let batch = queue.take(20, 60_000, "wk", "t").unwrap();

        assert_eq!(dropped, 2);
        assert_eq!(events(&batch), ["e2", "e3", "e4"]);
        let body: Value = serde_json::from_str(batch.body()).unwrap();
        assert_eq!(body["batch"][0]["context"]["dropped"], 2);
        assert_eq!(body["batch"][1]["context"].get("dropped"), None);
    }

    #[test]
    fn a_retried_flight_goes_back_in_order_with_its_drop_count() {
        let size = message(0).len() + 1;
        let mut queue = Queue::new(size * 4);
        for n in 0..5 {
            queue.push(message(n));
        }
        let first = queue.take(2, 60_000, "wk", "t").unwrap();
        let second = queue.take(1, 60_000, "wk", "t").unwrap();

        queue.settle(second.id(), Settled::Retry);
        queue.settle(first.id(), Settled::Retry);
        let again = queue.take(20, 60_000, "wk", "t").unwrap();

        assert_eq!(events(&again), ["e1", "e2", "e3", "e4"]);
        assert!(again.body().contains(r#""dropped":1"#));
        assert!(
            again.body().contains(&message(2)),
            "retried messages are sent unchanged"
        );
    }

    #[test]
    fn a_delivered_flight_frees_its_bytes_and_unknown_flights_are_ignored() {
        let mut queue = Queue::new(1 << 20);
        queue.push(message(1));
        let batch = queue.take(20, 60_000, "wk", "t").unwrap();

        queue.settle(batch.id(), Settled::Done);
        queue.settle(99, Settled::Retry);

        assert_eq!(queue.encode(), "v0");
        assert!(!queue.flying());
    }

    #[test]
    fn stored_text_keeps_flights_and_skips_corrupt_lines() {
        let mut queue = Queue::new(1 << 20);
        queue.push(message(1));
        queue.push(message(2));
        queue.take(1, 60_000, "wk", "t").unwrap();
        let stored = queue.encode().replace('\n', "\n{\"broken\":\n");

        let mut restored = Queue::new(1 << 20);
        let skipped = restored.restore(&stored);
        let batch = restored.take(20, 60_000, "wk", "t").unwrap();

        assert_eq!(skipped, 2);
        assert_eq!(events(&batch), ["e1", "e2"]);
        assert_eq!(Queue::new(10).restore("garbage\nmore"), 2);
    }

    #[test]
    fn a_damaged_drop_count_loses_none_of_the_messages_after_it() {
        let stored = format!("vX\n{}\nv9\n{}", message(1), message(2));
        let mut restored = Queue::new(1 << 20);

        let skipped = restored.restore(&stored);
        let batch = restored.take(20, 60_000, "wk", "t").unwrap();

        assert_eq!(skipped, 2, "the damaged count and a count out of place");
        assert_eq!(events(&batch), ["e1", "e2"]);
        assert!(!batch.body().contains("dropped"));
    }

    proptest! {
        #[test]
        fn every_message_is_sent_once_or_counted_as_dropped(
            sizes in prop::collection::vec(0usize..400, 1..60),
            cap in 600usize..6000,
            max_count in 1usize..10,
            max_bytes in 200usize..3000,
            failures in prop::collection::vec(any::<bool>(), 0..40),
        ) {
            let mut queue = Queue::new(cap);
            let mut dropped = 0;
            for (n, size) in sizes.iter().enumerate() {
                let text = format!(r#"{{"event":"e{n}","p":"{}","context":{{}}}}"#, "x".repeat(*size));
                dropped += queue.push(text);
            }

            let mut sent = Vec::new();
            let mut reported = 0;
            let mut failures = failures.into_iter();
            while let Some(batch) = queue.take(max_count, max_bytes, "wk", "t") {
                prop_assert!(batch.len() <= max_count);
                prop_assert!(batch.len() == 1 || batch.body().len() <= max_bytes);
                if failures.next().unwrap_or(false) {
                    queue.settle(batch.id(), Settled::Retry);
                    continue;
                }
                let body: Value = serde_json::from_str(batch.body()).unwrap();
                for (index, message) in body["batch"].as_array().unwrap().iter().enumerate() {
                    sent.push(message["event"].as_str().unwrap()[1..].parse::<usize>().unwrap());
                    if index == 0 {
                        reported += message["context"]["dropped"].as_u64().unwrap_or(0);
                    }
                }
                queue.settle(batch.id(), Settled::Done);
            }

            prop_assert!(sent.windows(2).all(|pair| pair[0] < pair[1]), "in order, no repeat");
            prop_assert_eq!(sent.len() + dropped, sizes.len());
            prop_assert_eq!(reported as usize, dropped);
            prop_assert_eq!(queue.encode(), "v0");
        }

        #[test]
        fn the_stored_queue_stays_within_its_bound(
            sizes in prop::collection::vec(0usize..2000, 1..80),
            cap in 2100usize..20_000,
        ) {
            let mut queue = Queue::new(cap);
            for (n, size) in sizes.iter().enumerate() {
                queue.push(format!(r#"{{"event":"e{n}","p":"{}","context":{{}}}}"#, "x".repeat(*size)));
                let stored = queue.encode();
                let messages: usize = stored.split('\n').skip(1).map(|line| line.len() + 1).sum();
                prop_assert!(messages <= cap);
            }
        }
    }
}
