//! Sending one batch body to the collector: `fetch`, with `keepalive` when the page is going
//! away, and `sendBeacon` past the browser's budget for such requests.
//!
//! The body goes as a string, for which both set `Content-Type: text/plain;charset=UTF-8`.
//! That type is CORS-safelisted, so a collector on another origin gets a simple request with
//! no preflight; the collector reads JSON whatever the declared type.

use js_sys::{Date, Function, Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{RequestInit, Response};

use super::browser::global;
use crate::delivery::retry_after_seconds;
use crate::{Error, Outcome};

/// What the browser lets requests that outlive the page carry in total.
pub(super) const KEEPALIVE_BUDGET: usize = 64 * 1024;

#[wasm_bindgen]
extern "C" {
    /// The global `fetch`, present in windows and workers alike (`window.fetch` is not).
    #[wasm_bindgen(js_name = fetch, catch)]
    fn fetch_with_init(url: &str, init: &RequestInit) -> Result<Promise, JsValue>;
}

/// POSTs `body` to `url` and sorts the answer; the error says what went wrong, for the
/// promise of `flush()` and the debug log.
pub(super) async fn send(url: &str, body: &str, keepalive: bool) -> (Outcome, Option<Error>) {
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_body(&JsValue::from_str(body));
    if keepalive {
        // web-sys has no setter for it; the property is read by `fetch` all the same.
        let _ = Reflect::set(&init, &JsValue::from_str("keepalive"), &JsValue::TRUE);
    }

    let answer = match fetch_with_init(url, &init) {
        Ok(pending) => JsFuture::from(pending).await,
        Err(error) => Err(error),
    };
    let response: Response = match answer {
        Ok(response) => response.unchecked_into(),
        Err(error) => {
            let outcome = Outcome::Retry {
                status: 0,
                retry_after_ms: None,
            };
            return (outcome, Some(unreachable(&error)));
        }
    };

    classify(&response).await
}

/// Sorts an answer: delivered, refused for good, or to be retried (and when).
pub(super) async fn classify(response: &Response) -> (Outcome, Option<Error>) {
    let status = response.status();
    let retry_after = response
        .headers()
        .get("Retry-After")
        .ok()
        .flatten()
        .and_then(|value| retry_after_ms(&value));
    let outcome = Outcome::of_status(status, retry_after);
    if outcome == Outcome::Delivered {
        return (outcome, None);
    }

    let reason = match reason(response).await {
        Some(reason) => reason,
        None if response.status_text().is_empty() => "no reason given".to_owned(),
        None => response.status_text(),
    };
    (outcome, Some(Error::Rejected { status, reason }))
}

/// Queues `body` with `navigator.sendBeacon`; returns whether the browser took it.
pub(super) fn beacon(url: &str, body: &str) -> bool {
    let Some(navigator) = global("navigator").filter(JsValue::is_object) else {
        return false;
    };
    let Ok(send) = Reflect::get(&navigator, &JsValue::from_str("sendBeacon")) else {
        return false;
    };
    send.dyn_ref::<Function>()
        .and_then(|send| {
            send.call2(
                &navigator,
                &JsValue::from_str(url),
                &JsValue::from_str(body),
            )
            .ok()
        })
        .is_some_and(|taken| taken.is_truthy())
}

/// `Retry-After` in milliseconds: seconds, or an HTTP date read by the engine.
fn retry_after_ms(value: &str) -> Option<u32> {
    retry_after_seconds(value).or_else(|| {
        let wait = Date::parse(value) - Date::now();
        (wait.is_finite())
            .then(|| wait.clamp(0.0, f64::from(crate::delivery::MAX_RETRY_AFTER_MS)) as u32)
    })
}

/// The collector's explanation, the `message` of its error body (`ErrorBody` in
/// `ebb-protocol`), when it sent one.
///
/// Read with the engine's `JSON.parse`: the module carries no JSON parser of its own.
async fn reason(response: &Response) -> Option<String> {
    let body = JsFuture::from(response.json().ok()?).await.ok()?;

    Reflect::get(&body, &JsValue::from_str("message"))
        .ok()?
        .as_string()
}

fn unreachable(error: &JsValue) -> Error {
    let detail = error.dyn_ref::<js_sys::Error>().map_or_else(
        || "the request failed".to_owned(),
        |e| String::from(e.message()),
    );

    Error::Unreachable(detail)
}

#[cfg(test)]
mod tests {
    use js_sys::Object;
    use wasm_bindgen_test::wasm_bindgen_test;
    use web_sys::{Response, ResponseInit};

    use super::*;

    wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

    fn answer(status: u16, body: &str, retry_after: Option<&str>) -> Response {
        let init = ResponseInit::new();
        init.set_status(status);
        let headers = Object::new();
        if let Some(value) = retry_after {
            Reflect::set(&headers, &"Retry-After".into(), &value.into()).unwrap();
        }
        init.set_headers(&headers);
        Response::new_with_opt_str_and_init(Some(body), &init).unwrap()
    }

    #[wasm_bindgen_test]
    async fn a_429_is_retried_after_the_delay_it_asks_for() {
        let (outcome, error) = classify(&answer(429, "{}", Some("7"))).await;

        assert_eq!(
            outcome,
            Outcome::Retry {
                status: 429,
                retry_after_ms: Some(7000)
            }
        );
        assert!(matches!(error, Some(Error::Rejected { status: 429, .. })));
    }

    #[wasm_bindgen_test]
    async fn an_http_date_in_retry_after_is_read_by_the_engine() {
        let in_a_minute = Date::new(&JsValue::from_f64(Date::now() + 60_000.0));
        let date = String::from(in_a_minute.to_utc_string());

        let (outcome, _) = classify(&answer(503, "", Some(&date))).await;

        let Outcome::Retry {
            retry_after_ms: Some(wait),
            ..
        } = outcome
        else {
            panic!("expected a retry with a delay, got {outcome:?}");
        };
        assert!((55_000..=60_000).contains(&wait), "{wait}");
    }

    #[wasm_bindgen_test]
    async fn a_400_is_refused_with_the_collectors_message() {
        let body = r#"{"error":"invalid_json","message":"the body is not valid JSON"}"#;

        let (outcome, error) = classify(&answer(400, body, None)).await;

        assert_eq!(outcome, Outcome::Refused { status: 400 });
        assert_eq!(
            error.unwrap().describe(),
            "the collector answered 400: the body is not valid JSON"
        );
    }

    #[wasm_bindgen_test]
    async fn fetch_reaches_a_server_and_reports_its_refusal() {
        // The test runner's own server answers a POST to an unknown path with 404 or 405:
        // a real request through the real `fetch`, refused for good.
        let (outcome, error) = send("/ebb-no-such-endpoint", "{\"batch\":[]}", true).await;

        assert!(
            matches!(outcome, Outcome::Refused { status: 404 | 405 }),
            "{outcome:?}"
        );
        assert!(error.is_some());
    }

    #[wasm_bindgen_test]
    async fn no_answer_at_all_is_retried() {
        let (outcome, error) = send("http://127.0.0.1:9/v1/batch", "{}", false).await;

        assert_eq!(
            outcome,
            Outcome::Retry {
                status: 0,
                retry_after_ms: None
            }
        );
        assert!(matches!(error, Some(Error::Unreachable(_))));
    }

    #[wasm_bindgen_test]
    async fn a_delivered_answer_needs_no_body() {
        assert_eq!(
            classify(&answer(200, "", None)).await,
            (Outcome::Delivered, None)
        );
    }
}
