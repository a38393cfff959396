//! The visitor's consent: which categories are granted, and what that allows.
//!
//! Each category is granted or denied by an explicit choice of the visitor, or else follows
//! the mode: undecided in opt-in mode, granted in opt-out mode unless a privacy signal
//! (Global Privacy Control, and Do Not Track when configured) objects. Tracking needs every
//! required category granted. This module only answers questions; the [`Sdk`](crate::Sdk)
//! acts on the answers (buffering, replaying, persisting, erasing).

use crate::config::Mode;
use crate::json::{self, Object};
use crate::prelude::*;

/// What the consent state allows the SDK to do with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Every required category is granted: record, store and send.
    Allowed,
    /// Opt-in mode and the visitor has not chosen yet: hold calls in memory only.
    Pending,
    /// A required category is denied or objected to: drop calls.
    Refused,
}

/// The consent choices of one visitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    mode: Mode,
    known: Vec<String>,
    required: Vec<String>,
    choices: Vec<(String, bool)>,
    objection: bool,
}

impl Consent {
    /// No choice made yet; `objection` is a privacy signal of the browser.
    pub fn new(mode: Mode, known: Vec<String>, required: Vec<String>, objection: bool) -> Self {
        Self {
            mode,
            known,
            required,
            choices: Vec::new(),
            objection,
        }
    }

    /// Whether a privacy signal objects to tracking.
    pub fn objection(&self) -> bool {
        self.objection
    }

    /// The consent mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Records the visitor's choice for each category; returns whether anything changed.
    pub fn choose(&mut self, categories: &[String], granted: bool) -> bool {
        let before = self.preferences();
        for name in categories {
            match self.choices.iter_mut().find(|(known, _)| known == name) {
                Some(choice) => choice.1 = granted,
                None => self.choices.push((name.clone(), granted)),
            }
        }
        self.preferences() != before
    }

    /// Denies every known category: what a withdrawal leaves.
    pub fn deny_all(&mut self) {
        let names: Vec<String> = self
            .preferences()
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        self.choose(&names, false);
    }

    /// Forgets every choice, as after a withdrawal has been recorded and erased.
    pub fn forget(&mut self) {
        self.choices.clear();
    }

    /// Whether `category` is granted now.
    pub fn granted(&self, category: &str) -> bool {
        match self.choices.iter().find(|(name, _)| name == category) {
            Some((_, granted)) => *granted,
            None => self.mode == Mode::OptOut && !self.objection,
        }
    }

    /// What the state allows.
    pub fn status(&self) -> Status {
        if self.required.iter().all(|name| self.granted(name)) {
            return Status::Allowed;
        }
        let undecided = self
            .required
            .iter()
            .any(|name| !self.choices.iter().any(|(chosen, _)| chosen == name));
        if self.mode == Mode::OptIn && undecided {
            Status::Pending
        } else {
            Status::Refused
        }
    }

    /// Every known category (configured or chosen) and whether it is granted, in the order
    /// they became known.
    pub fn preferences(&self) -> Vec<(String, bool)> {
        let mut names = self.known.clone();
        for (name, _) in &self.choices {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
            .into_iter()
            .map(|name| {
                let granted = self.granted(&name);
                (name, granted)
            })
            .collect()
    }

    /// The preferences as `context.consent`: `{"categoryPreferences":{…}}`.
    pub fn to_json(&self) -> String {
        let mut preferences = Object::new();
        for (name, granted) in self.preferences() {
            preferences.named_boolean(&name, granted);
        }
        Object::new()
            .raw("categoryPreferences", &preferences.finish())
            .finish()
    }

    /// The explicit choices as stored text: `name=1` or `name=0`, one per line.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        for (name, granted) in &self.choices {
            text.push_str(name);
            text.push_str(if *granted { "=1\n" } else { "=0\n" });
        }
        text
    }

    /// Restores choices from [`Consent::encode`]'s text; unreadable lines are skipped.
    pub fn restore(&mut self, text: &str) {
        for line in json::lines(text) {
            let choice = match (line.strip_suffix("=1"), line.strip_suffix("=0")) {
                (Some(name), _) => (name, true),
                (_, Some(name)) => (name, false),
                _ => continue,
            };
            if !choice.0.is_empty() {
                self.choose(&[choice.0.to_owned()], choice.1);
            }
        }
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn consent(mode: Mode, objection: bool) -> Consent {
        Consent::new(
            mode,
            vec!["analytics".into(), "ads".into()],
            vec!["analytics".into()],
            objection,
        )
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|name| (*name).to_owned()).collect()
    }

    #[test]
    fn opt_in_waits_for_a_grant_and_a_deny_refuses() {
        let mut state = consent(Mode::OptIn, false);
        assert_eq!(state.status(), Status::Pending);

        state.choose(&names(&["ads"]), true);
        assert_eq!(
            state.status(),
            Status::Pending,
            "ads is not the required one"
        );

        state.choose(&names(&["analytics"]), true);
        assert_eq!(state.status(), Status::Allowed);

        state.choose(&names(&["analytics"]), false);
        assert_eq!(state.status(), Status::Refused);
    }

    #[test]
    fn opt_out_allows_until_an_objection_and_a_grant_overrides_the_signal() {
        assert_eq!(consent(Mode::OptOut, false).status(), Status::Allowed);

        let mut signalled = consent(Mode::OptOut, true);
        assert_eq!(signalled.status(), Status::Refused);
        signalled.choose(&names(&["analytics"]), true);
        assert_eq!(signalled.status(), Status::Allowed);

        let mut denied = consent(Mode::OptOut, false);
        denied.choose(&names(&["analytics"]), false);
        assert_eq!(denied.status(), Status::Refused);
    }

    #[test]
    fn preferences_list_every_known_category_as_json() {
        let mut state = consent(Mode::OptIn, false);

        state.choose(&names(&["analytics", "surveys"]), true);

        assert_eq!(
            state.to_json(),
            r#"{"categoryPreferences":{"analytics":true,"ads":false,"surveys":true}}"#
        );
    }

    #[test]
    fn a_stored_category_with_quotes_and_control_characters_still_makes_valid_json() {
        let mut state = consent(Mode::OptIn, false);

        state.restore("garbage\n=1\nanalytics=1\nads\"\\\u{1}=1\n");
        let json: serde_json::Value = serde_json::from_str(&state.to_json()).unwrap();

        assert_eq!(state.status(), Status::Allowed);
        assert_eq!(json["categoryPreferences"]["ads\"\\\u{1}"], true);
        assert_eq!(json["categoryPreferences"]["analytics"], true);
    }

    #[test]
    fn deny_all_then_forget_returns_to_undecided() {
        let mut state = consent(Mode::OptIn, false);
        state.choose(&names(&["analytics", "ads"]), true);

        state.deny_all();
        assert!(state.preferences().iter().all(|(_, granted)| !granted));
        state.forget();

        assert_eq!(state.status(), Status::Pending);
    }

    #[test]
    fn choosing_the_same_again_changes_nothing() {
        let mut state = consent(Mode::OptIn, false);

        assert!(state.choose(&names(&["analytics"]), true));
        assert!(!state.choose(&names(&["analytics"]), true));
    }

    proptest! {
        #[test]
        fn stored_choices_restore_to_the_same_state(
            choices in prop::collection::vec(("[a-z_]{1,8}", any::<bool>()), 0..8),
            opt_out in any::<bool>(),
        ) {
            let mode = if opt_out { Mode::OptOut } else { Mode::OptIn };
            let mut state = consent(mode, false);
            for (name, granted) in &choices {
                state.choose(core::slice::from_ref(name), *granted);
            }

            let mut restored = consent(mode, false);
            restored.restore(&state.encode());

            prop_assert_eq!(restored.preferences(), state.preferences());
            prop_assert_eq!(restored.status(), state.status());
        }

        #[test]
        fn preferences_are_valid_json_whatever_the_category_names(
            choices in prop::collection::vec((any::<String>(), any::<bool>()), 0..6),
        ) {
            let mut state = consent(Mode::OptIn, false);
            for (name, granted) in &choices {
                state.choose(core::slice::from_ref(name), *granted);
            }

            let json: serde_json::Value = serde_json::from_str(&state.to_json()).unwrap();

            let listed = json["categoryPreferences"].as_object().unwrap();
            prop_assert_eq!(listed.len(), state.preferences().len());
            for (name, granted) in state.preferences() {
                prop_assert_eq!(&listed[&name], &serde_json::Value::Bool(granted));
            }
        }

        #[test]
        fn allowed_means_every_required_category_is_granted(
            choices in prop::collection::vec((prop::sample::select(vec!["analytics", "ads"]), any::<bool>()), 0..6),
            opt_out in any::<bool>(),
            objection in any::<bool>(),
        ) {
            let mode = if opt_out { Mode::OptOut } else { Mode::OptIn };
            let mut state = consent(mode, objection);
            for (name, granted) in &choices {
                state.choose(&[(*name).to_owned()], *granted);
            }

            let analytics = state.granted("analytics");
            prop_assert_eq!(state.status() == Status::Allowed, analytics);
            if !opt_out && !analytics {
                let decided = choices.iter().any(|(name, _)| *name == "analytics");
                prop_assert_eq!(state.status() == Status::Pending, !decided);
            }
        }
    }
}
