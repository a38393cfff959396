//! Segments over HTTP: preview, paging, and deleting a segment as a background job with
//! progress, cancellation, an audit entry and nothing left behind.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{assert_forgotten, Collector};
use serde_json::{json, Value};

/// `count` users with the given plan, ids `{prefix}-{n}` and e-mails at `{prefix}.example`.
async fn users(collector: &Collector, prefix: &str, plan: &str, count: usize) {
    let messages: Vec<Value> = (0..count)
        .map(|n| {
            json!({"type": "identify", "userId": format!("{prefix}-{n}"),
                   "traits": {"plan": plan, "email": format!("u{n}@{prefix}.example")}})
        })
        .collect();
    for chunk in messages.chunks(250) {
        let (status, reply) = collector.post("/v1/batch", &json!({"batch": chunk})).await;
        assert_eq!(status, 200, "{reply}");
    }
}

async fn wait_for_job(collector: &Collector, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, job) = collector
            .admin(
                "GET",
                &format!("/admin/v1/environments/default/jobs/{id}"),
                None,
            )
            .await;
        let finished = ["done", "cancelled", "failed"].contains(&job["status"].as_str().unwrap());
        if finished || Instant::now() > deadline {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_preview_counts_the_segment_and_pages_list_it() {
    let collector = Collector::start();
    users(&collector, "pro", "pro", 3).await;
    users(&collector, "free", "free", 2).await;
    let pro = json!({"filter": {"trait": "plan", "equals": "pro"}});

    let (status, preview) = collector
        .admin(
            "POST",
            "/admin/v1/environments/default/segments/preview",
            Some(pro),
        )
        .await;
    let (_, page) = collector
        .admin(
            "POST",
            "/admin/v1/environments/default/segments/users",
            Some(json!({"filter": {"trait": "plan", "notEquals": "pro"}, "limit": 1, "offset": 1})),
        )
        .await;
    let (everyone, all) = collector
        .admin(
            "POST",
            "/admin/v1/environments/default/segments/preview",
            Some(json!({})),
        )
        .await;
    let (invalid, refusal) = collector
        .admin(
            "POST",
            "/admin/v1/environments/default/segments/preview",
            Some(json!({"filter": {"trait": "plan", "gte": "high"}})),
        )
        .await;

    assert_eq!(status, 200, "{preview}");
    assert_eq!(preview["count"], 3);
    let ids: Vec<&str> = preview["sample"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["userId"].as_str().unwrap())
        .collect();
    assert!(ids.iter().all(|id| id.starts_with("pro-")), "{ids:?}");
    assert_eq!(page["count"], 2);
    assert_eq!(page["users"].as_array().unwrap().len(), 1);
    assert_eq!((everyone, all["count"].clone()), (200, json!(5)));
    assert_eq!(invalid, 400);
    assert!(
        refusal["message"].as_str().unwrap().contains("gte"),
        "{refusal}"
    );
}

#[tokio::test]
async fn deleting_a_segment_runs_as_a_job_and_leaves_nothing_behind() {
    let collector = Collector::start();
    users(&collector, "doomed", "free", 450).await;
    users(&collector, "kept", "pro", 5).await;

    let (status, job) = collector
        .admin(
            "POST",
            "/admin/v1/environments/default/segments/delete",
            Some(json!({"filter": {"trait": "email", "contains": "@doomed.example"}})),
        )
        .await;
    let finished = wait_for_job(&collector, job["id"].as_str().unwrap()).await;
    let (_, remaining) = collector
        .admin(
            "POST",
            "/admin/v1/environments/default/segments/preview",
            Some(json!({})),
        )
        .await;
    let (_, entries) = collector.admin("GET", "/admin/v1/audit", None).await;

    assert_eq!(status, 202, "{job}");
    assert_eq!(job["total"], 450);
    assert_eq!(finished["status"], "done", "{finished}");
    assert_eq!(finished["done"], 450);
    assert_eq!(finished["counts"]["users"], 450);
    assert_eq!(remaining["count"], 5);
    assert_eq!(entries[0]["action"], "delete_segment");
    assert_eq!(entries[0]["counts"]["users"], 450);
    assert_forgotten(&collector.database_url, &["doomed"]).await;
}

#[tokio::test]
async fn a_cancelled_segment_deletion_stops_between_chunks() {
    let collector = Collector::start();
    users(&collector, "many", "free", 2000).await;

    let (_, job) = collector
        .admin(
            "POST",
            "/admin/v1/environments/default/segments/delete",
            Some(json!({"filter": {"trait": "plan", "equals": "free"}})),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    let (cancelled, _) = collector
        .admin(
            "POST",
            &format!("/admin/v1/environments/default/jobs/{id}/cancel"),
            None,
        )
        .await;
    let finished = wait_for_job(&collector, id).await;
    let (_, remaining) = collector
        .admin(
            "POST",
            "/admin/v1/environments/default/segments/preview",
            Some(json!({})),
        )
        .await;

    assert_eq!(cancelled, 200);
    assert_eq!(finished["status"], "cancelled", "{finished}");
    let done = finished["done"].as_u64().unwrap();
    assert!(done < 2000, "{finished}");
    assert_eq!(remaining["count"].as_u64().unwrap(), 2000 - done);
}

/// Waits until the job has deleted at least one chunk; returns it as it then is.
async fn wait_for_progress(collector: &Collector, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, job) = collector
            .admin(
                "GET",
                &format!("/admin/v1/environments/default/jobs/{id}"),
                None,
            )
            .await;
        if job["done"].as_u64().unwrap() > 0 || Instant::now() > deadline {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_cancelled_segment_deletion_writes_one_audit_entry_with_what_it_deleted() {
    let collector = Collector::start();
    users(&collector, "many", "free", 4000).await;
    let (_, job) = collector
        .admin(
            "POST",
            "/admin/v1/environments/default/segments/delete",
            Some(json!({"filter": {"trait": "plan", "equals": "free"}})),
        )
        .await;
    let id = job["id"].as_str().unwrap();
    // Cancelled once a chunk has gone, so that the entry has deletions to count.
    let started = wait_for_progress(&collector, id).await;

    let (cancelled, _) = collector
        .admin(
            "POST",
            &format!("/admin/v1/environments/default/jobs/{id}/cancel"),
            None,
        )
        .await;
    let finished = wait_for_job(&collector, id).await;
    let (_, entries) = collector.admin("GET", "/admin/v1/audit", None).await;
    let (_, remaining) = collector
        .admin(
            "POST",
            "/admin/v1/environments/default/segments/preview",
            Some(json!({})),
        )
        .await;

    assert_eq!(started["status"], "running", "{started}");
    assert_eq!(cancelled, 200);
    assert_eq!(finished["status"], "cancelled", "{finished}");
    let done = finished["done"].as_u64().unwrap();
    assert!(0 < done && done < 4000, "{finished}");
    let audited: Vec<&Value> = entries
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["action"] == "delete_segment")
        .collect();
    assert_eq!(audited.len(), 1, "{entries}");
    assert_eq!(audited[0]["request"]["jobId"], id);
    assert_eq!(audited[0]["request"]["status"], "cancelled");
    assert_eq!(audited[0]["counts"], finished["counts"]);
    assert_eq!(audited[0]["counts"]["users"], done);
    assert_eq!(audited[0]["counts"]["identities"], done);
    assert_eq!(remaining["count"].as_u64().unwrap(), 4000 - done);
}

#[tokio::test]
async fn a_user_deleted_with_a_segment_is_not_recreated_by_a_late_batch() {
    let collector = Collector::start();
    let sent = json!({"batch": [
        {"type": "identify", "userId": "dora-4b1e", "anonymousId": "dora-4b1e-visitor",
         "traits": {"plan": "free"}, "messageId": "dora-4b1e-m1"},
        {"type": "page", "userId": "dora-4b1e", "name": "Pricing", "messageId": "dora-4b1e-m2"}
    ]});
    collector.post("/v1/batch", &sent).await;
    users(&collector, "kept", "pro", 2).await;
    let (_, job) = collector
        .admin(
            "POST",
            "/admin/v1/environments/default/segments/delete",
            Some(json!({"filter": {"trait": "plan", "equals": "free"}})),
        )
        .await;
    let finished = wait_for_job(&collector, job["id"].as_str().unwrap()).await;

    let late = json!({"batch": [
        {"type": "page", "userId": "dora-4b1e", "name": "Pricing", "messageId": "dora-4b1e-m2"},
        {"type": "track", "userId": "dora-4b1e", "event": "New", "messageId": "fresh-1"},
        {"type": "track", "anonymousId": "dora-4b1e-visitor", "event": "Anon", "messageId": "fresh-2"},
        {"type": "track", "userId": "carol", "event": "Unrelated", "messageId": "fresh-3"}
    ]});
    let (status, _) = collector.post("/v1/batch", &late).await;
    let metrics = collector
        .http
        .get(collector.url("/metrics"))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();

    assert_eq!(finished["status"], "done", "{finished}");
    assert_eq!(finished["done"], 1);
    assert_eq!(status, 200);
    assert_eq!(collector.user("dora-4b1e").await.0, 404);
    assert_eq!(collector.user("dora-4b1e-visitor").await.0, 404);
    assert_eq!(collector.user("carol").await.0, 200);
    assert_eq!(collector.user("kept-0").await.0, 200);
    assert!(
        metrics.contains("ebb_messages_suppressed_total 3"),
        "{metrics}"
    );
    assert_forgotten(&collector.database_url, &["dora-4b1e"]).await;
}

#[tokio::test]
async fn a_segment_deletion_needs_a_filter() {
    let collector = Collector::start();

    let (status, reply) = collector
        .admin(
            "POST",
            "/admin/v1/environments/default/segments/delete",
            Some(json!({})),
        )
        .await;

    assert_eq!(status, 400);
    assert!(
        reply["message"].as_str().unwrap().contains("purge"),
        "{reply}"
    );
}
