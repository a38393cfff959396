//! Ebb's browser SDK: consent-first `identify`, `track`, `page`, `group`, `alias` and survey
//! responses, queued and delivered in batches to an Ebb collector over the Segment Tracking
//! API.
//!
//! The crate has two layers. The core ([`Sdk`]) is plain Rust and is tested natively: it
//! holds the consent state, the visitor's ids and the queue, writes each wire message, cuts
//! the queue into batches, and decides what an answer of the collector means and when to
//! retry. What it needs from a browser comes through two traits: [`Environment`] (random
//! bytes, the clock, the page, privacy signals) and [`Store`] (`localStorage` and
//! `sessionStorage`).
//!
//! The browser bindings (module `web`, compiled for `wasm32` only) supply those, convert
//! JavaScript values, decide when to flush, send each batch with `fetch` (with `keepalive`
//! when the page goes away), and report every outcome as a value (or, for `flush`, a
//! promise) that the JavaScript entry turns into a settled promise, so that nothing
//! throws into the host page. The JavaScript entry in `sdk-wasm/js/` loads the module and
//! is what pages import; `snippet.js` there is the inline loader.
//!
//! ```
//! use ebb_sdk::{Call, Config, Environment, MemoryStore, Page, Payload, Recorded, Sdk};
//!
//! struct Stub(u8);
//!
//! impl Environment for Stub {
//!     fn random_bytes(&mut self) -> ebb_sdk::Result<[u8; 16]> {
//!         self.0 += 1;
//!         Ok([self.0; 16])
//!     }
//!     fn now_ms(&self) -> f64 {
//!         1_777_636_800_000.0
//!     }
//!     fn page(&self) -> Option<Page> {
//!         None
//!     }
//! }
//!
//! let config = Config::new("wk_live", "https://collector.example")?;
//! let mut sdk = Sdk::new(config, Stub(0), MemoryStore::default())?;
//! let signed_up = Payload::Track { event: "Signed Up".into(), properties: Default::default() };
//!
//! // Opt-in by default: held in memory until the visitor grants the `analytics` category.
//! assert_eq!(sdk.record(Call::now(signed_up))?, Recorded::Held);
//! sdk.grant(&["analytics".to_owned()])?;
//!
//! let batch = sdk.next_batch(60_000).expect("the consent record and the held call");
//! assert_eq!(batch.len(), 2);
//! assert!(batch.body().contains(r#""event":"Signed Up""#));
//! assert!(batch.body().contains(r#""categoryPreferences":{"analytics":true}"#));
//! # Ok::<(), ebb_sdk::Error>(())
//! ```

// The shipped wasm module is built without the standard library (feature `std` off): its
// panic machinery formats a message that nobody reads. Panics then trap (see
// `web::panic`). Tests, native builds and docs keep `std`.
#![cfg_attr(all(target_arch = "wasm32", not(feature = "std")), no_std)]
// In tests an unwrap is the assertion that the value is there.
#![cfg_attr(test, allow(clippy::unwrap_used))]

extern crate alloc;

mod config;
mod consent;
mod delivery;
mod environment;
mod error;
mod fields;
mod ids;
mod json;
mod queue;
mod sdk;
mod store;
#[cfg(target_arch = "wasm32")]
mod web;
mod wire;

/// What the standard prelude would bring, for the builds without it.
mod prelude {
    pub(crate) use alloc::borrow::ToOwned;
    pub(crate) use alloc::string::String;
    pub(crate) use alloc::vec;
    pub(crate) use alloc::vec::Vec;
}

pub use config::{Config, Mode};
pub use consent::{Consent, Status};
pub use delivery::{retry_after_seconds, Backoff, Outcome};
pub use environment::{iso8601, Environment, Page};
pub use error::{Error, Result};
pub use fields::Fields;
pub use ids::uuid_v4;
pub use json::is_object;
pub use queue::{Batch, Queue, Settled};
pub use sdk::{
    Call, ConsentState, Payload, Recorded, Sdk, CONSENT_EVENT, LIBRARY_NAME, LIBRARY_VERSION,
};
pub use store::{MemoryStore, Store};
