use std::cell::Cell;
use std::rc::Rc;

use ebb_protocol::decode::decode_batch;
use ebb_protocol::MessageType;
use serde_json::{json, Value};

use super::*;
use crate::{MemoryStore, Page};

/// An environment with counting random bytes, a clock the test moves, and a fixed page.
#[derive(Debug, Clone)]
struct Fixed {
    draws: Rc<Cell<u8>>,
    clock: Rc<Cell<u32>>,
    gpc: bool,
}

impl Fixed {
    fn new() -> Self {
        Self {
            draws: Rc::new(Cell::new(0)),
            clock: Rc::new(Cell::new(0)),
            gpc: false,
        }
    }
}

impl Environment for Fixed {
    fn random_bytes(&mut self) -> Result<[u8; 16]> {
        self.draws.set(self.draws.get() + 1);
        Ok([self.draws.get(); 16])
    }

    fn now_ms(&self) -> f64 {
        1_777_636_800_000.0 + f64::from(self.clock.get()) * 1000.0
    }

    fn page(&self) -> Option<Page> {
        Some(Page {
            path: "/pricing".into(),
            url: "http://site.test/pricing?plan=pro".into(),
            search: "?plan=pro".into(),
            title: "Pricing".into(),
            referrer: "http://site.test/".into(),
        })
    }

    fn global_privacy_control(&self) -> bool {
        self.gpc
    }
}

fn config() -> Config {
    Config::new("wk_test", "http://collector.test").unwrap()
}

/// [`config`] changed by `change`.
fn config_with(change: impl FnOnce(&mut Config) -> Result<()>) -> Config {
    let mut config = config();
    change(&mut config).unwrap();
    config
}

fn sdk_with(config: Config, env: Fixed, store: MemoryStore) -> Sdk<Fixed, MemoryStore> {
    Sdk::new(config, env, store).unwrap()
}

fn fields(value: Value) -> Fields {
    Fields::from_stringified(value.to_string()).unwrap()
}

fn track(event: &str) -> Call {
    Call::now(Payload::Track {
        event: event.into(),
        properties: fields(json!({"n": 1})),
    })
}

fn identify(user_id: Option<&str>, traits: Value) -> Call {
    Call::now(Payload::Identify {
        user_id: user_id.map(str::to_owned),
        traits: fields(traits),
        user_hash: None,
    })
}

fn analytics() -> Vec<String> {
    vec!["analytics".to_owned()]
}

/// Every message of every batch the SDK has queued, delivered as the collector would.
fn drain(sdk: &mut Sdk<Fixed, MemoryStore>) -> Vec<Value> {
    let mut messages = Vec::new();
    while let Some(batch) = sdk.next_batch(usize::MAX) {
        let envelope = decode_batch(batch.body().as_bytes()).unwrap();
        for index in 0..envelope.items.len() {
            envelope.message(index).unwrap();
        }
        let body: Value = serde_json::from_str(batch.body()).unwrap();
        messages.extend(body["batch"].as_array().unwrap().iter().cloned());
        sdk.settle(batch.id(), &Outcome::Delivered);
    }
    messages
}

fn ebb_keys(store: &MemoryStore) -> Vec<String> {
    store
        .local
        .keys()
        .chain(store.session.keys())
        .filter(|key| key.starts_with("ebb."))
        .cloned()
        .collect()
}

#[test]
fn before_consent_in_opt_in_nothing_is_minted_stored_or_queued() {
    let mut sdk = sdk_with(config(), Fixed::new(), MemoryStore::default());

    let recorded = sdk.record(track("Viewed")).unwrap();
    sdk.record(identify(Some("u_1"), json!({"plan": "pro"})))
        .unwrap();
    sdk.save();

    assert_eq!(recorded, Recorded::Held);
    assert_eq!(sdk.anonymous_id(), None);
    assert_eq!(sdk.pending(), 2);
    assert!(sdk.next_batch(usize::MAX).is_none());
    assert_eq!(ebb_keys(sdk.store()), Vec::<String>::new());
}

#[test]
fn a_grant_records_the_change_and_replays_held_calls_with_their_timestamps() {
    let env = Fixed::new();
    let mut sdk = sdk_with(config(), env.clone(), MemoryStore::default());
    sdk.record(track("Viewed")).unwrap();
    env.clock.set(30);

    sdk.grant(&analytics()).unwrap();
    let sent = drain(&mut sdk);

    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["event"], CONSENT_EVENT);
    assert_eq!(sent[0]["timestamp"], "2026-05-01T12:00:30.000Z");
    assert_eq!(sent[1]["event"], "Viewed");
    assert_eq!(sent[1]["timestamp"], "2026-05-01T12:00:00.000Z");
    for message in &sent {
        assert_eq!(
            message["context"]["consent"]["categoryPreferences"],
            json!({"analytics": true})
        );
        assert_eq!(message["anonymousId"], sent[0]["anonymousId"]);
    }
    assert!(sdk.store().local.contains_key("ebb.consent"));
    assert!(sdk.store().local.contains_key("ebb.anon"));
}

#[test]
fn a_deny_drops_held_calls_and_sends_and_stores_nothing() {
    let mut sdk = sdk_with(config(), Fixed::new(), MemoryStore::default());
    sdk.record(track("Viewed")).unwrap();

    sdk.deny(&analytics()).unwrap();
    let later = sdk.record(track("Clicked")).unwrap();
    sdk.save();

    assert_eq!(later, Recorded::Ignored);
    assert_eq!(sdk.pending(), 0);
    assert!(drain(&mut sdk).is_empty());
    assert_eq!(ebb_keys(sdk.store()), Vec::<String>::new());
}

#[test]
fn withdrawal_erases_the_browser_state_and_sends_one_record() {
    let mut sdk = sdk_with(config(), Fixed::new(), MemoryStore::default());
    sdk.grant(&analytics()).unwrap();
    sdk.record(identify(Some("u_1"), json!({"email": "a@b.test"})))
        .unwrap();
    sdk.record(track("Viewed")).unwrap();
    sdk.save();
    let anonymous_id = sdk.anonymous_id().unwrap().to_owned();

    sdk.withdraw().unwrap();
    sdk.save();
    let after = sdk.record(track("After")).unwrap();
    let sent = drain(&mut sdk);

    assert_eq!(ebb_keys(sdk.store()), Vec::<String>::new());
    assert_eq!(after, Recorded::Ignored);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["event"], CONSENT_EVENT);
    assert_eq!(sent[0]["anonymousId"], anonymous_id.as_str());
    assert_eq!(sent[0]["userId"], "u_1");
    assert_eq!(
        sent[0]["context"]["consent"]["categoryPreferences"],
        json!({"analytics": false})
    );
    assert_eq!(sdk.anonymous_id(), None);
}

#[test]
fn opt_out_tracks_at_once_and_gpc_counts_as_an_objection() {
    let opt_out = config_with(|c| c.set_consent(Mode::OptOut, vec![], vec![]));
    let mut plain = sdk_with(opt_out.clone(), Fixed::new(), MemoryStore::default());
    let mut env = Fixed::new();
    env.gpc = true;
    let mut signalled = sdk_with(opt_out, env, MemoryStore::default());

    assert_eq!(plain.record(track("A")).unwrap(), Recorded::Queued);
    assert_eq!(signalled.record(track("A")).unwrap(), Recorded::Ignored);
    signalled.save();
    assert_eq!(ebb_keys(signalled.store()), Vec::<String>::new());

    signalled.grant(&analytics()).unwrap();
    signalled.record(track("B")).unwrap();
    let sent = drain(&mut signalled);
    assert_eq!(sent.len(), 2);
    assert!(sent.iter().all(|message| message["context"]["gpc"] == true));
    assert!(drain(&mut plain)[0]["context"].get("gpc").is_none());
}

#[test]
fn an_opt_out_withdrawal_stays_stored_without_any_identity() {
    let opt_out = config_with(|c| c.set_consent(Mode::OptOut, vec![], vec![]));
    let mut sdk = sdk_with(opt_out.clone(), Fixed::new(), MemoryStore::default());
    sdk.record(track("A")).unwrap();

    sdk.withdraw().unwrap();
    let mut next_page = sdk_with(opt_out, Fixed::new(), sdk.into_store());

    assert_eq!(next_page.record(track("B")).unwrap(), Recorded::Ignored);
    assert_eq!(ebb_keys(next_page.store()), ["ebb.consent"]);
    assert_eq!(next_page.anonymous_id(), None);
}

#[test]
fn identity_consent_and_queue_survive_a_reload() {
    let mut sdk = sdk_with(config(), Fixed::new(), MemoryStore::default());
    sdk.grant(&analytics()).unwrap();
    sdk.record(identify(Some("u_7"), json!({"plan": "pro"})))
        .unwrap();
    let anonymous_id = sdk.anonymous_id().unwrap().to_owned();

    sdk.page_hidden();
    let mut reloaded = sdk_with(config(), Fixed::new(), sdk.into_store());
    reloaded.record(track("Back")).unwrap();
    let sent = drain(&mut reloaded);

    assert_eq!(reloaded.anonymous_id(), Some(anonymous_id.as_str()));
    assert_eq!(reloaded.user_id(), Some("u_7"));
    let events: Vec<&Value> = sent.iter().map(|m| &m["type"]).collect();
    assert_eq!(events, ["track", "identify", "track"]);
    assert_eq!(sent[2]["userId"], "u_7");
}

#[test]
fn a_second_tab_neither_sends_nor_adopts_a_live_tabs_queue() {
    let mut first = sdk_with(config(), Fixed::new(), MemoryStore::default());
    first.grant(&analytics()).unwrap();
    first.record(track("First")).unwrap();
    first.save();
    // A duplicated tab starts with a copy of sessionStorage, hence the same tab id.
    let mut shared = first.store().clone();

    let mut second = sdk_with(config(), Fixed::new(), std::mem::take(&mut shared));
    second.adopt_orphans();
    second.record(track("Second")).unwrap();
    let sent = drain(&mut second);

    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["event"], "Second");
}

#[test]
fn the_queue_of_a_closed_tab_is_adopted_once() {
    let mut closed = sdk_with(config(), Fixed::new(), MemoryStore::default());
    closed.grant(&analytics()).unwrap();
    closed.record(track("Left behind")).unwrap();
    closed.page_hidden();
    let mut store = closed.into_store();
    store.session.clear();

    let mut other = sdk_with(config(), Fixed::new(), store);
    let adopted = other.adopt_orphans();
    let again = other.adopt_orphans();
    let sent = drain(&mut other);

    assert_eq!((adopted, again), (2, 0));
    let events: Vec<&Value> = sent.iter().map(|m| &m["event"]).collect();
    assert_eq!(events, [CONSENT_EVENT, "Left behind"]);
}

#[test]
fn reset_forgets_the_user_and_mints_a_new_anonymous_id() {
    let mut sdk = sdk_with(config(), Fixed::new(), MemoryStore::default());
    sdk.grant(&analytics()).unwrap();
    sdk.record(identify(Some("u_1"), json!({"a": 1}))).unwrap();
    let before = sdk.anonymous_id().unwrap().to_owned();

    sdk.reset().unwrap();

    assert_ne!(sdk.anonymous_id().unwrap(), before);
    assert_eq!(sdk.user_id(), None);
    assert_eq!(sdk.store().local.get("ebb.user"), None);
    assert_eq!(sdk.store().local["ebb.traits"], "{}");
    assert_eq!(sdk.store().local["ebb.anon"], sdk.anonymous_id().unwrap());
}

#[test]
fn traits_merge_for_the_same_user_and_start_over_for_another() {
    let mut sdk = sdk_with(config(), Fixed::new(), MemoryStore::default());
    sdk.grant(&analytics()).unwrap();

    sdk.record(identify(Some("u_1"), json!({"a": 1, "b": 2})))
        .unwrap();
    sdk.record(identify(None, json!({"b": 3}))).unwrap();
    sdk.record(identify(Some("u_2"), json!({"c": 4}))).unwrap();
    let sent = drain(&mut sdk);

    assert_eq!(sent[1]["traits"], json!({"a": 1, "b": 2}));
    assert_eq!(sent[2]["traits"], json!({"a": 1, "b": 3}));
    assert_eq!(sent[2]["userId"], "u_1");
    assert_eq!(sent[3]["traits"], json!({"c": 4}));
}

#[test]
fn storage_that_refuses_writes_leaves_a_working_sdk() {
    let store = MemoryStore {
        refuse_writes: true,
        ..MemoryStore::default()
    };
    let mut sdk = sdk_with(config(), Fixed::new(), store);

    sdk.grant(&analytics()).unwrap();
    sdk.record(track("Works")).unwrap();
    sdk.save();
    let sent = drain(&mut sdk);

    assert!(sdk.storage_failed());
    assert_eq!(sent.len(), 2);
    assert!(sent[1]["anonymousId"].is_string());
}

#[test]
fn every_type_is_written_as_the_collector_reads_it() {
    let mut sdk = sdk_with(
        config_with(|c| {
            c.set_user_hash(Some("ab12".into()));
            Ok(())
        }),
        Fixed::new(),
        MemoryStore::default(),
    );
    sdk.grant(&analytics()).unwrap();

    for payload in [
        Payload::Page {
            name: Some("Pricing".into()),
            properties: fields(json!({"plan": "pro"})),
        },
        Payload::Group {
            group_id: "g_1".into(),
            traits: fields(json!({"size": 5})),
        },
        Payload::Alias {
            user_id: "u_new".into(),
            previous_id: None,
        },
        Payload::Response {
            survey_id: "nps".into(),
            answers: fields(json!({"score": 9})),
        },
    ] {
        sdk.record(Call::now(payload)).unwrap();
    }
    let batch = sdk.next_batch(usize::MAX).unwrap();
    let envelope = decode_batch(batch.body().as_bytes()).unwrap();
    let decoded: Vec<_> = (0..envelope.items.len())
        .map(|index| envelope.message(index).unwrap())
        .collect();

    assert_eq!(decoded[1].kind, MessageType::Page);
    assert_eq!(decoded[1].name.as_deref(), Some("Pricing"));
    assert_eq!(decoded[2].group_id.as_deref(), Some("g_1"));
    assert_eq!(decoded[3].previous_id.as_deref(), sdk.anonymous_id());
    assert_eq!(decoded[3].user_id.as_ref().unwrap().as_str(), "u_new");
    assert_eq!(decoded[4].survey_id.as_deref(), Some("nps"));
    assert_eq!(decoded[4].answers, Some(json!({"score": 9})));
    for message in &decoded {
        assert_eq!(message.context["userHash"], "ab12");
        assert_eq!(message.context["library"]["name"], LIBRARY_NAME);
        assert_eq!(message.context["page"]["path"], "/pricing");
    }
}

#[test]
fn bad_arguments_are_refused_and_change_nothing() {
    let mut sdk = sdk_with(config(), Fixed::new(), MemoryStore::default());
    sdk.grant(&analytics()).unwrap();
    drain(&mut sdk);

    for payload in [
        Payload::Track {
            event: String::new(),
            properties: Fields::default(),
        },
        Payload::Group {
            group_id: String::new(),
            traits: Fields::default(),
        },
        Payload::Response {
            survey_id: "x".repeat(1001),
            answers: Fields::default(),
        },
    ] {
        assert!(matches!(
            sdk.record(Call::now(payload)),
            Err(Error::InvalidArgument { .. })
        ));
    }
    let huge = fields(json!({"p": "x".repeat(MAX_MESSAGE_BYTES)}));
    let too_large = sdk.record(Call::now(Payload::Track {
        event: "Big".into(),
        properties: huge,
    }));

    assert!(matches!(too_large, Err(Error::MessageTooLarge { .. })));
    assert_eq!(sdk.queued(), 0);
}

#[test]
fn a_retried_batch_keeps_its_message_ids_and_backs_off() {
    let mut sdk = sdk_with(config(), Fixed::new(), MemoryStore::default());
    sdk.grant(&analytics()).unwrap();
    sdk.record(track("Once")).unwrap();

    let first = sdk.next_batch(usize::MAX).unwrap();
    let delay = sdk.settle(
        first.id(),
        &Outcome::Retry {
            status: 503,
            retry_after_ms: None,
        },
    );
    let backoff_wait = sdk.asked_wait_ms();
    let second = sdk.next_batch(usize::MAX).unwrap();
    let asked = sdk.settle(
        second.id(),
        &Outcome::Retry {
            status: 429,
            retry_after_ms: Some(7000),
        },
    );
    let asked_wait = sdk.asked_wait_ms();
    let third = sdk.next_batch(usize::MAX).unwrap();

    assert!((500..=1000).contains(&delay.unwrap()));
    assert_eq!(backoff_wait, 0.0, "flush() may go ahead of the backoff");
    assert_eq!(asked, Some(7000));
    assert_eq!(
        asked_wait, 7000.0,
        "flush() waits out the collector's Retry-After"
    );
    assert_eq!(first.body(), second.body());
    assert_eq!(second.body(), third.body());
    assert_eq!(
        sdk.settle(third.id(), &Outcome::Refused { status: 400 }),
        None
    );
    assert!(
        sdk.next_batch(usize::MAX).is_none(),
        "a refused batch is dropped"
    );
}

#[test]
fn held_calls_are_bounded_and_the_oldest_go_first() {
    let config = config_with(|c| c.set_max_pending(2));
    let mut sdk = sdk_with(config, Fixed::new(), MemoryStore::default());
    for event in ["A", "B", "C"] {
        sdk.record(track(event)).unwrap();
    }

    sdk.grant(&analytics()).unwrap();
    let events: Vec<Value> = drain(&mut sdk).iter().map(|m| m["event"].clone()).collect();

    assert_eq!(events, [json!(CONSENT_EVENT), json!("B"), json!("C")]);
}

#[test]
fn a_corrupt_stored_entry_is_skipped() {
    let mut sdk = sdk_with(config(), Fixed::new(), MemoryStore::default());
    sdk.grant(&analytics()).unwrap();
    sdk.record(track("Kept")).unwrap();
    sdk.page_hidden();
    let mut store = sdk.into_store();
    let key = store
        .local
        .keys()
        .find(|key| key.starts_with("ebb.queue."))
        .unwrap()
        .clone();
    let stored = store.local[&key].clone();
    store
        .local
        .insert(key, format!("{stored}\n{{\"type\":\"tra"));

    let mut reloaded = sdk_with(config(), Fixed::new(), store);
    let sent = drain(&mut reloaded);

    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1]["event"], "Kept");
}

#[test]
fn the_clock_set_back_an_hour_keeps_events_in_order_and_a_retry_due_on_time() {
    let env = Fixed::new();
    env.clock.set(7200);
    let mut sdk = sdk_with(config(), env.clone(), MemoryStore::default());
    sdk.grant(&analytics()).unwrap();
    sdk.record(track("Before")).unwrap();
    let failed = sdk.next_batch(usize::MAX).unwrap();
    let delay = sdk.settle(
        failed.id(),
        &Outcome::Retry {
            status: 503,
            retry_after_ms: None,
        },
    );

    env.clock.set(3600);
    let wait = sdk.retry_wait_ms();
    sdk.record(track("After")).unwrap();
    env.clock.set(3601);
    let batch = sdk.next_batch(usize::MAX).unwrap();

    assert_eq!(
        wait,
        f64::from(delay.unwrap()),
        "the retry is still due after its delay"
    );
    let received = ebb_protocol::decode::parse_timestamp("2026-05-01T13:00:00.000Z").unwrap();
    let envelope = decode_batch(batch.body().as_bytes()).unwrap();
    let stored: Vec<_> = (0..envelope.items.len())
        .map(|index| {
            let message = envelope.message(index).unwrap();
            ebb_protocol::decode::event_time(&message, received)
        })
        .collect();
    assert_eq!(stored.len(), 3, "the consent record, Before and After");
    assert!(
        stored.windows(2).all(|pair| pair[0] <= pair[1]),
        "{stored:?}"
    );
    assert!(stored.iter().all(|time| *time <= received), "{stored:?}");
    assert_eq!(
        (received - stored[1]).num_seconds(),
        1,
        "Before happened a second ago"
    );
}

#[test]
fn a_page_shown_again_keeps_the_queue_that_storage_refused_when_it_was_hidden() {
    let mut sdk = sdk_with(config(), Fixed::new(), MemoryStore::default());
    sdk.grant(&analytics()).unwrap();
    sdk.record(track("Stored")).unwrap();
    sdk.save();
    sdk.store.refuse_writes = true;
    sdk.record(track("Only in memory")).unwrap();
    sdk.page_hidden();
    sdk.store.refuse_writes = false;

    sdk.page_shown();
    let sent = drain(&mut sdk);

    let events: Vec<_> = sent
        .iter()
        .map(|message| message["event"].clone())
        .collect();
    assert_eq!(
        events,
        [
            json!(CONSENT_EVENT),
            json!("Stored"),
            json!("Only in memory")
        ]
    );
}

#[test]
fn a_page_shown_again_leaves_the_queue_another_tab_adopted_meanwhile() {
    let mut sdk = sdk_with(config(), Fixed::new(), MemoryStore::default());
    sdk.grant(&analytics()).unwrap();
    sdk.record(track("Adopted elsewhere")).unwrap();
    sdk.page_hidden();
    let queue = ebb_keys(&sdk.store)
        .into_iter()
        .find(|name| name.starts_with(QUEUE_PREFIX))
        .unwrap();
    sdk.store.local.remove(&queue);

    sdk.page_shown();

    assert!(drain(&mut sdk).is_empty(), "the other tab sends it");
}

/// A page whose path the test changes, on a host whose cheap check never notices: what a
/// single-page app's `history.pushState` looks like to the browser's `still_on` within one
/// millisecond.
#[derive(Debug, Clone)]
struct Moving {
    fixed: Fixed,
    path: Rc<std::cell::RefCell<String>>,
}

impl Environment for Moving {
    fn random_bytes(&mut self) -> Result<[u8; 16]> {
        self.fixed.random_bytes()
    }

    fn now_ms(&self) -> f64 {
        self.fixed.now_ms()
    }

    fn page(&self) -> Option<Page> {
        let path = self.path.borrow().clone();
        Some(Page {
            url: format!("http://site.test{path}"),
            path,
            search: String::new(),
            title: "App".into(),
            referrer: String::new(),
        })
    }

    fn still_on(&self, seen: Option<&Page>) -> bool {
        seen.is_some()
    }
}

#[test]
fn a_page_view_reads_the_page_even_when_the_host_saw_no_change() {
    let path = Rc::new(std::cell::RefCell::new("/a".to_owned()));
    let env = Moving {
        fixed: Fixed::new(),
        path: path.clone(),
    };
    let mut sdk = Sdk::new(config(), env, MemoryStore::default()).unwrap();
    sdk.grant(&analytics()).unwrap();
    sdk.record(track("On A")).unwrap();

    *path.borrow_mut() = "/b".to_owned();
    sdk.record(Call::now(Payload::Page {
        name: Some("B".into()),
        properties: fields(json!({})),
    }))
    .unwrap();
    sdk.record(track("On B")).unwrap();
    let batch = sdk.next_batch(usize::MAX).unwrap();
    let body: Value = serde_json::from_str(batch.body()).unwrap();
    let paths: Vec<(&str, &str)> = body["batch"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] != "track" || m["event"] != "Segment Consent Preference Updated")
        .map(|m| {
            (
                m["type"].as_str().unwrap(),
                m["context"]["page"]["path"].as_str().unwrap(),
            )
        })
        .collect();

    assert_eq!(paths, [("track", "/a"), ("page", "/b"), ("track", "/b")]);
}

#[test]
fn a_call_with_its_own_time_and_page_keeps_them_held_or_not() {
    let env = Fixed::new();
    let mut sdk = sdk_with(config(), env.clone(), MemoryStore::default());
    let landing = Page {
        path: "/landing".into(),
        url: "http://site.test/landing?ref=ad".into(),
        search: "?ref=ad".into(),
        title: "Landing".into(),
        referrer: "http://ads.test/".into(),
    };
    let made_earlier = |event: &str, at: &str| Call {
        timestamp: Some(at.to_owned()),
        page: Some(landing.clone()),
        ..track(event)
    };
    sdk.record(made_earlier("Held", "2026-05-01T11:59:58.000Z"))
        .unwrap();
    env.clock.set(30);

    sdk.grant(&analytics()).unwrap();
    sdk.record(made_earlier("Replayed", "2026-05-01T11:59:59.000Z"))
        .unwrap();
    sdk.record(track("Now")).unwrap();
    let sent = drain(&mut sdk);

    let seen: Vec<(&str, &str, &str)> = sent[1..]
        .iter()
        .map(|m| {
            (
                m["event"].as_str().unwrap(),
                m["timestamp"].as_str().unwrap(),
                m["context"]["page"]["path"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("Held", "2026-05-01T11:59:58.000Z", "/landing"),
            ("Replayed", "2026-05-01T11:59:59.000Z", "/landing"),
            ("Now", "2026-05-01T12:00:30.000Z", "/pricing"),
        ]
    );
    assert_eq!(
        sent[2]["context"]["page"],
        serde_json::from_str::<Value>(&landing.to_json()).unwrap()
    );
}

#[test]
fn held_calls_pushed_out_by_the_bound_are_counted_as_dropped() {
    let config = config_with(|c| c.set_max_pending(2));
    let mut sdk = sdk_with(config, Fixed::new(), MemoryStore::default());
    for event in ["A", "B", "C", "D"] {
        sdk.record(track(event)).unwrap();
    }

    sdk.grant(&analytics()).unwrap();
    let sent = drain(&mut sdk);

    let events: Vec<&Value> = sent.iter().map(|m| &m["event"]).collect();
    assert_eq!(events, [CONSENT_EVENT, "C", "D"]);
    assert_eq!(sent[0]["context"]["dropped"], 2);
    assert!(sent[1..]
        .iter()
        .all(|m| m["context"].get("dropped").is_none()));
}

#[test]
fn a_held_call_too_large_to_replay_is_counted_as_dropped() {
    let mut sdk = sdk_with(config(), Fixed::new(), MemoryStore::default());
    sdk.record(Call::now(Payload::Track {
        event: "Huge".into(),
        properties: fields(json!({"p": "x".repeat(MAX_MESSAGE_BYTES)})),
    }))
    .unwrap();
    sdk.record(track("Small")).unwrap();

    sdk.grant(&analytics()).unwrap();
    let sent = drain(&mut sdk);

    let events: Vec<&Value> = sent.iter().map(|m| &m["event"]).collect();
    assert_eq!(events, [CONSENT_EVENT, "Small"]);
    assert_eq!(sent[0]["context"]["dropped"], 1);
}

/// What a page leave handed to the browser: `(body length, keepalive, events, flight)` per
/// batch.
type Left = Vec<(usize, bool, Vec<String>, u64)>;

/// Batches cut by `flush_bytes` alone, and a queue that drops nothing.
fn leaving_config(flush_bytes: usize) -> Config {
    config_with(|c| {
        c.set_flush_bytes(flush_bytes)?;
        c.set_flush_at(1000)?;
        c.set_max_queue_bytes(4 << 20)
    })
}

/// An SDK with consent granted (its consent record delivered) that queued a message of
/// each of `sizes` bytes of properties, events `e0`, `e1`, …, under `flush_bytes`.
fn queued_for_leaving(flush_bytes: usize, sizes: &[usize]) -> Sdk<Fixed, MemoryStore> {
    let config = leaving_config(flush_bytes);
    let mut sdk = sdk_with(config, Fixed::new(), MemoryStore::default());
    sdk.grant(&analytics()).unwrap();
    drain(&mut sdk);
    for (n, size) in sizes.iter().enumerate() {
        sdk.record(Call::now(Payload::Track {
            event: format!("e{n}"),
            properties: fields(json!({"p": "x".repeat(*size)})),
        }))
        .unwrap();
    }
    sdk
}

/// Leaves the page, the browser taking a beacon when `beacons` says so.
fn leave(sdk: &mut Sdk<Fixed, MemoryStore>, beacons: bool) -> Left {
    let mut left = Vec::new();
    sdk.leave(|batch, keepalive| {
        let body: Value = serde_json::from_str(batch.body()).unwrap();
        let events = body["batch"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["event"].as_str().unwrap().to_owned())
            .collect();
        left.push((batch.body().len(), keepalive, events, batch.id()));
        keepalive || beacons
    });
    left
}

#[test]
fn a_page_leave_cuts_batches_to_the_keepalive_budget_whatever_flush_bytes_allows() {
    // 100 messages of about 1.3 KB: 130 KB, twice what may leave with the page.
    let mut sdk = queued_for_leaving(512_000, &[1000; 100]);

    let left = leave(&mut sdk, false);

    let keepalive: Vec<usize> = left.iter().filter(|b| b.1).map(|b| b.0).collect();
    assert!(!keepalive.is_empty(), "{left:?}");
    assert!(keepalive.iter().sum::<usize>() <= Sdk::<Fixed, MemoryStore>::LEAVE_BUDGET);
    assert!(
        keepalive.iter().sum::<usize>() > Sdk::<Fixed, MemoryStore>::LEAVE_BUDGET - 2000,
        "the budget is filled: {keepalive:?}"
    );
    let beacons: Vec<_> = left.iter().filter(|b| !b.1).collect();
    assert_eq!(beacons.len(), 1, "a refused beacon ends the flush");
    assert!(sdk.queued() > 0, "the rest waits for the next page");
}

#[test]
fn pagehide_and_visibilitychange_together_stay_within_the_budget_until_their_requests_end() {
    let budget = Sdk::<Fixed, MemoryStore>::LEAVE_BUDGET;
    let mut sdk = queued_for_leaving(16_000, &[1000; 100]);
    let keepalive = |left: &Left| -> usize { left.iter().filter(|b| b.1).map(|b| b.0).sum() };

    let first = leave(&mut sdk, false);
    let second = leave(&mut sdk, false);
    for flight in first.iter().chain(&second).filter(|b| b.1) {
        sdk.settle(flight.3, &Outcome::Delivered);
    }
    let later = leave(&mut sdk, false);

    assert!(
        keepalive(&first) + keepalive(&second) <= budget,
        "{first:?} {second:?}"
    );
    assert!(keepalive(&first) > budget - 2000, "{first:?}");
    assert!(
        keepalive(&later) > budget - 2000,
        "answered requests free the budget: {later:?}"
    );
}

#[test]
fn a_flush_on_visibilitychange_after_pagehide_leaves_the_tab_closed_for_others_to_adopt() {
    let mut sdk = queued_for_leaving(16_000, &[1000; 100]);

    leave(&mut sdk, false);
    sdk.page_hidden();
    leave(&mut sdk, false);
    let mut store = sdk.into_store();
    store.session.clear();
    let mut other_tab = sdk_with(leaving_config(16_000), Fixed::new(), store);

    assert!(
        other_tab.adopt_orphans() > 0,
        "the closed tab's queue is taken over"
    );
}

proptest::proptest! {
    #[test]
    fn a_page_leave_stays_within_the_budget_and_leaves_the_rest_stored(
        flush_bytes in 1024usize..=512_000,
        sizes in proptest::collection::vec(0usize..20_000, 1..40),
        beacons in proptest::prelude::any::<bool>(),
    ) {
        let budget = Sdk::<Fixed, MemoryStore>::LEAVE_BUDGET;
        let mut sdk = queued_for_leaving(flush_bytes, &sizes);

        let left = leave(&mut sdk, beacons);
        sdk.page_hidden();
        let next_config = leaving_config(flush_bytes);
        let mut next_page = sdk_with(next_config, Fixed::new(), sdk.into_store());
        let resent: Vec<String> = drain(&mut next_page)
            .iter()
            .map(|m| m["event"].as_str().unwrap().to_owned())
            .collect();

        let in_flight: usize = left.iter().filter(|b| b.1).map(|b| b.0).sum();
        proptest::prop_assert!(in_flight <= budget, "{in_flight}");
        for (bytes, ..) in &left {
            proptest::prop_assert!(*bytes <= budget, "{bytes}");
        }
        let first_beacon = left.iter().position(|b| !b.1).unwrap_or(left.len());
        proptest::prop_assert!(left[first_beacon..].iter().all(|b| !b.1), "keepalive first");
        if !beacons {
            proptest::prop_assert!(left.len() - first_beacon <= 1, "a refusal ends the flush");
        }
        // A beacon the browser took is done with; keepalive requests, whose answers the page
        // does not live to see, and whatever did not leave go again from the next page.
        let taken: Vec<&String> = left
            .iter()
            .filter(|b| !b.1 && beacons)
            .flat_map(|b| &b.2)
            .collect();
        let mut every: Vec<&String> = taken.iter().copied().chain(&resent).collect();
        every.sort_by_key(|event| event[1..].parse::<usize>().unwrap());
        let expected: Vec<String> = (0..sizes.len()).map(|n| format!("e{n}")).collect();
        proptest::prop_assert_eq!(every, expected.iter().collect::<Vec<_>>());
    }
}
