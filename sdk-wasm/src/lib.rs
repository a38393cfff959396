//! Ebb's browser SDK: `identify` and `track` calls, queued and delivered in batches to an Ebb
//! collector over the Segment Tracking API.
//!
//! The crate has two layers. The core ([`Sdk`]) is plain Rust and is tested natively: it
//! holds the write key, the collector's address, the visitor's ids and the queue, builds each
//! wire message with `ebb-protocol`'s types, and cuts the queue into [`Batch`]es. What it
//! needs from a browser (random bytes, the clock, the page) comes through [`Environment`].
//!
//! The browser bindings (module `web`, compiled for `wasm32` only) supply that environment,
//! convert JavaScript values, decide when to flush, send each batch with `fetch`, and turn
//! every outcome into a promise, so that nothing throws into the host page. The small
//! JavaScript entry in `sdk-wasm/js/` loads the module and is what pages import.
//!
//! ```
//! use ebb_sdk::{Config, Environment, Page, Sdk};
//!
//! struct Stub;
//!
//! impl Environment for Stub {
//!     fn random_bytes(&mut self) -> ebb_sdk::Result<[u8; 16]> {
//!         Ok([7; 16])
//!     }
//!     fn now(&self) -> String {
//!         "2026-05-01T12:00:00.000Z".into()
//!     }
//!     fn page(&self) -> Option<Page> {
//!         None
//!     }
//! }
//!
//! let config = Config::new("wk_live", "https://collector.example")?;
//! let mut sdk = Sdk::new(config, Stub)?;
//! sdk.identify(Some("user_42".into()), None)?;
//! sdk.track("Signed Up".into(), None)?;
//!
//! let batch = sdk.next_batch().expect("two messages are queued");
//! assert_eq!(batch.len(), 2);
//! assert!(batch.body().starts_with(r#"{"batch":[{"type":"identify""#));
//! assert!(batch.body().ends_with(r#""writeKey":"wk_live"}"#));
//! # Ok::<(), ebb_sdk::Error>(())
//! ```
//!
//! Limitation: consent, persistence of ids and queue, retries with backoff and the
//! `pagehide` flush are not built yet; DESIGN.md describes them.

#![forbid(unsafe_code)]
// In tests an unwrap is the assertion that the value is there.
#![cfg_attr(test, allow(clippy::unwrap_used))]

mod batch;
mod config;
mod environment;
mod error;
mod fields;
mod ids;
mod sdk;
#[cfg(target_arch = "wasm32")]
mod web;

pub use batch::Batch;
pub use config::Config;
pub use environment::{Environment, Page};
pub use error::{Error, Result};
pub use fields::Fields;
pub use ids::uuid_v4;
pub use sdk::{Sdk, LIBRARY_NAME, LIBRARY_VERSION};
