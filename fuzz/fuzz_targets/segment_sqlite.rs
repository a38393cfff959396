//! Segment filters run on a real SQLite database through the collector's own store.
//!
//! `segment_filter` checks the SQL text; this target runs it. The database is made once
//! per process with the collector's migrations and a few users whose traits, consent, GPC
//! signal and responses cover every kind of condition. Beyond not panicking:
//!
//! - SQLite accepts every compiled filter and evaluates it without error (no malformed
//!   JSON path, no type error);
//! - a filter and its negation split the users exactly: the expression is never NULL;
//! - `all` of a filter and itself selects what the filter selects.

#![no_main]

use std::sync::OnceLock;

use chrono::{DateTime, TimeDelta, Utc};
use ebb_collector::segment::Filter;
use ebb_collector::store::{Accepted, EnvironmentId, Store, WriteBatch};
use ebb_protocol::{AnonymousId, Message, MessageType, UserId};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use tokio::runtime::Runtime;

struct Database {
    runtime: Runtime,
    store: Store,
    environment: EnvironmentId,
    users: u64,
}

static DATABASE: OnceLock<Database> = OnceLock::new();

fn now() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH + TimeDelta::days(20_000)
}

fn message(kind: MessageType, user: &str, fields: Value) -> Message {
    let mut json = json!({"type": kind.as_str(), "userId": user});
    if let (Value::Object(json), Value::Object(fields)) = (&mut json, fields) {
        json.extend(fields);
    }
    let mut message: Message = serde_json::from_value(json).expect("a valid message");
    message.user_id = Some(UserId::new(user));
    message
}

fn open() -> Database {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let dir = std::env::temp_dir().join(format!("ebb-fuzz-segment-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    let url = format!("sqlite://{}/ebb.db", dir.display());

    let (store, environment, users) = runtime.block_on(async {
        let store = Store::open(&url).await.expect("the database opens");
        let environment = store
            .create_environment("fuzz", "wk_fuzz", None)
            .await
            .expect("an environment")
            .id;
        let days = |n| now() - TimeDelta::days(n);
        let mut anonymous = Message::new(MessageType::Page);
        anonymous.anonymous_id = Some(AnonymousId::new("anon-1"));
        let messages = vec![
            (
                message(
                    MessageType::Identify,
                    "u-1",
                    json!({"traits": {"plan": "pro", "age": 31, "score": 9.5, "vip": true,
                        "email": null, "address": {"city": "London", "zip": "N1"},
                        "a.b": 1, "tags": ["x"], "quote\"d": "back\\slash",
                        "big": 1e308, "min": -9_223_372_036_854_775_808_i64},
                        "context": {"consent": {"categoryPreferences":
                            {"analytics": true, "marketing": false}}}}),
                ),
                days(400),
            ),
            (
                message(
                    MessageType::Identify,
                    "u-2",
                    json!({"traits": {"plan": "free", "age": "31", "Straße": "ÉTÉ", "vip": false},
                        "context": {"gpc": true}}),
                ),
                days(30),
            ),
            (
                message(
                    MessageType::Response,
                    "u-3",
                    json!({"surveyId": "nps-2026", "answers": {"score": 9}}),
                ),
                days(1),
            ),
            (anonymous, days(3)),
        ];
        let users = messages.len() as u64;
        let batch = WriteBatch {
            environment: environment.clone(),
            messages: messages
                .into_iter()
                .map(|(message, time)| Accepted { message, time })
                .collect(),
            received_at: now(),
        };
        store
            .store_batches(&[&batch])
            .await
            .expect("the users are stored");
        (store, environment, users)
    });
    Database {
        runtime,
        store,
        environment,
        users,
    }
}

fuzz_target!(|body: &[u8]| {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let Ok(filter) = Filter::parse(&json) else {
        return;
    };
    let db = DATABASE.get_or_init(open);
    let count = |filter: &Filter| {
        db.runtime
            .block_on(db.store.segment_count(&db.environment, filter, now()))
            .unwrap_or_else(|e| panic!("SQLite refused the compiled filter {json}: {e}"))
    };

    let selected = count(&filter);
    assert!(selected <= db.users, "more users selected than exist");

    let written = Value::from(filter.clone());
    if let Ok(negated) = Filter::parse(&json!({"not": written.clone()})) {
        assert_eq!(
            selected + count(&negated),
            db.users,
            "a filter and its negation do not split the users: it is NULL for some"
        );
    }
    if let Ok(twice) = Filter::parse(&json!({"all": [written.clone(), written]})) {
        assert_eq!(
            count(&twice),
            selected,
            "`all` of a filter twice selects otherwise"
        );
    }
});
