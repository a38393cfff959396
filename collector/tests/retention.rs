//! Retention: the rule, its preview, sweeps on request and on schedule, and several
//! collectors sharing one PostgreSQL database without sweeping twice.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::Utc;
use common::{assert_forgotten, Collector, TestDb, ADMIN_TOKEN, WRITE_KEY};
use serde_json::{json, Value};

/// A user last seen `days` ago, who answered a survey or not.
async fn user_seen(collector: &Collector, user: &str, days: i64, responded: bool) {
    let when = (Utc::now() - chrono::Duration::days(days)).to_rfc3339();
    let mut batch = vec![
        json!({"type": "identify", "userId": user, "timestamp": when,
                                "traits": {"email": format!("{user}@retention.example")}}),
    ];
    if responded {
        batch.push(
            json!({"type": "response", "userId": user, "surveyId": "nps",
                          "answers": {"score": 8}, "timestamp": when}),
        );
    }
    let (status, reply) = collector.post("/v1/batch", &json!({"batch": batch})).await;
    assert_eq!(status, 200, "{reply}");
}

#[tokio::test]
async fn the_preview_counts_who_the_rule_would_delete_and_spreads_users_by_inactivity() {
    let collector = Collector::start();
    user_seen(&collector, "old-4d1", 400, true).await;
    user_seen(&collector, "silent-4d2", 100, false).await;
    user_seen(&collector, "answered-4d3", 100, true).await;
    user_seen(&collector, "active-4d4", 0, false).await;

    let (_, before) = collector
        .admin("GET", "/admin/v1/environments/default/retention", None)
        .await;
    let (status, after) = collector
        .admin(
            "PUT",
            "/admin/v1/environments/default/retention",
            Some(json!({"days": 365, "daysWithoutResponse": 90})),
        )
        .await;
    let (invalid, _) = collector
        .admin(
            "PUT",
            "/admin/v1/environments/default/retention",
            Some(json!({"days": 0})),
        )
        .await;

    assert_eq!(
        before["rule"],
        json!({"days": null, "daysWithoutResponse": null})
    );
    assert_eq!(before["preview"]["wouldDelete"], 0);
    assert_eq!(status, 200, "{after}");
    assert_eq!(after["preview"]["wouldDelete"], 2);
    assert_eq!(after["preview"]["users"], 4);
    let buckets: Vec<(u64, u64)> = after["preview"]["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|bucket| bucket["users"].as_u64().unwrap() > 0)
        .map(|bucket| {
            (
                bucket["fromDays"].as_u64().unwrap(),
                bucket["users"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(buckets, [(0, 1), (90, 2), (365, 1)]);
    assert_eq!(invalid, 400);
}

#[tokio::test]
async fn a_sweep_deletes_the_inactive_users_completely_and_is_audited() {
    let collector = Collector::start();
    user_seen(&collector, "old-4d1", 400, true).await;
    user_seen(&collector, "silent-4d2", 100, false).await;
    user_seen(&collector, "answered-4d3", 100, true).await;
    user_seen(&collector, "active-4d4", 0, false).await;
    collector
        .admin(
            "PUT",
            "/admin/v1/environments/default/retention",
            Some(json!({"days": 365, "daysWithoutResponse": 90})),
        )
        .await;

    let (status, run) = collector
        .admin(
            "POST",
            "/admin/v1/environments/default/retention/sweep",
            None,
        )
        .await;
    let (_, entries) = collector.admin("GET", "/admin/v1/audit", None).await;
    user_seen(&collector, "silent-4d2", 0, false).await;

    assert_eq!(status, 200, "{run}");
    assert_eq!(run["users"], 2);
    assert_eq!(run["removed"]["users"], 2);
    for (user, expected) in [
        ("old-4d1", 404),
        ("silent-4d2", 404),
        ("answered-4d3", 200),
        ("active-4d4", 200),
    ] {
        assert_eq!(collector.user(user).await.0, expected, "{user}");
    }
    assert_eq!(entries[0]["action"], "retention_sweep");
    assert_eq!(entries[0]["counts"]["users"], 2);
    assert_eq!(entries[0]["actor"], "system:retention");
    assert_forgotten(&collector.database_url, &["old-4d1", "silent-4d2"]).await;
}

/// Makes deleting a user fail once 30 or fewer remain in the database, by a trigger:
/// rows deleted earlier in the same statement are gone for it, so a sweep's first chunk
/// (20 users of 50) commits and its second fails at once.
async fn fail_deletions_below_31_users(database_url: &str) {
    if database_url.starts_with("postgres") {
        common::execute(
            database_url,
            "CREATE FUNCTION refuse_deletion() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN IF (SELECT COUNT(*) FROM users) <= 30 THEN \
               RAISE EXCEPTION 'deletion refused by the test'; END IF; RETURN OLD; END $$",
        )
        .await;
        common::execute(
            database_url,
            "CREATE TRIGGER refuse_deletion BEFORE DELETE ON users \
             FOR EACH ROW EXECUTE FUNCTION refuse_deletion()",
        )
        .await;
    } else {
        common::execute(
            database_url,
            "CREATE TRIGGER refuse_deletion BEFORE DELETE ON users \
             WHEN (SELECT COUNT(*) FROM users) <= 30 \
             BEGIN SELECT RAISE(ABORT, 'deletion refused by the test'); END",
        )
        .await;
    }
}

#[tokio::test]
async fn a_sweep_that_fails_part_way_audits_the_chunks_it_committed() {
    let collector = Collector::start();
    old_users(&collector, "doomed", 50).await;
    collector
        .admin(
            "PUT",
            "/admin/v1/environments/default/retention",
            Some(json!({"days": 365})),
        )
        .await;
    fail_deletions_below_31_users(&collector.database_url).await;
    let sweep = || {
        collector.admin(
            "POST",
            "/admin/v1/environments/default/retention/sweep",
            None,
        )
    };

    let (failed, _) = sweep().await;
    let (_, entries) = collector.admin("GET", "/admin/v1/audit", None).await;
    let (_, left) = collector
        .admin("GET", "/admin/v1/environments/default/retention", None)
        .await;
    let drop_trigger = if collector.database_url.starts_with("postgres") {
        "DROP TRIGGER refuse_deletion ON users"
    } else {
        "DROP TRIGGER refuse_deletion"
    };
    common::execute(&collector.database_url, drop_trigger).await;
    let (finished, run) = sweep().await;
    let (_, after) = collector.admin("GET", "/admin/v1/audit", None).await;

    assert_eq!(failed, 500);
    let audited = &entries[0];
    assert_eq!(audited["action"], "retention_sweep");
    assert_eq!(audited["request"]["status"], "failed");
    assert_eq!(audited["request"]["error"], "internal_error");
    assert_eq!(
        audited["counts"]["users"], 20,
        "the first chunk committed: {audited}"
    );
    assert_eq!(audited["counts"]["identities"], 20);
    assert!(
        !audited.to_string().contains("refused"),
        "only the error's code is recorded: {audited}"
    );
    assert_eq!(left["preview"]["wouldDelete"], 30);
    assert_eq!(
        (finished, run["users"].clone()),
        (200, json!(30)),
        "the rest go next time"
    );
    assert_eq!(after[0]["request"]["status"], "done");
    assert_eq!(after[0]["counts"]["users"], 30);
}

/// Posts `count` users last seen 400 days ago, named `prefix-n`.
async fn old_users(collector: &Collector, prefix: &str, count: usize) {
    let when = (Utc::now() - chrono::Duration::days(400)).to_rfc3339();
    let batch: Vec<Value> = (0..count)
        .map(|n| json!({"type": "identify", "userId": format!("{prefix}-{n}"), "timestamp": when}))
        .collect();
    for chunk in batch.chunks(200) {
        let (status, reply) = collector.post("/v1/batch", &json!({"batch": chunk})).await;
        assert_eq!(status, 200, "{reply}");
    }
}

#[tokio::test]
async fn a_sweep_pauses_for_ingest_that_arrives_while_it_runs_and_not_otherwise() {
    let collector = Collector::start();
    collector
        .admin(
            "PUT",
            "/admin/v1/environments/default/retention",
            Some(json!({"days": 365})),
        )
        .await;
    let sweep = || {
        collector.admin(
            "POST",
            "/admin/v1/environments/default/retention/sweep",
            None,
        )
    };

    old_users(&collector, "alone", 600).await;
    let (_, alone) = sweep().await;

    old_users(&collector, "busy", 600).await;
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sender = {
        let (http, url, running) = (
            collector.http.clone(),
            collector.url("/v1/batch"),
            running.clone(),
        );
        tokio::spawn(async move {
            let mut accepted = 0;
            while running.load(std::sync::atomic::Ordering::SeqCst) {
                let body = json!({"batch": [{"type": "track", "userId": format!("live-{accepted}"), "event": "Live"}]});
                let response = http
                    .post(&url)
                    .basic_auth(WRITE_KEY, Some(""))
                    .json(&body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
                accepted += 1;
            }
            accepted
        })
    };
    // Ingest is under way before the sweep starts.
    while collector.user("live-3").await.0 != 200 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (_, busy) = sweep().await;
    running.store(false, std::sync::atomic::Ordering::SeqCst);
    let accepted = sender.await.unwrap();

    assert_eq!(alone["users"], 600, "{alone}");
    assert_eq!(alone["pauses"], 0, "nothing to yield to: {alone}");
    assert_eq!(busy["users"], 600, "{busy}");
    assert!(
        busy["pauses"].as_u64().unwrap() > 0,
        "the sweep yielded to ingest: {busy}"
    );
    assert!(accepted > 4);
}

#[tokio::test]
async fn the_sweeper_applies_the_rule_on_its_own_schedule() {
    let collector = Collector::start_with(&[("EBB_RETENTION_INTERVAL", "1")]);
    user_seen(&collector, "old-4d1", 40, false).await;
    user_seen(&collector, "active-4d4", 0, false).await;

    collector
        .admin(
            "PUT",
            "/admin/v1/environments/default/retention",
            Some(json!({"days": 30})),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while collector.user("old-4d1").await.0 != 404 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    assert_eq!(
        collector.user("old-4d1").await.0,
        404,
        "the sweeper did not run"
    );
    assert_eq!(collector.user("active-4d4").await.0, 200);
}

#[tokio::test]
#[ignore = "PostgreSQL only: scripts/test.sh runs it in its PostgreSQL pass"]
async fn two_collectors_on_one_postgres_sweep_each_slot_once() {
    let db = TestDb::postgres();
    let (first_dir, second_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let env = [
        ("EBB_WRITE_KEY", WRITE_KEY),
        ("EBB_ADMIN_TOKEN", ADMIN_TOKEN),
        ("EBB_RETENTION_INTERVAL", "1"),
    ];
    let first = Collector::start_in(first_dir.path(), &db, &env);
    let second = Collector::start_in(second_dir.path(), &db, &env);
    first
        .admin(
            "PUT",
            "/admin/v1/environments/default/retention",
            Some(json!({"days": 30})),
        )
        .await;

    let started = Instant::now();
    let mut created = 0;
    while started.elapsed() < Duration::from_secs(5) {
        let target = if created % 2 == 0 { &first } else { &second };
        user_seen(target, &format!("stale-{created}"), 60, false).await;
        created += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, entries) = first.admin("GET", "/admin/v1/audit?limit=500", None).await;
    let (_, leftover) = second
        .admin("GET", "/admin/v1/environments/default/retention", None)
        .await;

    let sweeps: Vec<&Value> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["action"] == "retention_sweep")
        .collect();
    let slots: HashSet<String> = sweeps
        .iter()
        .map(|entry| entry["request"]["slot"].to_string())
        .collect();
    assert!(sweeps.len() >= 3, "only {} sweeps ran", sweeps.len());
    assert_eq!(
        slots.len(),
        sweeps.len(),
        "a slot was swept twice: {sweeps:#?}"
    );
    let deleted: u64 = sweeps
        .iter()
        .map(|entry| entry["counts"]["users"].as_u64().unwrap())
        .sum();
    assert_eq!(
        deleted, created,
        "every stale user was deleted exactly once"
    );
    assert_eq!(leftover["preview"]["wouldDelete"], 0);
}
