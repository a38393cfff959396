//! The SDK's state: consent, who the visitor is, and what waits to be sent.
//!
//! [`Sdk`] takes each [`Call`] and, depending on consent, turns it into a wire message and
//! queues it, holds it in memory until the visitor decides, or drops it. It mirrors what
//! must outlive the page into a [`Store`], but only once consent allows, and erases it on
//! withdrawal. It neither sends nor schedules anything itself: the browser bindings decide
//! when to flush, perform the requests and report each outcome through [`Sdk::settle`].
//!
//! Storage keys, all under `ebb.`: `consent` (the choices), `anon`, `user`, `hash` and
//! `traits` (the identity), `queue.<tab>` and `live.<tab>` (each tab's queue and when the
//! tab last wrote it); `sessionStorage` holds `ebb.tab`, the tab's id, which survives a
//! reload of that tab. Each tab writes only its own queue, so two tabs never send the same
//! message; the queue of a tab that closed (or went quiet for [`Sdk::ORPHAN_AFTER_MS`]) is
//! adopted by the next tab that looks.

use alloc::collections::VecDeque;

use crate::config::Mode;
use crate::consent::{Consent, Status};
use crate::delivery::{Backoff, Outcome};
use crate::environment::SteadyClock;
use crate::json::{self, Object};
use crate::prelude::*;
use crate::queue::{Batch, Queue, Settled};
use crate::store::Store;
use crate::wire::{self, MAX_ID_CHARS, MAX_MESSAGE_BYTES};
use crate::{ids, Config, Environment, Error, Fields, Page, Result};

/// The name the SDK gives itself in `context.library`.
pub const LIBRARY_NAME: &str = "ebb-sdk";

/// The SDK's version, sent in `context.library`.
pub const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The event that records a change of consent, as Segment's consent tooling names it.
pub const CONSENT_EVENT: &str = "Segment Consent Preference Updated";

const CONSENT_KEY: &str = "ebb.consent";
const ANONYMOUS_ID_KEY: &str = "ebb.anon";
const USER_ID_KEY: &str = "ebb.user";
const USER_HASH_KEY: &str = "ebb.hash";
const TRAITS_KEY: &str = "ebb.traits";
const QUEUE_PREFIX: &str = "ebb.queue.";
const LIVE_PREFIX: &str = "ebb.live.";
const TAB_KEY: &str = "ebb.tab";

/// What a call records, with its arguments checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// `identify(userId?, traits?)`, with an optional identity-verification hash.
    Identify {
        /// The site's id for the user; `None` keeps the current one.
        user_id: Option<String>,
        /// Traits to merge into those known.
        traits: Fields,
        /// `context.userHash` from here on.
        user_hash: Option<String>,
    },
    /// `track(event, properties?)`.
    Track {
        /// What happened.
        event: String,
        /// Details of it.
        properties: Fields,
    },
    /// `page(name?, properties?)`.
    Page {
        /// The page's name.
        name: Option<String>,
        /// Details of the view.
        properties: Fields,
    },
    /// `group(groupId, traits?)`.
    Group {
        /// The group's id.
        group_id: String,
        /// Attributes of the group.
        traits: Fields,
    },
    /// `alias(userId, previousId?)`.
    Alias {
        /// The new id.
        user_id: String,
        /// The id it replaces; default: the current user id, else the anonymous id.
        previous_id: Option<String>,
    },
    /// `respond(surveyId, answers)`.
    Response {
        /// The survey answered.
        survey_id: String,
        /// The answers, keyed by question.
        answers: Fields,
    },
}

/// One call of the page, with when and where it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// What it records.
    pub payload: Payload,
    /// When it was made (ISO-8601); `None` means now.
    pub timestamp: Option<String>,
    /// The page it was made on; `None` means the current one.
    pub page: Option<Page>,
}

impl Call {
    /// A call made now, on the current page.
    pub fn now(payload: Payload) -> Self {
        Self {
            payload,
            timestamp: None,
            page: None,
        }
    }
}

/// What became of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Queued for sending.
    Queued,
    /// Held in memory until consent is decided.
    Held,
    /// Dropped: consent is refused.
    Ignored,
}

/// A snapshot of the consent state, for `consent.state()` and the change event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentState {
    /// The consent mode.
    pub mode: Mode,
    /// What the state allows.
    pub status: Status,
    /// Every known category and whether it is granted.
    pub preferences: Vec<(String, bool)>,
    /// Whether a privacy signal (GPC, or DNT when honoured) objects.
    pub objection: bool,
}

/// A `context` written for the current page, with what it was written from.
#[derive(Debug)]
struct Context {
    page: Option<Page>,
    user_hash: Option<String>,
    json: String,
}

/// The state of one loaded SDK.
#[derive(Debug)]
pub struct Sdk<E, S> {
    config: Config,
    env: E,
    /// The time of timestamps, `sentAt` and retries; see [`SteadyClock`].
    clock: SteadyClock,
    store: S,
    consent: Consent,
    /// `context.consent` as JSON, rewritten on each change of consent: every message
    /// carries it, and writing it per message was a fifth of the cost of `track`.
    consent_json: String,
    /// The `context` of messages on the current page, written again only when the page,
    /// the consent or the user hash changed, for the same reason.
    context: Option<Context>,
    gpc: bool,
    anonymous_id: Option<String>,
    user_id: Option<String>,
    user_hash: Option<String>,
    traits: String,
    pending: VecDeque<Call>,
    queue: Queue,
    backoff: Backoff,
    retry_at_ms: f64,
    /// When the retry the collector asked for with `Retry-After` is due (0 when it asked
    /// for none): `flush()` waits for it too, where it goes ahead of the backoff.
    asked_at_ms: f64,
    /// Bytes handed to `keepalive` requests by [`Sdk::leave`] while requests are under way:
    /// a page fires both `pagehide` and `visibilitychange` as it goes, and the second
    /// flush must not count on the budget the first one used.
    leaving: usize,
    tab: Option<String>,
    persisting: bool,
    /// Since `pagehide`, until the page is shown again: the tab counts as closed, and
    /// storing the queue (as the `visibilitychange` that follows `pagehide` does) must not
    /// mark it live again, or no tab would take the queue over for ten minutes.
    closed: bool,
    dirty: bool,
    /// Whether the last write of the queue to storage went through.
    queue_stored: bool,
    storage_failed: bool,
}

impl<E: Environment, S: Store> Sdk<E, S> {
    /// A tab whose queue was not written for this long counts as gone, and its queue is
    /// adopted: ten minutes, far longer than the longest retry delay.
    pub const ORPHAN_AFTER_MS: f64 = 10.0 * 60.0 * 1000.0;

    /// What the requests of a page going away may carry in all: browsers refuse a
    /// `keepalive` fetch or a beacon that would put more than 64 KiB in flight.
    pub const LEAVE_BUDGET: usize = 64 * 1024;

    /// Starts the SDK with `config`: restores consent choices stored earlier and, if they
    /// (or the mode) allow tracking, the identity and this tab's queue.
    ///
    /// # Errors
    ///
    /// [`Error::NoRandomSource`] when tracking is allowed and no id can be minted.
    pub fn new(config: Config, env: E, store: S) -> Result<Self> {
        let gpc = env.global_privacy_control();
        let objection = gpc || (config.honor_dnt && env.do_not_track());
        let mut consent = Consent::new(
            config.mode,
            config.categories.clone(),
            config.required.clone(),
            objection,
        );
        let stored_consent = store.get(CONSENT_KEY);
        if let Some(stored) = &stored_consent {
            consent.restore(stored);
        }

        let mut sdk = Self {
            queue: Queue::new(config.max_queue_bytes),
            backoff: Backoff::new(config.retry_base_ms, config.retry_max_ms),
            user_hash: config.user_hash.clone(),
            config,
            env,
            clock: SteadyClock::default(),
            store,
            consent_json: consent.to_json(),
            context: None,
            consent,
            gpc,
            anonymous_id: None,
            user_id: None,
            traits: "{}".to_owned(),
            pending: VecDeque::new(),
            retry_at_ms: 0.0,
            asked_at_ms: 0.0,
            leaving: 0,
            tab: None,
            persisting: false,
            closed: false,
            dirty: false,
            queue_stored: false,
            storage_failed: false,
        };
        // A visitor who consented earlier keeps their identity and queue, even after denying
        // since (the queue still holds what was recorded with consent); so does an opt-out
        // visitor who never objected. A stored withdrawal left no identity to keep.
        let consented_before =
            stored_consent.is_some() && sdk.store.get(ANONYMOUS_ID_KEY).is_some();
        if sdk.consent.status() == Status::Allowed || consented_before {
            sdk.activate()?;
        }
        Ok(sdk)
    }

    /// The settings the SDK was loaded with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The visitor's anonymous id, once tracking was allowed.
    pub fn anonymous_id(&self) -> Option<&str> {
        self.anonymous_id.as_deref()
    }

    /// The user id given to the last `identify` that named one.
    pub fn user_id(&self) -> Option<&str> {
        self.user_id.as_deref()
    }

    /// The store the SDK mirrors its state into.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Ends the SDK, handing back its store (what the next page load would find).
    pub fn into_store(self) -> S {
        self.store
    }

    /// Whether a write to storage failed (the SDK then works from memory alone).
    pub fn storage_failed(&self) -> bool {
        self.storage_failed
    }

    /// Calls held until consent is decided.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Records a call as consent allows.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a bad argument, [`Error::MessageTooLarge`] for a
    /// message over the collector's limit, [`Error::NoRandomSource`]. Nothing changes when
    /// it fails.
    pub fn record(&mut self, mut call: Call) -> Result<Recorded> {
        check(&call.payload)?;
        if call.timestamp.is_none() {
            call.timestamp = Some(self.now());
        }

        match self.consent.status() {
            Status::Allowed => {
                self.apply(&call)?;
                Ok(Recorded::Queued)
            }
            Status::Pending => {
                if call.page.is_none() {
                    call.page = self.env.page();
                }
                if self.pending.len() >= self.config.max_pending {
                    // Counted like the queue's own drops: the count travels as
                    // `context.dropped` on the first batch sent once consent is granted.
                    self.pending.pop_front();
                    self.queue.count_dropped(1);
                }
                self.pending.push_back(call);
                Ok(Recorded::Held)
            }
            Status::Refused => Ok(Recorded::Ignored),
        }
    }

    /// Grants `categories`. When that allows tracking, the identity is minted or restored,
    /// the change is recorded, and the held calls are queued with their own timestamps.
    ///
    /// # Errors
    ///
    /// [`Error::NoRandomSource`] when no id can be minted.
    pub fn grant(&mut self, categories: &[String]) -> Result<bool> {
        let changed = self.consent.choose(categories, true);
        self.consent_changed();
        if self.consent.status() == Status::Allowed {
            if !self.persisting {
                self.activate()?;
            }
            if changed {
                self.record_consent()?;
            }
            self.save_consent();
            while let Some(call) = self.pending.pop_front() {
                // A held call that fails now (too large after merging traits) cannot be
                // reported to its caller any more; it is dropped, and counted as dropped.
                if self.apply(&call).is_err() {
                    self.queue.count_dropped(1);
                }
            }
        } else if changed && self.persisting {
            self.record_consent()?;
            self.save_consent();
        }
        Ok(changed)
    }

    /// Denies `categories`. When that refuses tracking, the held calls are dropped. A
    /// visitor who had consented gets the change recorded at the collector.
    ///
    /// # Errors
    ///
    /// [`Error::NoRandomSource`] when no message id can be minted.
    pub fn deny(&mut self, categories: &[String]) -> Result<bool> {
        let changed = self.consent.choose(categories, false);
        self.consent_changed();
        if self.consent.status() == Status::Refused {
            self.pending.clear();
        }
        if changed && self.persisting {
            self.record_consent()?;
            self.save_consent();
        }
        Ok(changed)
    }

    /// Withdraws consent: denies every category, erases the queue, the held calls and the
    /// stored identity from the browser, and queues one withdrawal record (in memory only)
    /// for a visitor who had an identity. In opt-out mode the denial itself stays stored,
    /// or tracking would resume on the next page.
    ///
    /// # Errors
    ///
    /// [`Error::NoRandomSource`] when no message id can be minted.
    pub fn withdraw(&mut self) -> Result<()> {
        let had_identity = self.anonymous_id.is_some() || self.user_id.is_some();
        self.consent.deny_all();
        self.consent_changed();
        self.pending.clear();
        self.queue.clear();
        if had_identity {
            self.record_consent()?;
        }

        for key in self.store.keys() {
            if key.starts_with("ebb.") {
                self.store.remove(&key);
            }
        }
        self.store.session_remove(TAB_KEY);
        self.persisting = false;
        self.dirty = false;
        self.tab = None;
        self.anonymous_id = None;
        self.user_id = None;
        self.user_hash = self.config.user_hash.clone();
        self.traits = "{}".to_owned();
        if self.consent.mode() == Mode::OptOut {
            let encoded = self.consent.encode();
            self.write(CONSENT_KEY, &encoded);
        }
        Ok(())
    }

    /// Forgets the user (id, traits, hash) and, if tracking is allowed, mints a new
    /// anonymous id. The queue stays.
    ///
    /// # Errors
    ///
    /// [`Error::NoRandomSource`] when no id can be minted.
    pub fn reset(&mut self) -> Result<()> {
        self.user_id = None;
        self.user_hash = None;
        self.traits = "{}".to_owned();
        self.anonymous_id = None;
        if self.persisting {
            self.anonymous_id = Some(self.mint()?);
            self.save_identity();
        }
        Ok(())
    }

    /// The consent state now.
    pub fn consent_state(&self) -> ConsentState {
        ConsentState {
            mode: self.consent.mode(),
            status: self.consent.status(),
            preferences: self.consent.preferences(),
            objection: self.consent.objection(),
        }
    }

    /// Messages waiting to be sent (not counting those in flight).
    pub fn queued(&self) -> usize {
        self.queue.waiting()
    }

    /// Whether the queue reaches `flushAt` messages waiting or `flushBytes` in all.
    pub fn should_flush(&self) -> bool {
        self.queue.waiting() >= self.config.flush_at
            || (self.queue.waiting() > 0 && self.queue.bytes() >= self.config.flush_bytes)
    }

    /// Whether any request is under way.
    pub fn flying(&self) -> bool {
        self.queue.flying()
    }

    /// Milliseconds until a retry is due (0 when nothing holds sending back).
    pub fn retry_wait_ms(&self) -> f64 {
        (self.retry_at_ms - self.now_ms()).max(0.0)
    }

    /// Milliseconds until the retry the collector asked for with `Retry-After` is due (0
    /// when it asked for none). A `flush()` goes ahead of the backoff, not of this: a
    /// rate-limited collector would refuse it again.
    pub fn asked_wait_ms(&self) -> f64 {
        (self.asked_at_ms - self.now_ms()).max(0.0)
    }

    /// The mark a flush waits for: everything queued before it.
    pub fn flush_mark(&self) -> u64 {
        self.queue.next_seq()
    }

    /// Whether messages queued before `mark` are still waiting or under way.
    pub fn holds_before(&self, mark: u64) -> bool {
        self.queue.holds_before(mark)
    }

    /// Takes the oldest waiting messages into a batch of at most `max_bytes`, stamped with
    /// `sentAt`, or `None` when nothing waits.
    pub fn next_batch(&mut self, max_bytes: usize) -> Option<Batch> {
        let sent_at = self.now();
        let max_bytes = max_bytes.min(self.config.flush_bytes);

        self.queue.take(
            self.config.flush_at,
            max_bytes,
            &self.config.write_key,
            &sent_at,
        )
    }

    /// The page is going away: hands every waiting message to `send(batch, keepalive)` in
    /// batches that requests outliving the page may carry, then stores what is left.
    ///
    /// Browsers refuse such requests (`fetch` with `keepalive` and `sendBeacon` alike) past
    /// [`Sdk::LEAVE_BUDGET`] bytes in flight, so the batches are cut to what is left of it
    /// (after an earlier leave whose requests are still under way, too), whatever
    /// `flushBytes` allows, and go with `keepalive` (settled later, by their answer). Past
    /// the budget, each batch (at most the whole budget) is offered as a beacon
    /// (`keepalive` false): `send` returns whether the browser took it. The first refusal
    /// ends the flush; what it left stays stored for the next page.
    pub fn leave(&mut self, mut send: impl FnMut(&Batch, bool) -> bool) {
        if !self.queue.flying() {
            self.leaving = 0;
        }
        let mut room = Self::LEAVE_BUDGET.checked_sub(self.leaving);
        while let Some(batch) = self.next_batch(room.unwrap_or(Self::LEAVE_BUDGET)) {
            let size = batch.body().len();
            if let Some(left) = room.filter(|left| size <= *left) {
                room = Some(left - size);
                self.leaving += size;
                send(&batch, true);
                continue;
            }
            room = None;
            if send(&batch, false) {
                self.settle(batch.id(), &Outcome::Delivered);
            } else {
                self.settle(
                    batch.id(),
                    &Outcome::Retry {
                        status: 0,
                        retry_after_ms: Some(0),
                    },
                );
                break;
            }
        }
        self.save();
    }

    /// Records how the request for `batch` ended; returns the delay before the next try
    /// when it is to be retried.
    pub fn settle(&mut self, batch: u64, outcome: &Outcome) -> Option<u32> {
        self.dirty = true;
        match outcome {
            Outcome::Delivered | Outcome::Refused { .. } => {
                self.queue.settle(batch, Settled::Done);
                self.backoff.succeeded();
                self.retry_at_ms = 0.0;
                None
            }
            Outcome::Retry { retry_after_ms, .. } => {
                self.queue.settle(batch, Settled::Retry);
                let random = self.random_u32();
                let delay = self.backoff.failed(random, *retry_after_ms);
                self.retry_at_ms = self.now_ms() + f64::from(delay);
                self.asked_at_ms = retry_after_ms.map_or(0.0, |_| self.retry_at_ms);
                Some(delay)
            }
        }
    }

    /// Lets a retry go now (the browser came back online).
    pub fn retry_now(&mut self) {
        self.retry_at_ms = 0.0;
    }

    /// Whether the stored queue is behind the one in memory.
    pub fn dirty(&self) -> bool {
        self.dirty
    }

    /// Writes the queue to storage, when it changed and consent allows storing.
    pub fn save(&mut self) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let Some(tab) = self.tab.clone() else {
            return;
        };
        let encoded = self.queue.encode();
        self.queue_stored = self.write(&key(QUEUE_PREFIX, &tab), &encoded);
        if !self.closed {
            self.touch_live(&tab);
        }
    }

    /// The page is going away (or into the back-forward cache): stores the queue and marks
    /// the tab as closed, so that a reload of it, or another tab, takes the queue over.
    pub fn page_hidden(&mut self) {
        self.dirty = true;
        self.save();
        if let Some(tab) = &self.tab {
            self.store.remove(&key(LIVE_PREFIX, tab));
        }
        self.closed = true;
    }

    /// The page came back from the back-forward cache: takes the tab's stored queue up
    /// again, as another tab may have adopted it meanwhile, unless storing it failed.
    pub fn page_shown(&mut self) {
        self.closed = false;
        let Some(tab) = self.tab.clone() else {
            return;
        };
        // A queue that storage refused when the page was hidden lives in memory alone; the
        // stored one is older, and taking it up would lose what came since.
        if self.queue_stored {
            self.queue.clear();
            if let Some(stored) = self.store.get(&key(QUEUE_PREFIX, &tab)) {
                self.queue.restore(&stored);
            }
        }
        self.touch_live(&tab);
    }

    /// Takes over the queues of tabs that closed or went quiet; returns how many messages
    /// were adopted.
    pub fn adopt_orphans(&mut self) -> usize {
        let Some(own) = self.tab.clone() else {
            return 0;
        };
        let now = self.env.now_ms();
        let before = self.queue.waiting();

        for name in self.store.keys() {
            let Some(tab) = name.strip_prefix(QUEUE_PREFIX) else {
                continue;
            };
            let live = self
                .store
                .get(&key(LIVE_PREFIX, tab))
                .and_then(|at| at.parse::<u64>().ok());
            if tab == own || live.is_some_and(|at| now - (at as f64) < Self::ORPHAN_AFTER_MS) {
                continue;
            }
            if let Some(stored) = self.store.get(&name) {
                self.queue.restore(&stored);
            }
            self.store.remove(&name);
            self.store.remove(&key(LIVE_PREFIX, tab));
        }

        let adopted = self.queue.waiting().saturating_sub(before);
        if adopted > 0 {
            self.dirty = true;
        }
        adopted
    }

    /// From the first moment tracking is allowed: restores or mints the identity, claims
    /// this tab's queue, and stores what must outlive the page.
    fn activate(&mut self) -> Result<()> {
        self.persisting = true;

        let stored_id = |store: &S, key: &str| store.get(key).filter(|id| valid_id(id));
        self.user_id = stored_id(&self.store, USER_ID_KEY);
        self.user_hash = stored_id(&self.store, USER_HASH_KEY).or(self.user_hash.take());
        if let Some(traits) = self.store.get(TRAITS_KEY).filter(|t| json::is_object(t)) {
            self.traits = traits;
        }
        self.anonymous_id = match stored_id(&self.store, ANONYMOUS_ID_KEY) {
            Some(id) => Some(id),
            None => Some(self.mint()?),
        };
        self.save_identity();

        self.claim_tab()?;
        Ok(())
    }

    /// Finds this tab's id (kept across reloads in `sessionStorage`) and its stored queue.
    /// A tab id whose queue another live tab is writing (a duplicated tab copies
    /// `sessionStorage`) is replaced by a new one, unless this load is a reload.
    ///
    /// Limitation: a tab that crashed and is opened again by other means than a reload
    /// cannot tell itself from a duplicate; its queue waits [`Sdk::ORPHAN_AFTER_MS`] before
    /// a tab adopts it.
    fn claim_tab(&mut self) -> Result<()> {
        let now = self.env.now_ms();
        let reloaded = self.env.reloaded();
        let live_elsewhere = |store: &S, tab: &str| {
            store
                .get(&key(LIVE_PREFIX, tab))
                .and_then(|at| at.parse::<u64>().ok())
                .is_some_and(|at| now - (at as f64) < Self::ORPHAN_AFTER_MS)
        };
        let tab = match self.store.session_get(TAB_KEY) {
            Some(tab) if !tab.is_empty() && (reloaded || !live_elsewhere(&self.store, &tab)) => tab,
            _ => {
                let bytes = self.env.random_bytes()?;
                let mut tab = ids::uuid_v4(bytes);
                tab.truncate(8);
                tab
            }
        };
        if !self.store.session_set(TAB_KEY, &tab) {
            self.storage_failed = true;
        }

        if let Some(stored) = self.store.get(&key(QUEUE_PREFIX, &tab)) {
            self.queue.restore(&stored);
        }
        self.touch_live(&tab);
        self.tab = Some(tab);
        self.dirty = true;
        Ok(())
    }

    fn touch_live(&mut self, tab: &str) {
        let mut at = String::new();
        json::push_number(&mut at, self.env.now_ms().max(0.0) as u64);
        self.write(&key(LIVE_PREFIX, tab), &at);
    }

    /// Builds the message of an allowed call, queues it, and updates the identity.
    fn apply(&mut self, call: &Call) -> Result<()> {
        let mut user_id = self.user_id.clone();
        let mut traits = None;
        let mut user_hash = self.user_hash.clone();
        if let Payload::Identify {
            user_id: new_id,
            traits: given,
            user_hash: new_hash,
        } = &call.payload
        {
            let same_user = new_id.is_none() || *new_id == self.user_id;
            let base = if same_user {
                self.traits.as_str()
            } else {
                "{}"
            };
            traits = Some(json::merge(base, given.as_str()));
            if new_id.is_some() {
                user_id.clone_from(new_id);
            }
            if new_hash.is_some() {
                user_hash.clone_from(new_hash);
            } else if !same_user {
                user_hash = self.config.user_hash.clone();
            }
        }

        let message = self.build(
            call,
            user_id.as_deref(),
            traits.as_deref(),
            user_hash.as_deref(),
        )?;
        if message.len() > MAX_MESSAGE_BYTES {
            return Err(Error::MessageTooLarge {
                bytes: message.len(),
            });
        }
        self.queue.push(message);
        self.dirty = true;

        if let Some(traits) = traits {
            self.user_id = user_id;
            self.user_hash = user_hash;
            self.traits = traits;
            self.save_identity();
        }
        Ok(())
    }

    /// The wire message of `call`: ids, time, the fields of its type, and `context` last.
    fn build(
        &mut self,
        call: &Call,
        user_id: Option<&str>,
        traits: Option<&str>,
        user_hash: Option<&str>,
    ) -> Result<String> {
        let message_id = self.mint()?;
        let (kind, user_id) = match &call.payload {
            Payload::Identify { .. } => (wire::IDENTIFY, user_id),
            Payload::Track { .. } => (wire::TRACK, user_id),
            Payload::Page { .. } => (wire::PAGE, user_id),
            Payload::Group { .. } => (wire::GROUP, user_id),
            Payload::Alias { user_id: new, .. } => (wire::ALIAS, Some(new.as_str())),
            Payload::Response { .. } => (wire::RESPONSE, user_id),
        };

        let context = self
            .context
            .as_ref()
            .map_or(512, |context| context.json.len());
        let capacity = 192 + context + payload_len(&call.payload) + traits.map_or(0, str::len);
        let mut message = Object::with_capacity(capacity);
        message
            .string("type", kind)
            .string("messageId", &message_id)
            .optional("anonymousId", self.anonymous_id.as_deref())
            .optional("userId", user_id)
            .optional("timestamp", call.timestamp.as_deref());
        match &call.payload {
            Payload::Identify { .. } => {
                message.raw("traits", traits.unwrap_or("{}"));
            }
            Payload::Track { event, properties } => {
                message
                    .string("event", event)
                    .raw("properties", properties.as_str());
            }
            Payload::Page { name, properties } => {
                message
                    .optional("name", name.as_deref())
                    .raw("properties", properties.as_str());
            }
            Payload::Group { group_id, traits } => {
                message
                    .string("groupId", group_id)
                    .raw("traits", traits.as_str());
            }
            Payload::Alias { previous_id, .. } => {
                let previous = previous_id
                    .as_deref()
                    .or(self.user_id.as_deref())
                    .or(self.anonymous_id.as_deref())
                    .unwrap_or_default();
                message.string("previousId", previous);
            }
            Payload::Response { survey_id, answers } => {
                message
                    .string("surveyId", survey_id)
                    .raw("answers", answers.as_str());
            }
        }

        // A page view reads the page afresh: a single-page app changes the URL with
        // `history.pushState` and calls `page()` at once, faster than the host's cheap
        // check of `still_on` may notice.
        if matches!(call.payload, Payload::Page { .. }) {
            self.context = None;
        }
        match &call.page {
            Some(page) => {
                let context = self.context_json(Some(page), user_hash);
                message.raw("context", &context);
            }
            None => {
                message.raw("context", self.current_context(user_hash));
            }
        }
        Ok(message.finish())
    }

    /// `context` for a message: library, page, consent, privacy signal, user hash.
    fn context_json(&self, page: Option<&Page>, user_hash: Option<&str>) -> String {
        let mut context = Object::with_capacity(256 + self.consent_json.len());
        context.raw(
            "library",
            &Object::new()
                .string("name", LIBRARY_NAME)
                .string("version", LIBRARY_VERSION)
                .finish(),
        );
        if let Some(page) = page {
            context.raw("page", &page.to_json());
        }
        context.raw("consent", &self.consent_json);
        if self.gpc {
            context.boolean("gpc", true);
        }
        context.optional("userHash", user_hash);
        context.finish()
    }

    /// `context` on the current page, written again only when something in it changed.
    fn current_context(&mut self, user_hash: Option<&str>) -> &str {
        let fresh = self.context.as_ref().is_some_and(|context| {
            context.user_hash.as_deref() == user_hash && self.env.still_on(context.page.as_ref())
        });
        if !fresh {
            let page = self.env.page();
            let json = self.context_json(page.as_ref(), user_hash);
            self.context = Some(Context {
                page,
                user_hash: user_hash.map(ToOwned::to_owned),
                json,
            });
        }
        self.context
            .as_ref()
            .map_or("{}", |context| context.json.as_str())
    }

    /// Rewrites `context.consent` after a change of consent.
    fn consent_changed(&mut self) {
        self.consent_json = self.consent.to_json();
        self.context = None;
    }

    /// Queues the consent-change record: a `track` of [`CONSENT_EVENT`] whose context
    /// carries the new preferences.
    fn record_consent(&mut self) -> Result<()> {
        let call = Call {
            payload: Payload::Track {
                event: CONSENT_EVENT.to_owned(),
                properties: Fields::default(),
            },
            timestamp: Some(self.now()),
            page: None,
        };
        let (user_id, user_hash) = (self.user_id.clone(), self.user_hash.clone());
        let message = self.build(&call, user_id.as_deref(), None, user_hash.as_deref())?;
        self.queue.push(message);
        self.dirty = true;
        Ok(())
    }

    fn save_consent(&mut self) {
        if self.persisting {
            let encoded = self.consent.encode();
            self.write(CONSENT_KEY, &encoded);
        }
    }

    fn save_identity(&mut self) {
        if !self.persisting {
            return;
        }
        for (name, value) in [
            (ANONYMOUS_ID_KEY, self.anonymous_id.clone()),
            (USER_ID_KEY, self.user_id.clone()),
            (USER_HASH_KEY, self.user_hash.clone()),
        ] {
            match value {
                Some(value) => {
                    self.write(name, &value);
                }
                None => self.store.remove(name),
            }
        }
        let traits = self.traits.clone();
        self.write(TRAITS_KEY, &traits);
    }

    /// Writes to storage; a refusal leaves the SDK working from memory. Returns whether
    /// storage took it.
    fn write(&mut self, name: &str, value: &str) -> bool {
        let written = self.store.set(name, value);
        self.storage_failed |= !written;
        written
    }

    /// Now by the SDK's [`SteadyClock`], in milliseconds.
    fn now_ms(&self) -> f64 {
        self.clock.at(self.env.now_ms())
    }

    /// Now by the SDK's [`SteadyClock`], as ISO-8601.
    fn now(&self) -> String {
        crate::iso8601(self.now_ms())
    }

    fn mint(&mut self) -> Result<String> {
        Ok(ids::uuid_v4(self.env.random_bytes()?))
    }

    fn random_u32(&mut self) -> u32 {
        let bytes = self.env.random_bytes().unwrap_or([0x55; 16]);
        u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
    }
}

/// The bytes of a call's own fields, for sizing its message up front.
fn payload_len(payload: &Payload) -> usize {
    match payload {
        Payload::Identify { traits, .. } | Payload::Group { traits, .. } => traits.as_str().len(),
        Payload::Track { event, properties } => event.len() + properties.as_str().len(),
        Payload::Page { properties, .. } => properties.as_str().len(),
        Payload::Alias { user_id, .. } => user_id.len(),
        Payload::Response { answers, .. } => answers.as_str().len(),
    }
}

fn key(prefix: &str, tab: &str) -> String {
    let mut name = String::from(prefix);
    name.push_str(tab);
    name
}

/// Whether `id` is not empty and at most [`MAX_ID_CHARS`] characters long.
fn valid_id(id: &str) -> bool {
    // Counting the bytes that start a character takes less code than `chars()`.
    let chars = id.bytes().filter(|byte| byte & 0xC0 != 0x80).count();
    (1..=MAX_ID_CHARS).contains(&chars)
}

/// Checks the arguments every type needs.
fn check(payload: &Payload) -> Result<()> {
    let id = |value: &str, what: &'static str| {
        if !valid_id(value) {
            return Err(Error::InvalidArgument {
                what,
                why: "must be a non-empty string of at most 1000 characters",
            });
        }
        Ok(())
    };
    match payload {
        Payload::Identify {
            user_id: Some(user_id),
            ..
        } => id(user_id, "userId"),
        Payload::Identify { .. } | Payload::Page { .. } => Ok(()),
        Payload::Track { event, .. } if event.is_empty() => Err(Error::InvalidArgument {
            what: "event",
            why: "must be a non-empty string naming what happened",
        }),
        Payload::Track { .. } => Ok(()),
        Payload::Group { group_id, .. } => id(group_id, "groupId"),
        Payload::Alias {
            user_id,
            previous_id,
        } => {
            id(user_id, "userId")?;
            previous_id
                .as_deref()
                .map_or(Ok(()), |p| id(p, "previousId"))
        }
        Payload::Response { survey_id, .. } => id(survey_id, "surveyId"),
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests;
