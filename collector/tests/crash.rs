//! Crash durability: senders drive batches at a collector that is killed with SIGKILL at
//! random moments and started again on the same data, retrying every batch that was not
//! acknowledged with the same message ids, as the SDK and the server libraries do. In the
//! end every acknowledged message is stored exactly once, and nothing is stored that was
//! never sent. Runs on the backend `EBB_TEST_BACKEND` names (the test command runs it on
//! SQLite and on PostgreSQL).
//!
//! The kill moments come from a seed printed at the start; `EBB_TEST_SEED` replays one.

#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod common;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Collector, TestDb, ADMIN_TOKEN, WRITE_KEY};
use serde_json::{json, Value};
use sqlx::Connection as _;

const SENDERS: usize = 8;
const BATCH: usize = 20;
const KILLS: usize = 5;

/// xorshift64*: enough randomness for kill moments, and repeatable from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low)
    }
}

/// What the senders share: where the collector is now (none while it is down), which
/// message ids were acknowledged, and whether to stop making new batches.
#[derive(Default)]
struct Shared {
    base: Mutex<Option<String>>,
    acknowledged: Mutex<HashSet<String>>,
    /// Every message id made, and whether it is a track (stored as an event too).
    sent: Mutex<HashMap<String, bool>>,
    draining: AtomicBool,
    /// Sends that got no answer, or a 5xx, and were made again.
    resent: AtomicUsize,
}

/// A batch of identifies and tracks for a few users, each message with its own id; and
/// each id with whether it is a track.
fn batch(sender: usize, number: usize) -> (Vec<(String, bool)>, Value) {
    let messages: Vec<Value> = (0..BATCH)
        .map(|n| {
            let id = format!("crash-{sender}-{number}-{n}");
            let user = format!("crash-user-{}", (sender * 7 + n) % 23);
            if n % 5 == 0 {
                json!({"type": "identify", "userId": user, "messageId": id,
                       "traits": {"round": number, "sender": sender}})
            } else {
                json!({"type": "track", "userId": user, "messageId": id, "event": "Tick",
                       "properties": {"n": n}})
            }
        })
        .collect();
    let ids = messages
        .iter()
        .map(|m| {
            (
                m["messageId"].as_str().unwrap().to_owned(),
                m["type"] == "track",
            )
        })
        .collect();
    (ids, json!({ "batch": messages }))
}

/// Sends batches until draining starts and nothing is left unacknowledged. A batch that
/// got no answer (the collector died, or was down) is sent again as it was; a 5xx too.
async fn sender(index: usize, shared: Arc<Shared>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut waiting: VecDeque<(Vec<(String, bool)>, Value)> = VecDeque::new();
    let mut made = 0;
    loop {
        if waiting.is_empty() {
            if shared.draining.load(Ordering::SeqCst) {
                return;
            }
            let (ids, body) = batch(index, made);
            made += 1;
            shared.sent.lock().unwrap().extend(ids.iter().cloned());
            waiting.push_back((ids, body));
        }
        let Some(base) = shared.base.lock().unwrap().clone() else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let (ids, body) = waiting.front().unwrap();

        let answer = http
            .post(format!("{base}/v1/batch"))
            .basic_auth(WRITE_KEY, Some(""))
            .json(body)
            .send()
            .await;

        match answer.map(|response| response.status().as_u16()) {
            Ok(200) => {
                shared
                    .acknowledged
                    .lock()
                    .unwrap()
                    .extend(ids.iter().map(|(id, _)| id.clone()));
                waiting.pop_front();
            }
            Ok(status) if status >= 500 => {
                shared.resent.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(status) => panic!("a valid batch was refused with {status}"),
            Err(_) => {
                shared.resent.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// How many rows of `table` carry each message id.
async fn counts(database_url: &str, table: &str) -> HashMap<String, i64> {
    let sql = format!("SELECT message_id, COUNT(*) FROM {table} GROUP BY message_id");
    let rows: Vec<(String, i64)> = if database_url.starts_with("postgres") {
        let mut db = sqlx::PgConnection::connect(database_url).await.unwrap();
        sqlx::query_as(&sql).fetch_all(&mut db).await.unwrap()
    } else {
        let mut db = sqlx::SqliteConnection::connect(database_url).await.unwrap();
        sqlx::query_as(&sql).fetch_all(&mut db).await.unwrap()
    };
    rows.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_message_survives_sigkill_exactly_once() {
    let seed = std::env::var("EBB_TEST_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("crash test seed: {seed} (EBB_TEST_SEED={seed} replays it)");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::new();
    let env = [
        ("EBB_WRITE_KEY", WRITE_KEY),
        ("EBB_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let shared = Arc::new(Shared::default());
    let senders: Vec<_> = (0..SENDERS)
        .map(|index| tokio::spawn(sender(index, shared.clone())))
        .collect();

    let mut kills = 0;
    let mut acknowledged_at_kills = Vec::new();
    while kills < KILLS {
        let mut collector = Collector::start_in(dir.path(), &db, &env);
        *shared.base.lock().unwrap() = Some(collector.base.clone());
        tokio::time::sleep(Duration::from_millis(rng.between(150, 900))).await;
        collector.kill();
        *shared.base.lock().unwrap() = None;
        kills += 1;
        acknowledged_at_kills.push(shared.acknowledged.lock().unwrap().len());
        tokio::time::sleep(Duration::from_millis(rng.between(0, 200))).await;
    }
    let collector = Collector::start_in(dir.path(), &db, &env);
    *shared.base.lock().unwrap() = Some(collector.base.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    shared.draining.store(true, Ordering::SeqCst);
    for sender in senders {
        tokio::time::timeout(Duration::from_secs(60), sender)
            .await
            .expect("the senders drained within a minute")
            .unwrap();
    }
    // Every accepted message leaves a message-id row; tracks are events as well.
    let stored = counts(&collector.database_url, "message_ids").await;
    let events = counts(&collector.database_url, "events").await;
    let acknowledged = shared.acknowledged.lock().unwrap().clone();
    let sent = shared.sent.lock().unwrap().clone();
    let tracks: HashSet<&String> = sent
        .iter()
        .filter(|(_, track)| **track)
        .map(|(id, _)| id)
        .collect();

    let resent = shared.resent.load(Ordering::SeqCst);
    eprintln!(
        "{} messages acknowledged, {} stored, {resent} batches sent again; acknowledged \
         before each kill: {acknowledged_at_kills:?}",
        acknowledged.len(),
        stored.len()
    );
    assert!(
        resent > 0,
        "some kills cut requests off, whose batches were sent again"
    );
    assert!(
        acknowledged_at_kills
            .windows(2)
            .any(|pair| pair[1] > pair[0]),
        "batches were acknowledged between kills, so the kills hit a collector under load"
    );
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|id| !stored.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but not stored: {missing:?}"
    );
    let twice: Vec<_> = stored
        .iter()
        .chain(&events)
        .filter(|(_, count)| **count != 1)
        .collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let lost_events: Vec<_> = tracks
        .iter()
        .filter(|id| acknowledged.contains(**id) && !events.contains_key(**id))
        .collect();
    assert!(
        lost_events.is_empty(),
        "acknowledged tracks without their event: {lost_events:?}"
    );
    assert_eq!(
        events.len(),
        tracks.len(),
        "one event per track sent, no other"
    );
    let unknown: Vec<_> = stored.keys().filter(|id| !sent.contains_key(*id)).collect();
    assert!(unknown.is_empty(), "stored but never sent: {unknown:?}");
    assert_eq!(
        acknowledged,
        sent.keys().cloned().collect::<HashSet<_>>(),
        "after draining, every message sent was acknowledged"
    );
}
