//! The browser as the core's [`Environment`]: `crypto`, `Date`, `location` and `document`.

use js_sys::{Date, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use web_sys::Crypto;

use crate::{Environment, Error, Page, Result};

/// The page's (or worker's) global objects, as the SDK's source of ids, time and context.
#[derive(Debug)]
pub(super) struct Browser {
    crypto: Crypto,
}

impl Browser {
    /// Finds `globalThis.crypto`, which windows and workers both have.
    pub(super) fn new() -> Result<Self> {
        let crypto = Reflect::get(&js_sys::global(), &JsValue::from_str("crypto"))
            .ok()
            .filter(JsValue::is_object)
            .ok_or(Error::NoRandomSource)?;

        Ok(Self {
            crypto: crypto.unchecked_into(),
        })
    }
}

impl Environment for Browser {
    fn random_bytes(&mut self) -> Result<[u8; 16]> {
        let mut bytes = [0; 16];
        self.crypto
            .get_random_values_with_u8_array(&mut bytes)
            .map_err(|_| Error::NoRandomSource)?;
        Ok(bytes)
    }

    fn now(&self) -> String {
        Date::new_0().to_iso_string().into()
    }

    fn page(&self) -> Option<Page> {
        let window = web_sys::window()?;
        let location = window.location();
        let document = window.document()?;

        Some(Page {
            path: location.pathname().ok()?,
            url: location.href().ok()?,
            search: location.search().ok()?,
            title: document.title(),
            referrer: document.referrer(),
        })
    }
}
