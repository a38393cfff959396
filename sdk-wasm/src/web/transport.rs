//! Sending one batch body to the collector with `fetch`.
//!
//! The body goes as a string, for which `fetch` sets `Content-Type: text/plain;charset=UTF-8`.
//! That type is CORS-safelisted, so a collector on another origin gets a simple request with
//! no preflight; the collector reads JSON whatever the declared type.
//!
//! Limitation: no `keepalive`, so a flush started while the page unloads may be cut off. The
//! unload flush (`pagehide`, `sendBeacon` within 64 KiB) belongs to the delivery work.

use js_sys::{Promise, Reflect};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{RequestInit, Response};

use crate::{Error, Result};

#[wasm_bindgen]
extern "C" {
    /// The global `fetch`, present in windows and workers alike (`window.fetch` is not).
    #[wasm_bindgen(js_name = fetch, catch)]
    fn fetch_with_init(url: &str, init: &RequestInit) -> Result<Promise, JsValue>;
}

/// POSTs `body` to `url` and waits for the answer.
///
/// # Errors
///
/// [`Error::Unreachable`] when no answer came, [`Error::Rejected`] for a status outside 2xx.
pub(super) async fn send(url: &str, body: &str) -> Result<()> {
    let init = RequestInit::new();
    init.set_method("POST");
    init.set_body_opt_str(Some(body));

    let pending = fetch_with_init(url, &init).map_err(unreachable)?;
    let response: Response = JsFuture::from(pending)
        .await
        .map_err(unreachable)?
        .unchecked_into();
    if response.ok() {
        return Ok(());
    }

    let status = response.status();
    let reason = match reason(&response).await {
        Some(reason) => reason,
        None if response.status_text().is_empty() => "no reason given".to_owned(),
        None => response.status_text(),
    };
    Err(Error::Rejected { status, reason })
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

fn unreachable(error: JsValue) -> Error {
    let detail = error.dyn_ref::<js_sys::Error>().map_or_else(
        || "the request failed".to_owned(),
        |e| String::from(e.message()),
    );

    Error::Unreachable(detail)
}
