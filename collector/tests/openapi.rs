//! The OpenAPI description at `/openapi.json`: it parses, its references resolve, it
//! describes every route the collector registers, and the collector serves exactly the
//! described methods on every described path.
//!
//! The routes come from the code in two ways: the source is read for every route
//! registration, and every described path is called with every method.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::Collector;
use serde_json::Value;

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

async fn description(collector: &Collector) -> Value {
    let response = collector
        .http
        .get(collector.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("application/json"),
        "{content_type}"
    );
    response.json().await.unwrap()
}

/// The described operations: path → methods.
fn operations(document: &Value) -> BTreeMap<String, BTreeSet<String>> {
    document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(path, item)| {
            let methods = METHODS
                .iter()
                .filter(|method| item.get(**method).is_some())
                .map(|method| method.to_string())
                .collect();
            (path.clone(), methods)
        })
        .collect()
}

/// Every `$ref` in `value`.
fn references<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(target)) = map.get("$ref") {
                found.push(target);
            }
            map.values().for_each(|v| references(v, found));
        }
        Value::Array(items) => items.iter().for_each(|v| references(v, found)),
        _ => {}
    }
}

#[tokio::test]
async fn the_description_is_openapi_3_and_every_reference_resolves() {
    let collector = Collector::start();

    let document = description(&collector).await;

    assert!(document["openapi"].as_str().unwrap().starts_with("3.1."));
    assert!(document["info"]["title"].is_string());
    assert!(document["info"]["version"].is_string());
    assert!(!operations(&document).is_empty());
    let schemes = &document["components"]["securitySchemes"];
    assert_eq!(schemes["writeKey"]["scheme"], "basic");
    assert_eq!(schemes["adminToken"]["scheme"], "bearer");
    let mut found = Vec::new();
    references(&document, &mut found);
    for target in found {
        let pointer = target.strip_prefix('#').unwrap();
        assert!(
            document.pointer(pointer).is_some(),
            "{target} does not resolve"
        );
    }
    let placeholders = document
        .to_string()
        .matches("replaced by ebb_protocol")
        .count();
    assert_eq!(placeholders, 0, "an ingest body schema was not filled in");
}

#[tokio::test]
async fn every_operation_says_how_it_authenticates_and_what_it_answers() {
    let collector = Collector::start();

    let document = description(&collector).await;

    for (path, methods) in operations(&document) {
        for method in methods {
            let operation = &document["paths"][&path][&method];
            let responses = operation["responses"].as_object().unwrap();
            assert!(!responses.is_empty(), "{method} {path} lists no answer");
            if path.starts_with("/admin/v1/") {
                assert_eq!(operation["security"][0]["adminToken"], Value::Array(vec![]));
                assert!(responses.contains_key("401"), "{method} {path} without 401");
            }
            if path.starts_with("/v1/") && method == "post" {
                assert!(operation["security"][0].get("writeKey").is_some());
                for status in ["200", "400", "401", "403", "413", "429"] {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} without {status}"
                    );
                }
            }
        }
    }
}

/// The route registrations in the collector's source: `(method, path)` of every actix
/// route attribute, including the paths given to `ingest_route!`, which registers a POST
/// and its CORS preflight.
fn registered_in_source() -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    let mut pending = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("src")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap();
            for (index, line) in source.lines().enumerate() {
                let line = line.trim();
                for method in METHODS {
                    if let Some(rest) = line.strip_prefix(&format!("#[{method}(\"")) {
                        let route = rest.split('"').next().unwrap();
                        routes.insert((method.to_owned(), route.to_owned()));
                    }
                }
                if line.starts_with("ingest_route!(") {
                    let invocation: String = source.lines().skip(index).take(5).collect();
                    let route = invocation
                        .split('"')
                        .skip(1)
                        .step_by(2)
                        .find(|literal| literal.starts_with('/'))
                        .unwrap();
                    routes.insert(("post".to_owned(), route.to_owned()));
                    routes.insert(("options".to_owned(), route.to_owned()));
                }
                // Plain actix registrations would serve a route the description misses.
                for bypass in [
                    ".route(\"",
                    "web::resource(\"",
                    "web::scope(\"",
                    "Resource::new(",
                ] {
                    assert!(
                        !line.contains(bypass),
                        "{}:{}: a route registered outside the description: {line}",
                        path.display(),
                        index + 1
                    );
                }
            }
        }
    }
    routes
}

#[tokio::test]
async fn every_route_in_the_source_is_described() {
    let collector = Collector::start();
    let registered = registered_in_source();

    let document = description(&collector).await;

    let described: BTreeSet<(String, String)> = operations(&document)
        .into_iter()
        .flat_map(|(path, methods)| methods.into_iter().map(move |m| (m, path.clone())))
        .collect();
    assert!(
        registered.len() > 40,
        "only {} routes found",
        registered.len()
    );
    let missing: Vec<_> = registered.difference(&described).collect();
    assert!(
        missing.is_empty(),
        "registered but not described: {missing:?}"
    );
    let extra: Vec<_> = described.difference(&registered).collect();
    assert!(extra.is_empty(), "described but not registered: {extra:?}");
}

#[tokio::test]
async fn every_described_path_serves_exactly_its_described_methods() {
    let collector = Collector::start_with(&[("EBB_DEMO_USER_HASH", "true")]);
    let document = description(&collector).await;

    for (path, methods) in operations(&document) {
        let concrete = path
            .replace("{environment}", "default")
            .replace("{id}", "x");
        for method in METHODS {
            let request = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();

            let response = collector
                .http
                .request(request, collector.url(&concrete))
                .send()
                .await
                .unwrap();

            let status = response.status().as_u16();
            let allow = response
                .headers()
                .get("allow")
                .map(|value| value.to_str().unwrap().to_owned());
            let body = response.text().await.unwrap();
            if methods.contains(method) {
                let fallback = status == 405
                    || (status == 404 && body.contains("nothing is served at this path"));
                assert!(!fallback, "{method} {path}: {status} {body}");
            } else {
                assert_eq!(status, 405, "{method} {path} is served but not described");
                let listed: BTreeSet<String> =
                    allow.unwrap().split(", ").map(str::to_lowercase).collect();
                assert_eq!(&listed, &methods, "{path}: Allow");
            }
        }
    }
}
