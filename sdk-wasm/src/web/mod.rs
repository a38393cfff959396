//! The browser bindings: the functions the JavaScript entry calls, and when batches go out.
//!
//! No export throws: arguments arrive as plain `JsValue`s and are checked in Rust. A call
//! returns `undefined` once its message is queued (or held for consent, or dropped because
//! consent is refused; the debug log says which), or the `Error` it met, whose message
//! starts with `ebb: `; the JavaScript entry turns that into a settled promise. Returning
//! no promise of its own saves a promise per call that nobody may await. `flush` returns
//! a promise, since it settles later.
//!
//! Sending: one request at a time per tab, so the collector sees a tab's messages in order.
//! A flush starts when the waiting messages reach `flushAt` or `flushBytes`,
//! `flushInterval` after a message was queued, when `flush()` is called, when the browser
//! comes back online, and when the page is hidden or left (`visibilitychange`, `pagehide`):
//! then every waiting message goes at once with `fetch(…, {keepalive: true})`, and past the
//! browser's 64 KiB budget for such requests with `sendBeacon`. A failed request is retried
//! on the backoff schedule of [`Backoff`](crate::Backoff). The queue is written to storage
//! at most once per [`SAVE_DELAY_MS`], not once per call.

mod browser;
mod convert;
mod storage;
mod transport;

use crate::prelude::*;
use core::cell::RefCell;

use js_sys::{Function, Object, Promise, Reflect};
use wasm_bindgen::prelude::*;

use self::browser::{global, Browser};
use self::storage::WebStore;
use crate::config::Mode;
use crate::{Batch, Call, Config, Error, Outcome, Payload, Recorded, Result, Sdk, Status};

/// How long changes gather before the queue is written to storage. Writing the whole queue
/// once per call would cost more than the call; the page's `pagehide` and
/// `visibilitychange` write it at once.
///
/// Limitation: a tab killed within this window (a crash, not a close) loses the messages
/// queued in it.
const SAVE_DELAY_MS: i32 = 100;

/// The loaded SDK, the one state every export and callback works on.
static STATE: Global = Global(RefCell::new(None));

struct Global(RefCell<Option<Loaded>>);

// The module is built for wasm32 without the `atomics` feature: it runs on one thread, so
// this cell is never shared between threads. It is what `thread_local!` would do, but
// that macro is `std`'s.
#[cfg(target_feature = "atomics")]
compile_error!("the SDK's global state assumes a single-threaded module");
#[allow(unsafe_code)]
// SAFETY: see above; one thread only.
unsafe impl Sync for Global {}

// Without `std`, the allocator and the panic handler are the module's own. lol_alloc's
// free-list allocator coalesces neighbouring free blocks, so freed memory is reused rather
// than leaked, in a fraction of the code of dlmalloc (what `std` uses on this target). Its
// cost per allocation grows with the free list, which the queue's byte bound keeps short.
#[cfg(not(test))]
#[global_allocator]
#[allow(unsafe_code)]
// SAFETY: one thread only (see `Global`).
static ALLOCATOR: lol_alloc::AssumeSingleThreaded<lol_alloc::FreeListAllocator> =
    unsafe { lol_alloc::AssumeSingleThreaded::new(lol_alloc::FreeListAllocator::new()) };

/// A panic is a bug in the SDK: trap, without the formatting a message would pull in. The
/// trap reaches the page as an exception from the glue, which the JavaScript entry turns
/// into a rejected promise.
#[cfg(not(feature = "std"))]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo<'_>) -> ! {
    core::arch::wasm32::unreachable()
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &JsValue, millis: i32) -> JsValue;

    #[wasm_bindgen(js_name = queueMicrotask)]
    fn queue_microtask(handler: &JsValue);

    #[wasm_bindgen(js_name = addEventListener)]
    fn add_event_listener(kind: &str, handler: &JsValue);

    #[wasm_bindgen(js_namespace = console, js_name = log)]
    fn console_log(text: &str);

    #[wasm_bindgen(js_namespace = console, js_name = warn)]
    fn console_warn(text: &str);
}

/// Everything a loaded SDK keeps between calls.
struct Loaded {
    sdk: Sdk<Browser, WebStore>,
    url: String,
    debug: bool,
    on_consent: Option<Function>,
    save_queued: bool,
    drain_queued: bool,
    timer_due: f64,
    flight: Option<Promise>,
}

/// Starts the SDK for the environment named by `writeKey` with the options of `load`
/// (`host` already defaulted by the entry); `onConsent` is called with the new state after
/// each change of consent.
#[wasm_bindgen]
pub fn load(write_key: JsValue, options: JsValue, on_consent: JsValue) -> JsValue {
    settle(start(&write_key, &options, on_consent))
}

/// A recording call: `kind` says which, the arguments follow the public API's order, and
/// `meta` carries the time and page of a call made before the module loaded.
///
/// | kind | call | `a` | `b` | `c` |
/// |---|---|---|---|---|
/// | 0 | `identify` | user id | traits | options (`userHash`) |
/// | 1 | `track` | event | properties | |
/// | 2 | `page` | name | properties | |
/// | 3 | `group` | group id | traits | |
/// | 4 | `alias` | user id | previous id | |
/// | 5 | `respond` | survey id | answers | |
///
/// One export for all of them: each export costs the module a wrapper of its own.
#[wasm_bindgen]
pub fn record(kind: u32, a: JsValue, b: JsValue, c: JsValue, meta: JsValue) -> JsValue {
    let payload = || {
        Ok(match kind {
            0 => Payload::Identify {
                user_id: convert::id(&a, "userId")?,
                traits: convert::fields(&b, "traits")?.unwrap_or_default(),
                user_hash: convert::optional_string(
                    &convert::field(&c, "userHash"),
                    "options.userHash",
                )?,
            },
            1 => Payload::Track {
                event: convert::optional_string(&a, "event")?.unwrap_or_default(),
                properties: convert::fields(&b, "properties")?.unwrap_or_default(),
            },
            2 => Payload::Page {
                name: convert::optional_string(&a, "name")?,
                properties: convert::fields(&b, "properties")?.unwrap_or_default(),
            },
            3 => Payload::Group {
                group_id: convert::required_id(&a, "groupId")?,
                traits: convert::fields(&b, "traits")?.unwrap_or_default(),
            },
            4 => Payload::Alias {
                user_id: convert::required_id(&a, "userId")?,
                previous_id: convert::id(&b, "previousId")?,
            },
            _ => Payload::Response {
                survey_id: convert::required_id(&a, "surveyId")?,
                answers: convert::fields(&b, "answers")?.ok_or(Error::InvalidArgument {
                    what: "answers",
                    why: "must be an object of question → answer",
                })?,
            },
        })
    };
    record_call(payload(), &meta)
}

/// Forgets the user and mints a new anonymous id.
#[wasm_bindgen]
pub fn reset() -> JsValue {
    settle(with_state(|loaded| {
        loaded.sdk.reset()?;
        log(loaded, "reset: user forgotten, new anonymous id");
        Ok(())
    }))
}

/// A change of consent: `change` 0 grants, 1 denies (the named categories, or every known
/// one when none are named), 2 withdraws (erases what the SDK keeps in the browser and
/// records the withdrawal). One export for the three, since each export costs the module
/// a wrapper of its own.
#[wasm_bindgen]
pub fn consent(change: u32, categories: JsValue) -> JsValue {
    let change = match change {
        0 => Change::Grant,
        1 => Change::Deny,
        _ => Change::Withdraw,
    };
    change_consent(&categories, change)
}

/// What the SDK holds now; `null` before load. `which` 0: the consent state, as
/// `{mode, status, categories, objection}`; 1: `{userId, anonymousId, queued, held}`, both
/// ids `null` until known (the anonymous id until consent allows one). One export for
/// both, since each export costs the module a wrapper of its own.
#[wasm_bindgen]
pub fn state(which: u32) -> JsValue {
    with_state(|loaded| {
        if which == 0 {
            return Ok(state_object(loaded));
        }
        let object = Object::new();
        let id = |value: Option<&str>| value.map_or(JsValue::NULL, JsValue::from_str);
        set(&object, "userId", &id(loaded.sdk.user_id()));
        set(&object, "anonymousId", &id(loaded.sdk.anonymous_id()));
        set(&object, "queued", &(loaded.sdk.queued() as f64).into());
        set(&object, "held", &(loaded.sdk.pending() as f64).into());
        Ok(object.into())
    })
    .unwrap_or(JsValue::NULL)
}

/// Sends everything queued before the call; resolves once the collector has taken it,
/// rejects with the first failure (which is retried in the background all the same).
#[wasm_bindgen]
pub fn flush() -> Promise {
    let mark = match with_state(|loaded| Ok(loaded.sdk.flush_mark())) {
        Ok(mark) => mark,
        Err(error) => return Promise::reject(&to_js(&error)),
    };

    Promise::new(&mut |resolve, reject| flush_from(mark, resolve, reject))
}

/// One step of `flush()`: waits for the flight under way (or starts the next one) until
/// nothing queued before `mark` is left. Where the collector answered with `Retry-After`,
/// the next flight waits until then.
fn flush_from(mark: u64, resolve: Function, reject: Function) {
    let next = with_state(|loaded| {
        if !loaded.sdk.holds_before(mark) {
            return Ok(None);
        }
        let wait = loaded.sdk.asked_wait_ms();
        if loaded.flight.is_none() && wait > 0.0 {
            // A promise that resolves to `undefined` then: the step after it runs again.
            let later = Promise::new(&mut |done, _| drop(set_timeout(&done, wait as i32)));
            return Ok(Some(later));
        }
        Ok(loaded.flight.clone().or_else(|| start_flight(loaded)))
    });
    match next {
        Err(error) => drop(reject.call1(&JsValue::UNDEFINED, &to_js(&error))),
        Ok(None) => drop(resolve.call0(&JsValue::UNDEFINED)),
        Ok(Some(flight)) => {
            let _ = transport::then(&flight, move |failure| {
                if failure.is_undefined() {
                    flush_from(mark, resolve, reject);
                } else {
                    let _ = reject.call1(&JsValue::UNDEFINED, &failure);
                }
                JsValue::UNDEFINED
            });
        }
    }
}

fn start(write_key: &JsValue, options: &JsValue, on_consent: JsValue) -> Result<()> {
    if STATE.0.try_borrow().map_or(true, |loaded| loaded.is_some()) {
        return Err(Error::AlreadyLoaded);
    }

    let config = config(write_key, options)?;
    let debug = convert::field(options, "debug").is_truthy();
    let url = config.batch_url();
    let sdk = Sdk::new(config, Browser::new()?, WebStore::open())?;
    let loaded = Loaded {
        sdk,
        url,
        debug,
        on_consent: on_consent.dyn_into().ok(),
        save_queued: false,
        drain_queued: false,
        timer_due: 0.0,
        flight: None,
    };
    match STATE.0.try_borrow_mut() {
        Ok(mut state) => *state = Some(loaded),
        Err(_) => return Err(Error::Busy),
    }

    listen("pagehide", |_| page_hidden());
    listen("visibilitychange", |_| {
        let hidden = global("document")
            .and_then(|document| Reflect::get(&document, &"visibilityState".into()).ok())
            .and_then(|state| state.as_string())
            .is_some_and(|state| state == "hidden");
        if hidden {
            unload_flush();
        }
    });
    listen("pageshow", |event| {
        if convert::field(&event, "persisted").is_truthy() {
            let _ = with_state(|loaded| {
                loaded.sdk.page_shown();
                after_change(loaded);
                Ok(())
            });
        }
    });
    listen("online", |_| {
        let _ = with_state(|loaded| {
            loaded.sdk.retry_now();
            Ok(())
        });
        drain();
    });

    with_state(|loaded| {
        log_state(loaded, "loaded");
        after_change(loaded);
        Ok(())
    })?;
    adopt_orphans();
    Ok(())
}

/// The `Config` of `load`'s options.
fn config(write_key: &JsValue, options: &JsValue) -> Result<Config> {
    let option = |name| convert::field(options, name);
    let write_key = convert::optional_string(write_key, "writeKey")?.unwrap_or_default();
    let host = convert::optional_string(&option("host"), "host")?.unwrap_or_default();
    let mut config = Config::new(&write_key, &host)?;

    if let Some(count) = convert::count(&option("flushAt"), "flushAt")? {
        config.set_flush_at(count as usize)?;
    }
    if let Some(bytes) = convert::count(&option("flushBytes"), "flushBytes")? {
        config.set_flush_bytes(bytes as usize)?;
    }
    if let Some(millis) = convert::count(&option("flushInterval"), "flushInterval")? {
        config.set_flush_interval_ms(millis)?;
    }
    if let Some(bytes) = convert::count(&option("maxQueueBytes"), "maxQueueBytes")? {
        config.set_max_queue_bytes(bytes as usize)?;
    }
    if let Some(count) = convert::count(&option("maxPendingCalls"), "maxPendingCalls")? {
        config.set_max_pending(count as usize)?;
    }
    let retry = option("retry");
    let base = convert::count(&convert::field(&retry, "baseDelay"), "retry.baseDelay")?;
    let max = convert::count(&convert::field(&retry, "maxDelay"), "retry.maxDelay")?;
    if base.is_some() || max.is_some() {
        config.set_retry(
            base.unwrap_or(Config::DEFAULT_RETRY_BASE_MS),
            max.unwrap_or(Config::DEFAULT_RETRY_MAX_MS),
        )?;
    }

    let consent = option("consent");
    let mode = match convert::optional_string(&convert::field(&consent, "mode"), "consent.mode")?
        .as_deref()
    {
        None | Some("opt-in") => Mode::OptIn,
        Some("opt-out") => Mode::OptOut,
        Some(_) => {
            return Err(Error::InvalidArgument {
                what: "consent.mode",
                why: "must be \"opt-in\" or \"opt-out\"",
            })
        }
    };
    let categories = convert::categories(&convert::field(&consent, "categories"))?;
    let required = convert::categories(&convert::field(&consent, "required"))?;
    config.set_consent(
        mode,
        categories.unwrap_or_default(),
        required.unwrap_or_default(),
    )?;
    config.set_honor_dnt(convert::field(&consent, "honorDoNotTrack").is_truthy());
    config.set_user_hash(convert::optional_string(&option("userHash"), "userHash")?);
    Ok(config)
}

/// Records a call whose arguments converted to `payload`.
fn record_call(payload: Result<Payload>, meta: &JsValue) -> JsValue {
    let outcome = payload.and_then(|payload| {
        let call = if meta.is_undefined() {
            Call::now(payload)
        } else {
            Call {
                payload,
                timestamp: convert::field(meta, "timestamp").as_string(),
                page: convert::page(&convert::field(meta, "page")),
            }
        };
        with_state(|loaded| {
            let recorded = loaded.sdk.record(call)?;
            if loaded.debug {
                log(
                    loaded,
                    match recorded {
                        Recorded::Queued => "call queued",
                        Recorded::Held => "call held until consent is given",
                        Recorded::Ignored => "call dropped: consent is refused",
                    },
                );
            }
            after_change(loaded);
            Ok(())
        })
    });
    if let Err(error) = &outcome {
        debug_failure(error);
    }
    settle(outcome)
}

#[derive(Clone, Copy)]
enum Change {
    Grant,
    Deny,
    Withdraw,
}

fn change_consent(categories: &JsValue, change: Change) -> JsValue {
    let outcome = convert::categories(categories).and_then(|named| {
        let (state, listener) = with_state(|loaded| {
            let names = named.clone().unwrap_or_else(|| {
                let state = loaded.sdk.consent_state();
                state
                    .preferences
                    .into_iter()
                    .map(|(name, _)| name)
                    .collect()
            });
            let changed = match change {
                Change::Grant => loaded.sdk.grant(&names)?,
                Change::Deny => loaded.sdk.deny(&names)?,
                Change::Withdraw => {
                    loaded.sdk.withdraw()?;
                    true
                }
            };
            log_state(loaded, "consent changed");
            after_change(loaded);
            let listener = if changed {
                loaded.on_consent.clone()
            } else {
                None
            };
            Ok((state_object(loaded), listener))
        })?;
        if let Some(listener) = listener {
            // A listener that throws is the page's own error; it must not undo the change.
            let _ = listener.call1(&JsValue::UNDEFINED, &state);
        }
        Ok(())
    });
    if let Err(error) = &outcome {
        debug_failure(error);
    }
    if matches!(change, Change::Grant) {
        adopt_orphans();
    }
    settle(outcome)
}

/// `{mode, status, categories: {name: granted}, objection}`.
fn state_object(loaded: &Loaded) -> JsValue {
    let state = loaded.sdk.consent_state();
    let object = Object::new();
    let categories = Object::new();
    for (name, granted) in &state.preferences {
        set(&categories, name, &JsValue::from_bool(*granted));
    }
    let mode = match state.mode {
        Mode::OptIn => "opt-in",
        Mode::OptOut => "opt-out",
    };
    let status = match state.status {
        Status::Allowed => "granted",
        Status::Pending => "pending",
        Status::Refused => "denied",
    };
    set(&object, "mode", &mode.into());
    set(&object, "status", &status.into());
    set(&object, "categories", &categories);
    set(&object, "objection", &JsValue::from_bool(state.objection));
    object.into()
}

fn set(object: &Object, name: &str, value: &JsValue) {
    let _ = Reflect::set(object, &JsValue::from_str(name), value);
}

/// Runs `f` on the loaded state.
///
/// # Errors
///
/// [`Error::NotLoaded`] before `load`. A call made from inside another (a `toJSON` of some
/// traits calling `track`) finds the state borrowed and gets [`Error::Busy`], not a panic.
fn with_state<T>(f: impl FnOnce(&mut Loaded) -> Result<T>) -> Result<T> {
    let mut state = STATE.0.try_borrow_mut().map_err(|_| Error::Busy)?;
    f(state.as_mut().ok_or(Error::NotLoaded)?)
}

/// After anything changed: schedule the storage write, and a flush if one is due.
fn after_change(loaded: &mut Loaded) {
    if loaded.sdk.dirty() && !loaded.save_queued {
        loaded.save_queued = true;
        let save = Closure::once_into_js(|| {
            let _ = with_state(|loaded| {
                loaded.save_queued = false;
                loaded.sdk.save();
                Ok(())
            });
        });
        set_timeout(&save, SAVE_DELAY_MS);
    }

    if loaded.flight.is_some() || loaded.sdk.queued() == 0 {
        return;
    }
    if loaded.sdk.should_flush() {
        if !loaded.drain_queued {
            loaded.drain_queued = true;
            queue_microtask(&Closure::once_into_js(drain));
        }
    } else if loaded.timer_due == 0.0 {
        arm_timer(loaded, f64::from(loaded.sdk.config().flush_interval_ms()));
    }
}

/// Sends the next batch unless a request is under way or a retry is not yet due.
fn drain() {
    let _ = with_state(|loaded| {
        loaded.drain_queued = false;
        if loaded.flight.is_some() {
            return Ok(());
        }
        let wait = loaded.sdk.retry_wait_ms();
        if wait > 0.0 {
            arm_timer(loaded, wait);
            return Ok(());
        }
        start_flight(loaded);
        Ok(())
    });
}

/// Starts a request for the next batch; its promise resolves to `undefined` or to the
/// `Error` it met (never rejects: a flight started by a timer has nobody waiting on it).
fn start_flight(loaded: &mut Loaded) -> Option<Promise> {
    let batch = loaded.sdk.next_batch(usize::MAX)?;
    // The answer is handled from the microtask queue, never here, so it cannot finish (and
    // clear `flight`) before it is registered below.
    let flight = fly(&batch, &loaded.url, false);
    loaded.flight = Some(flight.clone());
    Some(flight)
}

fn fly(batch: &Batch, url: &str, keepalive: bool) -> Promise {
    let id = batch.id();
    transport::send(url, batch.body(), keepalive, move |outcome, error| {
        let _ = with_state(|loaded| {
            let retry_in = loaded.sdk.settle(id, &outcome);
            if !keepalive {
                loaded.flight = None;
            }
            if let Some(error) = &error {
                log_failure(loaded, error, &outcome);
            }
            if let Some(delay) = retry_in {
                arm_timer(loaded, f64::from(delay));
            }
            after_change(loaded);
            Ok(())
        });

        error.map_or(JsValue::UNDEFINED, |error| to_js(&error))
    })
}

/// The page is hidden or going away: send every waiting message with requests that may
/// outlive the page (cut by [`Sdk::leave`] to the browser's budget for them), and store what
/// is left.
fn unload_flush() {
    let _ = with_state(|loaded| {
        let url = &loaded.url;
        loaded.sdk.leave(|batch, keepalive| {
            if keepalive {
                let _ = fly(batch, url, true);
                return true;
            }
            transport::beacon(url, batch.body())
        });
        Ok(())
    });
}

fn page_hidden() {
    unload_flush();
    let _ = with_state(|loaded| {
        loaded.sdk.page_hidden();
        Ok(())
    });
}

/// Schedules a flush `millis` from now, unless one is due sooner.
fn arm_timer(loaded: &mut Loaded, millis: f64) {
    let due = js_sys::Date::now() + millis;
    if loaded.timer_due != 0.0 && loaded.timer_due <= due {
        return;
    }
    loaded.timer_due = due;
    let millis = millis.clamp(0.0, f64::from(i32::MAX)) as i32;
    set_timeout(
        &Closure::once_into_js(|| {
            let _ = with_state(|loaded| {
                loaded.timer_due = 0.0;
                Ok(())
            });
            drain();
        }),
        millis,
    );
}

/// Takes over queues that closed tabs left, under a Web Lock so that two tabs never adopt
/// the same queue; without the Locks API, directly.
fn adopt_orphans() {
    let adopt = Closure::once_into_js(|lock: JsValue| {
        if lock.is_null() {
            return; // another tab holds the lock and is adopting
        }
        let _ = with_state(|loaded| {
            let adopted = loaded.sdk.adopt_orphans();
            if adopted > 0 {
                log(loaded, "took over the queue of a closed tab");
            }
            after_change(loaded);
            Ok(())
        });
    });

    let locks = global("navigator")
        .map(|navigator| convert::field(&navigator, "locks"))
        .filter(JsValue::is_object);
    let request = locks
        .as_ref()
        .map(|locks| convert::field(locks, "request"))
        .and_then(|request| request.dyn_into::<Function>().ok());
    match (locks, request) {
        (Some(locks), Some(request)) => {
            let options = Object::new();
            set(&options, "ifAvailable", &JsValue::TRUE);
            let _ = request.call3(&locks, &"ebb.adopt".into(), &options, &adopt);
        }
        _ => {
            if let Some(adopt) = adopt.dyn_ref::<Function>() {
                let _ = adopt.call1(&JsValue::UNDEFINED, &JsValue::TRUE);
            }
        }
    }
}

fn listen(kind: &str, handler: impl FnMut(JsValue) + 'static) {
    let closure = Closure::<dyn FnMut(JsValue)>::new(handler);
    add_event_listener(kind, closure.as_ref());
    // The listeners live as long as the page.
    closure.forget();
}

fn log(loaded: &Loaded, text: &str) {
    if loaded.debug {
        let mut line = String::from("ebb: ");
        line.push_str(text);
        console_log(&line);
    }
}

fn log_state(loaded: &Loaded, what: &str) {
    if !loaded.debug {
        return;
    }
    let mut line = String::from(what);
    line.push_str(" (consent ");
    line.push_str(match loaded.sdk.consent_state().status {
        Status::Allowed => "granted",
        Status::Pending => "pending",
        Status::Refused => "denied",
    });
    if loaded.sdk.storage_failed() {
        line.push_str("; storage unavailable, keeping state in memory");
    }
    line.push(')');
    log(loaded, &line);
}

fn log_failure(loaded: &Loaded, error: &Error, outcome: &Outcome) {
    if !loaded.debug {
        return;
    }
    let mut line = String::from("ebb: ");
    line.push_str(&error.describe());
    line.push_str(match outcome {
        Outcome::Refused { .. } => " (batch dropped)",
        _ => " (will retry)",
    });
    console_warn(&line);
}

fn debug_failure(error: &Error) {
    let _ = with_state(|loaded| {
        if loaded.debug {
            let mut line = String::from("ebb: ");
            line.push_str(&error.describe());
            console_warn(&line);
        }
        Ok(())
    });
}

/// `undefined`, or the error as a JavaScript `Error`.
fn settle(result: Result<()>) -> JsValue {
    match result {
        Ok(()) => JsValue::UNDEFINED,
        Err(error) => to_js(&error),
    }
}

fn to_js(error: &Error) -> JsValue {
    let mut text = String::from("ebb: ");
    text.push_str(&error.describe());
    js_sys::Error::new(&text).into()
}
