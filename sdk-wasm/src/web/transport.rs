//! Sending one batch body to the collector: `fetch`, with `keepalive` when the page is going
//! away, and `sendBeacon` past the browser's budget for such requests.
//!
//! The body goes as a string, for which both set `Content-Type: text/plain;charset=UTF-8`.
//! That type is CORS-safelisted, so a collector on another origin gets a simple request with
//! no preflight; the collector reads JSON whatever the declared type.

use crate::prelude::*;
use js_sys::{Date, Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;
use web_sys::Response;

use super::browser::global;
use crate::delivery::retry_after_seconds;
use crate::{Error, Outcome};

#[wasm_bindgen]
extern "C" {
    /// The global `fetch`, present in windows and workers alike (`window.fetch` is not).
    #[wasm_bindgen(js_name = fetch, catch)]
    fn fetch_with_init(url: &str, init: &Object) -> Result<Promise, JsValue>;

    /// A promise, seen through the one method used on it.
    type Thenable;

    /// `promise.then(handler, handler)`: one handler for either outcome, so that a single
    /// `FnOnce` closure serves both and the chain resolves to what it returns.
    #[wasm_bindgen(method, js_name = then)]
    fn settled_by(this: &Thenable, on_value: &JsValue, on_error: &JsValue) -> Promise;
}

/// Calls `done` with the outcome of `promise`: its value or its rejection reason.
///
/// Promise callbacks instead of Rust futures: an async runtime cost more of the module
/// than everything that awaits in it. `done` always runs from the microtask queue, never
/// before this returns, so a caller may hold the SDK's state while it starts a request.
pub(super) fn then(promise: &Promise, done: impl FnOnce(JsValue) -> JsValue + 'static) -> Promise {
    let done = Closure::once_into_js(done);
    promise.unchecked_ref::<Thenable>().settled_by(&done, &done)
}

/// POSTs `body` to `url`, sorts the answer and hands it to `done`; the error says what went
/// wrong, for the promise of `flush()` and the debug log. The promise returned resolves to
/// what `done` returns, and never rejects.
pub(super) fn send(
    url: &str,
    body: &str,
    keepalive: bool,
    done: impl FnOnce(Outcome, Option<Error>) -> JsValue + 'static,
) -> Promise {
    // A plain object: web-sys's `RequestInit` has no `keepalive` setter, and its own setters
    // are more glue than three properties need.
    let init = Object::new();
    let _ = Reflect::set(&init, &"method".into(), &"POST".into());
    let _ = Reflect::set(&init, &"body".into(), &body.into());
    if keepalive {
        let _ = Reflect::set(&init, &"keepalive".into(), &JsValue::TRUE);
    }

    // A `fetch` that throws at once is met like one that rejects: through the promise, so
    // `done` still runs later, never inside this call.
    let pending = fetch_with_init(url, &init).unwrap_or_else(|error| Promise::reject(&error));
    then(&pending, move |answer| {
        match answer.dyn_into::<Response>() {
            Ok(response) => classify(&response, done),
            Err(error) => {
                let outcome = Outcome::Retry {
                    status: 0,
                    retry_after_ms: None,
                };
                done(outcome, Some(unreachable(&error)))
            }
        }
    })
}

/// Sorts an answer: delivered, refused for good, or to be retried (and when), and hands it
/// to `done`; returns what `done` returns, or a promise of it when the body must be read.
pub(super) fn classify(
    response: &Response,
    done: impl FnOnce(Outcome, Option<Error>) -> JsValue + 'static,
) -> JsValue {
    let status = response.status();
    let retry_after = response
        .headers()
        .get("Retry-After")
        .ok()
        .flatten()
        .and_then(|value| retry_after_ms(&value));
    let outcome = Outcome::of_status(status, retry_after);
    if outcome == Outcome::Delivered {
        return done(outcome, None);
    }

    let status_text = response.status_text();
    // The collector's explanation is the `message` of its error body (`ErrorBody` in
    // `ebb-protocol`), read with the engine's `JSON.parse`: the module carries no JSON
    // parser of its own.
    let finish = move |body: JsValue| {
        let reason = match Reflect::get(&body, &"message".into())
            .ok()
            .and_then(|message| message.as_string())
        {
            Some(reason) => reason,
            None if status_text.is_empty() => "no reason given".to_owned(),
            None => status_text,
        };
        done(outcome, Some(Error::Rejected { status, reason }))
    };
    match response.json() {
        Ok(body) => then(&body, finish).into(),
        Err(_) => finish(JsValue::UNDEFINED),
    }
}

/// Queues `body` with `navigator.sendBeacon`; returns whether the browser took it.
pub(super) fn beacon(url: &str, body: &str) -> bool {
    let Some(navigator) = global("navigator").filter(JsValue::is_object) else {
        return false;
    };
    let Ok(send) = Reflect::get(&navigator, &"sendBeacon".into()) else {
        return false;
    };
    send.dyn_ref::<Function>()
        .and_then(|send| send.call2(&navigator, &url.into(), &body.into()).ok())
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

fn unreachable(error: &JsValue) -> Error {
    let detail = error.dyn_ref::<js_sys::Error>().map_or_else(
        || "the request failed".to_owned(),
        |e| String::from(e.message()),
    );

    Error::Unreachable(detail)
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use js_sys::Object;
    use wasm_bindgen_futures::JsFuture;
    use wasm_bindgen_test::wasm_bindgen_test;
    use web_sys::{Response, ResponseInit};

    use super::*;

    type Sorted = (Outcome, Option<Error>);

    /// Waits for what `start` hands to its `done` callback.
    async fn outcome(
        start: impl FnOnce(Box<dyn FnOnce(Outcome, Option<Error>) -> JsValue>) -> JsValue,
    ) -> Sorted {
        let slot: Rc<RefCell<Option<Sorted>>> = Rc::default();
        let sink = Rc::clone(&slot);
        let done = start(Box::new(move |outcome, error| {
            *sink.borrow_mut() = Some((outcome, error));
            JsValue::UNDEFINED
        }));
        JsFuture::from(Promise::resolve(&done)).await.unwrap();
        slot.take().unwrap()
    }

    async fn classified(response: Response) -> Sorted {
        outcome(|done| classify(&response, done)).await
    }

    async fn sent(url: &str, body: &str, keepalive: bool) -> Sorted {
        outcome(|done| send(url, body, keepalive, done).into()).await
    }

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
        let (outcome, error) = classified(answer(429, "{}", Some("7"))).await;

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

        let (outcome, _) = classified(answer(503, "", Some(&date))).await;

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

        let (outcome, error) = classified(answer(400, body, None)).await;

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
        let (outcome, error) = sent("/ebb-no-such-endpoint", "{\"batch\":[]}", true).await;

        assert!(
            matches!(outcome, Outcome::Refused { status: 404 | 405 }),
            "{outcome:?}"
        );
        assert!(error.is_some());
    }

    #[wasm_bindgen_test]
    async fn no_answer_at_all_is_retried() {
        let (outcome, error) = sent("http://127.0.0.1:9/v1/batch", "{}", false).await;

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
            classified(answer(200, "", None)).await,
            (Outcome::Delivered, None)
        );
    }
}
