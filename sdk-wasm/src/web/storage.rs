//! `localStorage` and `sessionStorage` as the core's [`Store`].
//!
//! Each global is read once without throwing (a privacy setting or a sandboxed frame makes
//! reading it throw), and every call on the storage object itself reports failure as a
//! value (a full disk makes `setItem` throw). A storage that cannot be reached is simply
//! absent: the core then keeps its state in memory. gloo-storage did the same through its
//! `raw()` helpers, at the cost of a dependency whose typed helpers throw into the page.

use crate::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::Storage;

use super::browser::global;
use crate::Store;

/// The page's two storages, each `None` when unavailable.
#[derive(Debug)]
pub(super) struct WebStore {
    local: Option<Storage>,
    session: Option<Storage>,
}

impl WebStore {
    /// Opens both storages, leaving out one whose global cannot be read.
    pub(super) fn open() -> Self {
        let open = |name: &str| global(name).and_then(|value| value.dyn_into().ok());

        Self {
            local: open("localStorage"),
            session: open("sessionStorage"),
        }
    }

    /// A store with no storage at all, as in a page that blocks it.
    #[cfg(test)]
    pub(super) fn none() -> Self {
        Self {
            local: None,
            session: None,
        }
    }
}

fn get(storage: Option<&Storage>, key: &str) -> Option<String> {
    storage?.get_item(key).ok().flatten()
}

fn set(storage: Option<&Storage>, key: &str, value: &str) -> bool {
    storage.is_some_and(|storage| storage.set_item(key, value).is_ok())
}

fn remove(storage: Option<&Storage>, key: &str) {
    if let Some(storage) = storage {
        // A removal that fails leaves the value; there is nothing better to do.
        let _ = storage.remove_item(key);
    }
}

impl Store for WebStore {
    fn get(&self, key: &str) -> Option<String> {
        get(self.local.as_ref(), key)
    }

    fn set(&mut self, key: &str, value: &str) -> bool {
        set(self.local.as_ref(), key, value)
    }

    fn remove(&mut self, key: &str) {
        remove(self.local.as_ref(), key);
    }

    fn keys(&self) -> Vec<String> {
        let Some(storage) = &self.local else {
            return Vec::new();
        };
        let count = storage.length().unwrap_or(0);
        (0..count)
            .filter_map(|index| storage.key(index).ok().flatten())
            .collect()
    }

    fn session_get(&self, key: &str) -> Option<String> {
        get(self.session.as_ref(), key)
    }

    fn session_set(&mut self, key: &str, value: &str) -> bool {
        set(self.session.as_ref(), key, value)
    }

    fn session_remove(&mut self, key: &str) {
        remove(self.session.as_ref(), key);
    }
}

#[cfg(test)]
mod tests {
    use js_sys::{Function, Reflect};
    use wasm_bindgen_test::wasm_bindgen_test;

    use super::*;

    wasm_bindgen_test::wasm_bindgen_test_configure!(run_in_browser);

    #[wasm_bindgen_test]
    fn values_round_trip_through_local_and_session_storage() {
        let mut store = WebStore::open();

        assert!(store.set("ebb.test.a", "1\n{\"x\":2}"));
        assert!(store.session_set("ebb.test.tab", "t1"));

        assert_eq!(store.get("ebb.test.a").as_deref(), Some("1\n{\"x\":2}"));
        assert_eq!(store.session_get("ebb.test.tab").as_deref(), Some("t1"));
        assert!(store.keys().contains(&"ebb.test.a".to_owned()));
        store.remove("ebb.test.a");
        store.session_remove("ebb.test.tab");
        assert_eq!(store.get("ebb.test.a"), None);
        let local: Storage = global("localStorage").unwrap().unchecked_into();
        assert_eq!(local.get_item("ebb.test.a").unwrap(), None);
    }

    #[wasm_bindgen_test]
    fn a_storage_that_throws_reports_failure_instead_of_throwing() {
        let mut store = WebStore::open();
        let prototype = Reflect::get(&js_sys::global(), &"Storage".into())
            .and_then(|storage| Reflect::get(&storage, &"prototype".into()))
            .unwrap();
        let original = Reflect::get(&prototype, &"setItem".into()).unwrap();
        let throwing =
            Function::new_no_args("throw new DOMException('full', 'QuotaExceededError')");
        Reflect::set(&prototype, &"setItem".into(), &throwing).unwrap();

        let written = store.set("ebb.test.full", "x");
        let read = store.get("ebb.test.full");

        Reflect::set(&prototype, &"setItem".into(), &original).unwrap();
        assert!(!written);
        assert_eq!(read, None);
    }

    #[wasm_bindgen_test]
    fn no_storage_at_all_reads_nothing_and_refuses_writes() {
        let mut store = WebStore::none();

        assert!(!store.set("ebb.test.none", "x"));
        assert!(!store.session_set("ebb.test.none", "x"));
        assert_eq!(store.get("ebb.test.none"), None);
        assert!(store.keys().is_empty());
    }
}
