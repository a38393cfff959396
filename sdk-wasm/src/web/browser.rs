//! The browser as the core's [`Environment`]: `crypto`, `Date`, `location`, `document` and
//! `navigator`.

use crate::prelude::*;
use core::cell::{Cell, RefCell};

use js_sys::{Date, Reflect};
use wasm_bindgen::prelude::*;
use web_sys::Crypto;

use crate::{Environment, Error, Page, Result};

/// Random bytes drawn per call of `crypto.getRandomValues`: every message needs sixteen,
/// and one call per message costs more than the rest of `track` together.
const POOL: usize = 512;

#[wasm_bindgen]
extern "C" {
    /// `location`, seen through the one property read per message.
    type Place;

    /// `location.href` as the engine's own string: comparing it with the last one read
    /// costs no copy into the module.
    #[wasm_bindgen(method, getter, structural)]
    fn href(this: &Place) -> JsValue;

    /// `globalThis`, which every engine the SDK runs in has: `js_sys::global()` also probes
    /// `self`, `window` and `global`, in code that ships with the module.
    #[wasm_bindgen(thread_local_v2, js_name = globalThis)]
    static GLOBAL_THIS: JsValue;
}

/// The page's global objects, as the SDK's source of ids, time, context and signals.
#[derive(Debug)]
pub(super) struct Browser {
    crypto: Crypto,
    pool: Vec<u8>,
    /// `location`, when there is one.
    location: Option<JsValue>,
    /// `location.href` when the page was read last: the page is read again only when it
    /// changed, since five reads of `location` and `document` per message cost more than
    /// the rest of it.
    href: RefCell<JsValue>,
    /// The millisecond (`Date.now()`) in which `href` was last found unchanged: within it,
    /// the page is taken as unchanged without reading `location.href`, whose getter is
    /// the largest single cost of a `track` in a burst of them. A `page()` call always
    /// reads the page afresh (see `Sdk::apply`).
    checked_at: Cell<f64>,
}

impl Browser {
    /// Finds `globalThis.crypto`, which windows and workers both have.
    pub(super) fn new() -> Result<Self> {
        let crypto = global("crypto")
            .filter(JsValue::is_object)
            .ok_or(Error::NoRandomSource)?;

        Ok(Self {
            crypto: crypto.unchecked_into(),
            pool: Vec::new(),
            location: global("location").filter(JsValue::is_object),
            href: RefCell::new(JsValue::UNDEFINED),
            checked_at: Cell::new(f64::NAN),
        })
    }
}

impl Environment for Browser {
    fn random_bytes(&mut self) -> Result<[u8; 16]> {
        if self.pool.len() < 16 {
            let mut fresh = vec![0; POOL];
            self.crypto
                .get_random_values_with_u8_array(&mut fresh)
                .map_err(|_| Error::NoRandomSource)?;
            self.pool = fresh;
        }

        let mut bytes = [0; 16];
        let rest = self.pool.len() - 16;
        bytes.copy_from_slice(&self.pool[rest..]);
        self.pool.truncate(rest);
        Ok(bytes)
    }

    fn now_ms(&self) -> f64 {
        Date::now()
    }

    fn page(&self) -> Option<Page> {
        let location = self.location.as_ref()?;
        let document: web_sys::Document = global("document")
            .filter(JsValue::is_object)?
            .unchecked_into();
        let href = location.unchecked_ref::<Place>().href();
        let location: &web_sys::Location = location.unchecked_ref();
        let page = Page {
            path: location.pathname().ok()?,
            url: href.as_string()?,
            search: location.search().ok()?,
            title: document.title(),
            referrer: document.referrer(),
        };
        *self.href.borrow_mut() = href;
        self.checked_at.set(Date::now());
        Some(page)
    }

    fn still_on(&self, seen: Option<&Page>) -> bool {
        let Some(location) = &self.location else {
            return seen.is_none();
        };
        if seen.is_none() {
            return false;
        }
        let now = Date::now();
        if now == self.checked_at.get() {
            return true;
        }
        let same = location.unchecked_ref::<Place>().href() == *self.href.borrow();
        if same {
            self.checked_at.set(now);
        }
        same
    }

    fn global_privacy_control(&self) -> bool {
        navigator("globalPrivacyControl").is_some_and(|value| value.is_truthy())
    }

    fn do_not_track(&self) -> bool {
        navigator("doNotTrack").and_then(|value| value.as_string()) == Some("1".to_owned())
    }

    fn reloaded(&self) -> bool {
        let Some(performance) = global("performance").filter(JsValue::is_object) else {
            return false;
        };
        let entries = Reflect::get(&performance, &JsValue::from_str("getEntriesByType"))
            .ok()
            .and_then(|get| get.dyn_into::<js_sys::Function>().ok())
            .and_then(|get| {
                get.call1(&performance, &JsValue::from_str("navigation"))
                    .ok()
            });
        entries
            .and_then(|entries| Reflect::get_u32(&entries, 0).ok())
            .filter(JsValue::is_object)
            .and_then(|entry| Reflect::get(&entry, &JsValue::from_str("type")).ok())
            .and_then(|kind| kind.as_string())
            .is_some_and(|kind| kind == "reload")
    }
}

/// A property of the global object, `None` when reading it throws.
pub(super) fn global(name: &str) -> Option<JsValue> {
    GLOBAL_THIS.with(|this| Reflect::get(this, &JsValue::from_str(name)).ok())
}

/// A property of `navigator`, `None` outside a browser or when reading it throws.
fn navigator(name: &str) -> Option<JsValue> {
    let navigator = global("navigator").filter(JsValue::is_object)?;
    Reflect::get(&navigator, &JsValue::from_str(name)).ok()
}
