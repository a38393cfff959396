//! The browser bindings: the functions the JavaScript entry calls, and when batches go out.
//!
//! Each export returns a promise and never throws: arguments arrive as plain `JsValue`s and
//! are checked in Rust, and every error becomes a rejection with an `Error` whose message
//! starts with `ebb: `. `identify` and `track` resolve once the message is queued; `flush`
//! resolves once the collector has accepted everything queued or in flight when it was
//! called.
//!
//! A flush happens when `flush()` is called, when the queue reaches `flushAt`, and
//! `flushInterval` after a message was queued. Each flush sends the whole queue, in as many
//! requests as the batch limit needs; those requests are *flights*. A failed flight puts its
//! messages back in the queue and arms the timer again.
//!
//! Limitation: retries come at the flush interval, without backoff or `Retry-After`, and a
//! batch the collector refuses for good (a 400, an unknown write key) stays queued and is
//! sent again each time.

mod browser;
mod convert;
mod transport;

use std::cell::RefCell;

use js_sys::{Array, Promise};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::{future_to_promise, JsFuture};

use self::browser::Browser;
use crate::{Batch, Config, Error, Result, Sdk};

thread_local! {
    static STATE: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

#[wasm_bindgen]
extern "C" {
    /// The global `setTimeout`; its handle is not kept, since timers are never cancelled.
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &JsValue, millis: i32) -> JsValue;
}

/// Everything a loaded SDK keeps between calls.
struct Loaded {
    sdk: Sdk<Browser>,
    debug: bool,
    timer_armed: bool,
    flights: Vec<(u32, Promise)>,
    next_flight: u32,
}

/// Starts the SDK for the environment named by `writeKey`, sending to the collector at
/// `host`; `flushAt` and `flushInterval` (milliseconds) are optional, and `debug` logs
/// failed background flushes to the console.
#[wasm_bindgen]
pub fn load(
    write_key: JsValue,
    host: JsValue,
    flush_at: JsValue,
    flush_interval: JsValue,
    debug: JsValue,
) -> Promise {
    settle(start(
        &write_key,
        &host,
        &flush_at,
        &flush_interval,
        debug.is_truthy(),
    ))
}

/// Records who the user is; `userId` (a string or number) may be left out to send traits
/// alone.
#[wasm_bindgen]
pub fn identify(user_id: JsValue, traits: JsValue) -> Promise {
    let queued = convert::user_id(&user_id).and_then(|user_id| {
        let traits = convert::fields(&traits, "traits")?;
        with_state(|loaded| loaded.sdk.identify(user_id, traits))
    });

    settle(queued.and_then(|()| after_enqueue()))
}

/// Records something the user did, with optional properties.
#[wasm_bindgen]
pub fn track(event: JsValue, properties: JsValue) -> Promise {
    let queued = convert::optional_string(&event, "event").and_then(|event| {
        let properties = convert::fields(&properties, "properties")?;
        with_state(|loaded| loaded.sdk.track(event.unwrap_or_default(), properties))
    });

    settle(queued.and_then(|()| after_enqueue()))
}

/// Sends everything queued; resolves when the collector has accepted it and every flight
/// already under way, rejects with the first failure.
#[wasm_bindgen]
pub fn flush() -> Promise {
    let flights = match dispatch() {
        Ok(flights) if flights.length() == 0 => return Promise::resolve(&JsValue::UNDEFINED),
        Ok(flights) => flights,
        Err(error) => return Promise::reject(&to_js(&error)),
    };

    future_to_promise(async move {
        let outcomes = Array::from(&JsFuture::from(Promise::all(&flights)).await?);
        match outcomes.iter().find(|outcome| !outcome.is_undefined()) {
            Some(error) => Err(error),
            None => Ok(JsValue::UNDEFINED),
        }
    })
}

fn start(
    write_key: &JsValue,
    host: &JsValue,
    flush_at: &JsValue,
    flush_interval: &JsValue,
    debug: bool,
) -> Result<()> {
    if STATE.with(|state| state.try_borrow().map_or(true, |loaded| loaded.is_some())) {
        return Err(Error::AlreadyLoaded);
    }

    let write_key = convert::optional_string(write_key, "writeKey")?.unwrap_or_default();
    let host = convert::optional_string(host, "host")?.unwrap_or_default();
    let mut config = Config::new(&write_key, &host)?;
    if let Some(count) = convert::count(flush_at, "flushAt")? {
        config = config.with_flush_at(count as usize)?;
    }
    if let Some(millis) = convert::count(flush_interval, "flushInterval")? {
        config = config.with_flush_interval_ms(millis)?;
    }

    let sdk = Sdk::new(config, Browser::new()?)?;

    let loaded = Loaded {
        sdk,
        debug,
        timer_armed: false,
        flights: Vec::new(),
        next_flight: 0,
    };
    STATE.with(|state| *state.borrow_mut() = Some(loaded));
    Ok(())
}

/// Runs `f` on the loaded state.
///
/// # Errors
///
/// [`Error::NotLoaded`] before `load`. A call made from inside another (a `toJSON` of some
/// traits calling `track`) finds the state borrowed and gets [`Error::Busy`], not a panic.
fn with_state<T>(f: impl FnOnce(&mut Loaded) -> Result<T>) -> Result<T> {
    STATE.with(|state| {
        let mut state = state.try_borrow_mut().map_err(|_| Error::Busy)?;
        f(state.as_mut().ok_or(Error::NotLoaded)?)
    })
}

/// After a message was queued: flush if the queue is full, else make sure the timer runs.
fn after_enqueue() -> Result<()> {
    let full = with_state(|loaded| {
        if loaded.sdk.should_flush() {
            return Ok(true);
        }
        arm_timer(loaded);
        Ok(false)
    })?;

    if full {
        dispatch()?;
    }
    Ok(())
}

/// Starts a flight for every batch in the queue and returns the promises of all flights
/// under way, new and old.
fn dispatch() -> Result<Array> {
    let (batches, url) = with_state(|loaded| {
        let mut batches = Vec::new();
        while let Some(batch) = loaded.sdk.next_batch() {
            loaded.next_flight = loaded.next_flight.wrapping_add(1);
            batches.push((loaded.next_flight, batch));
        }
        Ok((batches, loaded.sdk.config().batch_url()))
    })?;

    // The futures are polled from the microtask queue, never here, so none of them can
    // finish (and look for its entry) before it is registered below.
    let started: Vec<(u32, Promise)> = batches
        .into_iter()
        .map(|(id, batch)| (id, future_to_promise(deliver(id, batch, url.clone()))))
        .collect();

    with_state(|loaded| {
        loaded.flights.extend(started);
        Ok(loaded
            .flights
            .iter()
            .map(|(_, flight)| JsValue::from(flight))
            .collect())
    })
}

/// One flight: sends a batch, then drops it or puts it back.
///
/// The flight's promise resolves either way, to `undefined` or to the `Error`: a flush
/// started by the timer has nobody waiting on it, and a rejection that nobody handles would
/// show in the page's console as an uncaught error.
async fn deliver(id: u32, batch: Batch, url: String) -> Result<JsValue, JsValue> {
    let outcome = transport::send(&url, batch.body()).await;

    let failed = outcome.is_err();
    let debug = with_state(|loaded| {
        loaded.flights.retain(|(flight, _)| *flight != id);
        if failed {
            loaded.sdk.requeue(batch);
            arm_timer(loaded);
        }
        Ok(loaded.debug)
    })
    .unwrap_or(false);

    match outcome {
        Ok(()) => Ok(JsValue::UNDEFINED),
        Err(error) => {
            let error = to_js(&error);
            if debug {
                web_sys::console::warn_1(&error);
            }
            Ok(error)
        }
    }
}

/// Schedules a flush `flushInterval` from now, unless one is scheduled or nothing waits.
fn arm_timer(loaded: &mut Loaded) {
    if loaded.timer_armed || loaded.sdk.queued() == 0 {
        return;
    }

    loaded.timer_armed = true;
    let millis = i32::try_from(loaded.sdk.config().flush_interval_ms()).unwrap_or(i32::MAX);
    set_timeout(&Closure::once_into_js(on_timer), millis);
}

fn on_timer() {
    let armed = with_state(|loaded| {
        loaded.timer_armed = false;
        Ok(())
    });

    if armed.is_ok() {
        // A failure is reported by the flight itself (and queued again); nobody waits here.
        let _ = dispatch();
    }
}

fn settle(result: Result<()>) -> Promise {
    match result {
        Ok(()) => Promise::resolve(&JsValue::UNDEFINED),
        Err(error) => Promise::reject(&to_js(&error)),
    }
}

fn to_js(error: &Error) -> JsValue {
    js_sys::Error::new(&format!("ebb: {error}")).into()
}
