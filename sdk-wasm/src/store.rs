//! Where the SDK keeps what must outlive the page: a key-value store of text.
//!
//! The browser bindings implement [`Store`] over `localStorage` and `sessionStorage`;
//! [`MemoryStore`] serves tests and is what remains when the browser's storage is missing.
//! A failed write is not an error for the SDK: its state lives in memory and storage only
//! mirrors it, so the SDK goes on working for the life of the page.

use crate::prelude::*;
use alloc::collections::BTreeMap;

/// A store of text values, shared by the tabs of one site (`local`) or kept per tab
/// (`session`).
pub trait Store {
    /// The value of `key`, if any and if storage can be read.
    fn get(&self, key: &str) -> Option<String>;

    /// Writes `value` under `key`; returns `false` when storage refused (full, blocked).
    fn set(&mut self, key: &str, value: &str) -> bool;

    /// Removes `key`.
    fn remove(&mut self, key: &str);

    /// Every key, for finding the SDK's own among them.
    fn keys(&self) -> Vec<String>;

    /// The per-tab value of `key` (`sessionStorage`), which survives a reload of the tab.
    fn session_get(&self, key: &str) -> Option<String>;

    /// Writes the per-tab value of `key`; returns `false` when storage refused.
    fn session_set(&mut self, key: &str, value: &str) -> bool;

    /// Removes the per-tab value of `key`.
    fn session_remove(&mut self, key: &str);
}

/// A store in memory, optionally refusing every write like a full or blocked storage.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MemoryStore {
    /// The shared values.
    pub local: BTreeMap<String, String>,
    /// The per-tab values.
    pub session: BTreeMap<String, String>,
    /// When set, every write fails and nothing changes.
    pub refuse_writes: bool,
}

impl Store for MemoryStore {
    fn get(&self, key: &str) -> Option<String> {
        self.local.get(key).cloned()
    }

    fn set(&mut self, key: &str, value: &str) -> bool {
        if !self.refuse_writes {
            self.local.insert(key.to_owned(), value.to_owned());
        }
        !self.refuse_writes
    }

    fn remove(&mut self, key: &str) {
        self.local.remove(key);
    }

    fn keys(&self) -> Vec<String> {
        self.local.keys().cloned().collect()
    }

    fn session_get(&self, key: &str) -> Option<String> {
        self.session.get(key).cloned()
    }

    fn session_set(&mut self, key: &str, value: &str) -> bool {
        if !self.refuse_writes {
            self.session.insert(key.to_owned(), value.to_owned());
        }
        !self.refuse_writes
    }

    fn session_remove(&mut self, key: &str) {
        self.session.remove(key);
    }
}
