//! Segments: the filter language that picks a group of users, and its translation to SQL.
//!
//! A segment is the set of users of one environment that match a filter. Operators write
//! filters as JSON to preview, export or delete such a group. This module owns the
//! language: [`Filter::parse`] checks a filter against the grammar and the limits below,
//! and [`Filter::to_sql`] compiles it into one boolean SQL expression over `users u` for
//! either backend, with every value as a bound parameter. Running the query, paging and
//! counting are left to [`crate::store`].
//!
//! # The language
//!
//! A filter is one condition, a JSON object:
//!
//! ```json
//! {"all": [
//!   {"trait": "plan", "equals": "pro"},
//!   {"trait": "age", "gte": 18, "lt": 65},
//!   {"trait": ["address", "city"], "contains": "lond"},
//!   {"lastSeenDaysAgo": {"atMost": 30}},
//!   {"not": {"responded": "nps-2026"}},
//!   {"consent": "analytics", "granted": true}
//! ]}
//! ```
//!
//! Each condition selects users as follows (`c` is a condition, `k` a trait key, `t` a
//! time, `d` a number of days, `b` true or false):
//!
//! - `{"all": [c, …]}`, or `{}`: those matching every `c`; everyone when empty.
//! - `{"any": [c, …]}`: those matching at least one `c`; nobody when empty.
//! - `{"not": c}`: those not matching `c`.
//! - `{"trait": k, "equals": v}`: whose trait `k` is `v`, a string, number, boolean or
//!   null, compared with its JSON type: `1` is not `"1"`, but `1` is `1.0`.
//! - `{"trait": k, "notEquals": v}`: all that `equals` would not select, **including
//!   users without the trait**.
//! - `{"trait": k, "exists": b}`: whose trait `k` is set to anything but null; with
//!   `false`, whose trait is absent or null.
//! - `{"trait": k, "contains": s}`: whose trait `k` is a string holding `s`, ignoring
//!   case; `%` and `_` are plain characters.
//! - `{"trait": k, "gt" | "gte" | "lt" | "lte": n}`: whose trait `k` is a JSON number
//!   within the bound; one lower and one upper bound may share a condition. Strings,
//!   even `"42"`, never match.
//! - `{"firstSeen": {"after": t, "before": t}}`: first seen at or after `after` and
//!   strictly before `before`; either bound may be left out. `lastSeen` likewise, for the
//!   latest activity.
//! - `{"firstSeenDaysAgo": {"atLeast": d, "atMost": d}}`: first seen at least `d` and at
//!   most `d` days of 24 hours before `now` (both inclusive; either may be left out).
//!   `lastSeenDaysAgo` likewise; its `atLeast` is the retention question.
//! - `{"responded": "survey-id"}`: who responded to that survey; `true`: to any survey;
//!   `false`: to none.
//! - `{"consent": "category", "granted": b}`: whose current consent grants the category
//!   (`true`) or explicitly denies it (`false`).
//! - `{"consentRecorded": b}`: with (`true`) or without (`false`) stored consent.
//! - `{"gpc": b}`: whose latest Global Privacy Control signal objected (`true`); with
//!   `false`, those whose signal did not, or who never sent one.
//!
//! `notEquals` counts a missing trait as different because the question an operator asks
//! ("everyone not on the pro plan") includes users who never sent a plan. Consent is the
//! other way round: a user who never answered for a category has neither granted nor
//! denied it, so `{"not": {"consent": "analytics", "granted": true}}` is the way to say
//! "everyone who has not granted analytics".
//!
//! A trait key `k` that is a string names one **top-level** key of the user's traits,
//! exactly: `"a.b"` is the key `a.b`, not a path. An array of keys walks into nested
//! objects (`["address", "city"]`), which keeps keys with dots unambiguous; array elements
//! cannot be addressed. Times are RFC 3339 (`2024-01-01T09:30:00+02:00`) or a date
//! (`2024-01-01`, midnight UTC), kept to the microsecond as PostgreSQL keeps them.
//!
//! Limits: at most [`MAX_DEPTH`] levels of nesting (the root is level 1), at most
//! [`MAX_CONDITIONS`] conditions (objects besides the root), names (trait keys, survey ids,
//! consent categories) up to [`MAX_NAME_CHARS`] characters and at most [`MAX_PATH_KEYS`]
//! keys in a path, strings to compare up to [`MAX_VALUE_CHARS`] characters, days up to
//! [`MAX_DAYS`]. No string may hold the NUL character, which PostgreSQL text cannot store.
//!
//! # Using it
//!
//! ```
//! use chrono::Utc;
//! use ebb_collector::segment::{Bind, Dialect, Filter};
//! use serde_json::json;
//!
//! let filter = Filter::parse(&json!({"trait": "plan", "equals": "pro"}))?;
//! // `$1` is the environment; the filter's parameters follow it.
//! let expr = filter.to_sql(Dialect::Postgres, 2, Utc::now());
//! let sql = format!(
//!     "SELECT u.user_id FROM users u WHERE u.environment_id = $1 AND ({})",
//!     expr.sql
//! );
//! assert!(!sql.contains("pro"));
//! assert_eq!(expr.binds, [Bind::Text("plan".into()), Bind::Json(json!("pro"))]);
//! # Ok::<(), ebb_collector::segment::FilterError>(())
//! ```
//!
//! # Limitations
//!
//! - `contains` folds case with the database's `lower()`: SQLite folds ASCII letters only,
//!   PostgreSQL follows the database's locale, so `"é"` may find `"É"` on one backend and
//!   not on the other.
//! - Traits are not indexed, so a filter on traits reads every user of the environment;
//!   time conditions can use the `(environment_id, last_seen)` index.
//! - On SQLite, times are compared as the text sqlx writes: RFC 3339 in UTC, `+00:00`,
//!   as many fraction digits as needed. That text sorts in time order (four-digit years;
//!   `+` sorts before `.` and the digits, so `…:00+00:00` comes before `…:00.5+00:00`),
//!   but a time stored in any other form would compare wrongly.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike as _, NaiveDate, SubsecRound as _, TimeDelta, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Number, Value};

/// The deepest a filter may nest; the root object is level 1.
pub const MAX_DEPTH: usize = 8;
/// The most conditions (objects besides the root) one filter may hold.
pub const MAX_CONDITIONS: usize = 100;
/// The longest trait key, survey id or consent category, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// The most keys in a nested trait path.
pub const MAX_PATH_KEYS: usize = 8;
/// The longest string to compare a trait with, in characters.
pub const MAX_VALUE_CHARS: usize = 1000;
/// The most days a `…DaysAgo` condition may reach back (about a century).
pub const MAX_DAYS: u32 = 36_500;

/// The keys that say what kind of condition an object is; exactly one per object.
const KINDS: [&str; 12] = [
    "all",
    "any",
    "not",
    "trait",
    "firstSeen",
    "lastSeen",
    "firstSeenDaysAgo",
    "lastSeenDaysAgo",
    "responded",
    "consent",
    "consentRecorded",
    "gpc",
];

/// Why a filter was refused. Each message names where in the filter the problem is, as a
/// path from `filter` (`filter.all[2].not`), and what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// A part of the filter does not follow the language.
    #[error("{at}: {message}")]
    Invalid {
        /// Where: `filter`, `filter.all[2]`, `filter.any[0].not`, …
        at: String,
        /// What is wrong, and what would be accepted.
        message: String,
    },
    /// The filter nests deeper than [`MAX_DEPTH`] levels.
    #[error("{at}: the filter nests more than {MAX_DEPTH} levels deep; flatten it")]
    TooDeep {
        /// The first condition past the limit.
        at: String,
    },
    /// The filter holds more than [`MAX_CONDITIONS`] conditions.
    #[error("{at}: the filter has more than {MAX_CONDITIONS} conditions")]
    TooManyConditions {
        /// The first condition past the limit.
        at: String,
    },
}

/// A parsed and validated segment filter.
///
/// It serialises back to the language (in a canonical form: `{}` becomes `{"all": []}`,
/// times become UTC) and deserialises through [`Filter::parse`], so a filter read with
/// serde is always valid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct Filter {
    root: Node,
}

/// The SQL dialect to compile for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite: traits and consent are JSON text, times RFC 3339 text.
    Sqlite,
    /// PostgreSQL: traits and consent are `JSONB`, times `TIMESTAMPTZ`.
    Postgres,
}

/// A compiled filter: a boolean SQL expression and the values of its parameters.
///
/// On PostgreSQL the SQL text fixes the variant of every bind, which matters because sqlx
/// prepares each SQL text once per connection with the parameter types of its first use.
/// (SQLite parameters have no declared type; there a number is an `Int` or a `Float`.)
#[derive(Debug, Clone, PartialEq)]
pub struct SqlFilter {
    /// The expression, to be placed in parentheses in a `WHERE` clause over `users u`.
    pub sql: String,
    /// The value of each parameter, in order: `binds[i]` is `$(first_param + i)`.
    pub binds: Vec<Bind>,
}

/// The value of one SQL parameter, to pass to sqlx's `.bind(…)` as the noted type.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    /// A `&str`/`String`: trait keys, JSON paths, survey ids, strings to compare, and on
    /// PostgreSQL numbers (the SQL turns them into `NUMERIC`).
    Text(String),
    /// An `f64`: a number that is not an integer (SQLite only).
    Float(f64),
    /// An `i64`: an integer (SQLite only).
    Int(i64),
    /// A `DateTime<Utc>`, so that sqlx encodes it as it encodes the stored columns.
    Time(DateTime<Utc>),
    /// A JSON value, bound as `sqlx::types::Json(value)` (PostgreSQL only: `JSONB`).
    Json(Value),
}

/// One condition of the language, validated.
#[derive(Debug, Clone, PartialEq)]
enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    Trait {
        keys: Vec<String>,
        test: TraitTest,
    },
    Seen {
        column: SeenColumn,
        range: TimeRange,
    },
    SeenDaysAgo {
        column: SeenColumn,
        days: DaysRange,
    },
    Responded(Responded),
    Consent {
        category: String,
        granted: bool,
    },
    ConsentRecorded(bool),
    Gpc(bool),
}

#[derive(Debug, Clone, PartialEq)]
enum TraitTest {
    /// A string, number, boolean or null.
    Equals(Value),
    NotEquals(Value),
    Exists(bool),
    Contains(String),
    Range {
        lower: Option<(Bound, Number)>,
        upper: Option<(Bound, Number)>,
    },
}

/// Whether a numeric bound includes its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Exclusive,
    Inclusive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SeenColumn {
    First,
    Last,
}

/// `after` is inclusive and `before` exclusive, so that ranges placed end to end neither
/// overlap nor leave gaps.
#[derive(Debug, Clone, PartialEq)]
struct TimeRange {
    after: Option<DateTime<Utc>>,
    before: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
struct DaysRange {
    at_least: Option<u32>,
    at_most: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
enum Responded {
    Survey(String),
    Any(bool),
}

impl Filter {
    /// Parses and validates a filter written in the language of the [module docs](self).
    ///
    /// # Errors
    ///
    /// [`FilterError`] naming the first problem found and where it is.
    pub fn parse(json: &Value) -> Result<Self, FilterError> {
        let mut parser = Parser { conditions: 0 };
        let root = parser.node(json, "filter", 1)?;
        Ok(Self { root })
    }

    /// Whether the filter is written to match everyone (`{}` or `{"all": []}`). A filter
    /// that matches everyone only because of the data (`{"gpc": false}`) is not noticed.
    pub fn is_everyone(&self) -> bool {
        matches!(&self.root, Node::All(nodes) if nodes.is_empty())
    }

    /// Compiles the filter into a boolean SQL expression over the table `users` aliased
    /// `u`, with parameters `$first_param`, `$first_param + 1`, … in the order of
    /// [`SqlFilter::binds`]; the next free parameter is `first_param + binds.len()`.
    ///
    /// The expression may read `u.traits`, `u.consent`, `u.gpc`, `u.first_seen` and
    /// `u.last_seen`, and query `responses r` for `u.environment_id` and `u.id`. It is
    /// never NULL. `now` anchors the `…DaysAgo` conditions, so that a preview and the
    /// deletion that follows it can agree on the moment.
    pub fn to_sql(&self, dialect: Dialect, first_param: usize, now: DateTime<Utc>) -> SqlFilter {
        let mut compiler = Compiler {
            dialect,
            next_param: first_param,
            binds: Vec::new(),
            now,
        };
        let sql = compiler.node(&self.root);
        SqlFilter {
            sql,
            binds: compiler.binds,
        }
    }
}

impl TryFrom<Value> for Filter {
    type Error = FilterError;

    fn try_from(json: Value) -> Result<Self, FilterError> {
        Self::parse(&json)
    }
}

impl From<Filter> for Value {
    fn from(filter: Filter) -> Self {
        filter.root.to_json()
    }
}

// ---------------------------------------------------------------------------------------
// Parsing

/// Reads a field that may be JSON `null` as `Some(Value::Null)`, so that `"equals": null`
/// (compare with null) differs from a missing `equals`.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

// The raw shapes of the conditions. Values stay `Value` so that a wrong type gets a message
// in the language's own terms ("`gte` needs a number") rather than serde's.

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTrait {
    #[serde(rename = "trait")]
    key: Value,
    #[serde(default, deserialize_with = "present")]
    equals: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    not_equals: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    exists: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    contains: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    gt: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    gte: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    lt: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    lte: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeRange {
    #[serde(default, deserialize_with = "present")]
    after: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    before: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawDaysRange {
    #[serde(default, deserialize_with = "present")]
    at_least: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    at_most: Option<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConsent {
    consent: Value,
    #[serde(default, deserialize_with = "present")]
    granted: Option<Value>,
}

/// Walks a filter, counting conditions across the whole tree.
struct Parser {
    conditions: usize,
}

fn invalid(at: &str, message: impl Into<String>) -> FilterError {
    FilterError::Invalid {
        at: at.to_owned(),
        message: message.into(),
    }
}

/// Reads a serde-checked shape, putting the location in front of serde's message.
fn shape<T: for<'de> Deserialize<'de>>(json: &Value, at: &str) -> Result<T, FilterError> {
    T::deserialize(json).map_err(|error| invalid(at, error.to_string()))
}

/// `a`, `b` and `c`.
fn listed(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => quoted.concat(),
    }
}

impl Parser {
    fn node(&mut self, json: &Value, at: &str, depth: usize) -> Result<Node, FilterError> {
        if depth > MAX_DEPTH {
            return Err(FilterError::TooDeep { at: at.to_owned() });
        }
        let Value::Object(object) = json else {
            return Err(invalid(
                at,
                format!(
                    "a condition must be a JSON object such as {{\"trait\": \"plan\", \
                     \"equals\": \"pro\"}}, not {}",
                    describe(json)
                ),
            ));
        };
        if object.is_empty() {
            return Ok(Node::All(Vec::new()));
        }

        let kinds: Vec<&str> = KINDS
            .into_iter()
            .filter(|kind| object.contains_key(*kind))
            .collect();
        let kind = match kinds[..] {
            [kind] => kind,
            [] => {
                // A few keys, shortened: enough to spot a typo without echoing a whole body.
                let found: Vec<String> = object
                    .keys()
                    .take(3)
                    .map(|key| key.chars().take(40).collect())
                    .collect();
                let found: Vec<&str> = found.iter().map(String::as_str).collect();
                return Err(invalid(
                    at,
                    format!(
                        "a condition needs one of {}; found only {}",
                        listed(&KINDS),
                        listed(&found)
                    ),
                ));
            }
            _ => {
                return Err(invalid(
                    at,
                    format!(
                        "{} cannot share one object; put each condition in its own \
                         object inside `all` or `any`",
                        listed(&kinds)
                    ),
                ));
            }
        };

        match kind {
            "all" | "any" => {
                let children = self.list(object, kind, at, depth)?;
                Ok(if kind == "all" {
                    Node::All(children)
                } else {
                    Node::Any(children)
                })
            }
            "not" => {
                only_key(object, "not", at)?;
                let child_at = format!("{at}.not");
                let child = self.child(&object["not"], &child_at, depth)?;
                Ok(Node::Not(Box::new(child)))
            }
            "trait" => trait_condition(json, at),
            "firstSeen" | "lastSeen" => {
                only_key(object, kind, at)?;
                let range = time_range(&object[kind], &format!("{at}.{kind}"))?;
                Ok(Node::Seen {
                    column: seen_column(kind),
                    range,
                })
            }
            "firstSeenDaysAgo" | "lastSeenDaysAgo" => {
                only_key(object, kind, at)?;
                let days = days_range(&object[kind], &format!("{at}.{kind}"))?;
                Ok(Node::SeenDaysAgo {
                    column: seen_column(kind),
                    days,
                })
            }
            "responded" => {
                only_key(object, kind, at)?;
                responded(&object[kind], at)
            }
            "consent" => consent_condition(json, at),
            "consentRecorded" => {
                only_key(object, kind, at)?;
                Ok(Node::ConsentRecorded(flag(&object[kind], kind, at)?))
            }
            "gpc" => {
                only_key(object, kind, at)?;
                Ok(Node::Gpc(flag(&object[kind], kind, at)?))
            }
            _ => unreachable!("every kind in KINDS is handled"),
        }
    }

    /// The children of `all` or `any`.
    fn list(
        &mut self,
        object: &Map<String, Value>,
        kind: &str,
        at: &str,
        depth: usize,
    ) -> Result<Vec<Node>, FilterError> {
        only_key(object, kind, at)?;
        let Value::Array(items) = &object[kind] else {
            return Err(invalid(
                at,
                format!(
                    "`{kind}` needs an array of conditions, not {}",
                    describe(&object[kind])
                ),
            ));
        };
        items
            .iter()
            .enumerate()
            .map(|(index, item)| self.child(item, &format!("{at}.{kind}[{index}]"), depth))
            .collect()
    }

    /// Counts a condition before reading it, so that a huge array fails at the limit
    /// instead of being read to the end.
    fn child(&mut self, json: &Value, at: &str, depth: usize) -> Result<Node, FilterError> {
        self.conditions += 1;
        if self.conditions > MAX_CONDITIONS {
            return Err(FilterError::TooManyConditions { at: at.to_owned() });
        }
        self.node(json, at, depth + 1)
    }
}

fn seen_column(kind: &str) -> SeenColumn {
    if kind.starts_with("first") {
        SeenColumn::First
    } else {
        SeenColumn::Last
    }
}

/// Refuses keys beside the one that names the condition.
fn only_key(object: &Map<String, Value>, kind: &str, at: &str) -> Result<(), FilterError> {
    match object.keys().find(|key| *key != kind) {
        Some(other) => Err(invalid(
            at,
            format!("unknown field `{other}` beside `{kind}`; `{kind}` stands alone"),
        )),
        None => Ok(()),
    }
}

/// Names a JSON value's type for messages, without echoing the value itself.
fn describe(json: &Value) -> &'static str {
    match json {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn check_text(text: &str, what: &str, max: usize, at: &str) -> Result<(), FilterError> {
    if text.chars().count() > max {
        return Err(invalid(
            at,
            format!("{what} is longer than {max} characters"),
        ));
    }
    if text.contains('\0') {
        return Err(invalid(at, format!("{what} holds a NUL character")));
    }
    Ok(())
}

fn check_name(name: &str, what: &str, at: &str) -> Result<(), FilterError> {
    if name.is_empty() {
        return Err(invalid(at, format!("{what} needs a non-empty name")));
    }
    check_text(name, what, MAX_NAME_CHARS, at)
}

fn flag(json: &Value, name: &str, at: &str) -> Result<bool, FilterError> {
    match json {
        Value::Bool(flag) => Ok(*flag),
        other => Err(invalid(
            at,
            format!("`{name}` needs true or false, not {}", describe(other)),
        )),
    }
}

fn responded(json: &Value, at: &str) -> Result<Node, FilterError> {
    match json {
        Value::Bool(any) => Ok(Node::Responded(Responded::Any(*any))),
        Value::String(survey) => {
            check_name(survey, "`responded`", at)?;
            Ok(Node::Responded(Responded::Survey(survey.clone())))
        }
        other => Err(invalid(
            at,
            format!(
                "`responded` needs a survey id, or true or false, not {}",
                describe(other)
            ),
        )),
    }
}

fn consent_condition(json: &Value, at: &str) -> Result<Node, FilterError> {
    let RawConsent { consent, granted } = shape(json, at)?;
    let Value::String(category) = consent else {
        return Err(invalid(
            at,
            format!(
                "`consent` needs a category name, not {}",
                describe(&consent)
            ),
        ));
    };
    check_name(&category, "`consent`", at)?;
    let Some(granted) = granted else {
        return Err(invalid(
            at,
            "`consent` needs `granted`: true (granted) or false (denied)",
        ));
    };
    Ok(Node::Consent {
        category,
        granted: flag(&granted, "granted", at)?,
    })
}

fn trait_condition(json: &Value, at: &str) -> Result<Node, FilterError> {
    let RawTrait {
        key,
        equals,
        not_equals,
        exists,
        contains,
        gt,
        gte,
        lt,
        lte,
    } = shape(json, at)?;
    let keys = trait_keys(&key, at)?;

    let operators = [
        ("equals", &equals),
        ("notEquals", &not_equals),
        ("exists", &exists),
        ("contains", &contains),
        ("gt", &gt),
        ("gte", &gte),
        ("lt", &lt),
        ("lte", &lte),
    ];
    let given: Vec<&str> = operators
        .iter()
        .filter(|(_, value)| value.is_some())
        .map(|(name, _)| *name)
        .collect();
    let bounds_given = [&gt, &gte, &lt, &lte]
        .iter()
        .filter(|value| value.is_some())
        .count();
    if given.is_empty() {
        return Err(invalid(
            at,
            "a trait condition needs one of `equals`, `notEquals`, `exists`, `contains`, \
             or numeric bounds `gt`, `gte`, `lt`, `lte`",
        ));
    }
    // Bounds combine into a range; any other operator stands alone.
    if given.len() > 1 && given.len() > bounds_given {
        return Err(invalid(
            at,
            format!(
                "{} cannot share one trait condition; put each in its own object",
                listed(&given)
            ),
        ));
    }

    let test = if let Some(value) = equals {
        TraitTest::Equals(comparable(value, "equals", at)?)
    } else if let Some(value) = not_equals {
        TraitTest::NotEquals(comparable(value, "notEquals", at)?)
    } else if let Some(value) = exists {
        let Value::Bool(exists) = value else {
            return Err(invalid(
                at,
                format!("`exists` needs true or false, not {}", describe(&value)),
            ));
        };
        TraitTest::Exists(exists)
    } else if let Some(value) = contains {
        match value {
            Value::String(text) if !text.is_empty() => {
                check_text(&text, "`contains`", MAX_VALUE_CHARS, at)?;
                TraitTest::Contains(text)
            }
            other => {
                return Err(invalid(
                    at,
                    format!(
                        "`contains` needs a non-empty string, not {}",
                        describe(&other)
                    ),
                ));
            }
        }
    } else {
        numeric_range([gt, gte, lt, lte], at)?
    };
    Ok(Node::Trait { keys, test })
}

fn trait_keys(key: &Value, at: &str) -> Result<Vec<String>, FilterError> {
    let keys = match key {
        Value::String(key) => vec![key.clone()],
        Value::Array(items) if !items.is_empty() && items.len() <= MAX_PATH_KEYS => items
            .iter()
            .map(|item| match item {
                Value::String(key) => Ok(key.clone()),
                other => Err(invalid(
                    at,
                    format!(
                        "a `trait` path holds keys (strings), not {}",
                        describe(other)
                    ),
                )),
            })
            .collect::<Result<_, _>>()?,
        Value::Array(_) => {
            return Err(invalid(
                at,
                format!("a `trait` path needs 1 to {MAX_PATH_KEYS} keys"),
            ));
        }
        other => {
            return Err(invalid(
                at,
                format!(
                    "`trait` needs a key, or an array of keys for a nested trait, not {}",
                    describe(other)
                ),
            ));
        }
    };
    for key in &keys {
        check_name(key, "a `trait` key", at)?;
    }
    Ok(keys)
}

/// A value `equals` can compare with: arrays and objects are refused because their
/// equality (key order, duplicates) differs between the backends' JSON types.
fn comparable(value: Value, name: &str, at: &str) -> Result<Value, FilterError> {
    match &value {
        Value::String(text) => check_text(text, &format!("`{name}`"), MAX_VALUE_CHARS, at)?,
        Value::Array(_) | Value::Object(_) => {
            return Err(invalid(
                at,
                format!(
                    "`{name}` needs a string, number, boolean or null, not {}",
                    describe(&value)
                ),
            ));
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
    Ok(value)
}

/// The bounds `[gt, gte, lt, lte]` as a range.
fn numeric_range(bounds: [Option<Value>; 4], at: &str) -> Result<TraitTest, FilterError> {
    let [gt, gte, lt, lte] = bounds;
    let number = |value: Option<Value>, name: &str| match value {
        Some(Value::Number(number)) => Ok(Some(number)),
        Some(other) => Err(invalid(
            at,
            format!("`{name}` needs a number, not {}", describe(&other)),
        )),
        None => Ok(None),
    };
    let (gt, gte) = (number(gt, "gt")?, number(gte, "gte")?);
    let (lt, lte) = (number(lt, "lt")?, number(lte, "lte")?);

    let lower = match (gt, gte) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                at,
                "`gt` and `gte` are both lower bounds; keep one",
            ));
        }
        (Some(n), None) => Some((Bound::Exclusive, n)),
        (None, Some(n)) => Some((Bound::Inclusive, n)),
        (None, None) => None,
    };
    let upper = match (lt, lte) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                at,
                "`lt` and `lte` are both upper bounds; keep one",
            ));
        }
        (Some(n), None) => Some((Bound::Exclusive, n)),
        (None, Some(n)) => Some((Bound::Inclusive, n)),
        (None, None) => None,
    };
    if let (Some((low_bound, low)), Some((high_bound, high))) = (&lower, &upper) {
        let (low, high) = (low.as_f64(), high.as_f64());
        let both_inclusive = *low_bound == Bound::Inclusive && *high_bound == Bound::Inclusive;
        if low > high || (low == high && !both_inclusive) {
            return Err(invalid(
                at,
                "the numeric bounds leave no number between them",
            ));
        }
    }
    Ok(TraitTest::Range { lower, upper })
}

fn time_range(json: &Value, at: &str) -> Result<TimeRange, FilterError> {
    if !json.is_object() {
        return Err(invalid(
            at,
            format!(
                "needs an object with `after` and/or `before`, not {}",
                describe(json)
            ),
        ));
    }
    let raw: RawTimeRange = shape(json, at)?;
    let after = raw.after.map(|t| time(&t, "after", at)).transpose()?;
    let before = raw.before.map(|t| time(&t, "before", at)).transpose()?;
    match (after, before) {
        (None, None) => Err(invalid(at, "needs `after`, `before` or both")),
        (Some(after), Some(before)) if after >= before => {
            Err(invalid(at, "`after` must be earlier than `before`"))
        }
        _ => Ok(TimeRange { after, before }),
    }
}

fn time(json: &Value, name: &str, at: &str) -> Result<DateTime<Utc>, FilterError> {
    let problem = || {
        invalid(
            at,
            format!(
                "`{name}` needs a time such as \"2024-01-31T09:30:00Z\" or a date such as \
                 \"2024-01-31\""
            ),
        )
    };
    let Value::String(text) = json else {
        return Err(problem());
    };
    let time = match DateTime::parse_from_rfc3339(text) {
        Ok(time) => time.with_timezone(&Utc),
        Err(_) => NaiveDate::parse_from_str(text, "%Y-%m-%d")
            .map_err(|_| problem())?
            .and_hms_opt(0, 0, 0)
            .ok_or_else(problem)?
            .and_utc(),
    };
    // SQLite compares times as text, which orders correctly only for four-digit years.
    if !(1..=9999).contains(&time.year()) {
        return Err(invalid(
            at,
            format!("`{name}` must fall between the years 1 and 9999"),
        ));
    }
    // PostgreSQL keeps microseconds and would round a finer time, SQLite would compare
    // it as written; cut to the microsecond so that both backends see the same bound.
    Ok(time.trunc_subsecs(6))
}

fn days_range(json: &Value, at: &str) -> Result<DaysRange, FilterError> {
    if !json.is_object() {
        return Err(invalid(
            at,
            format!(
                "needs an object with `atLeast` and/or `atMost`, not {}",
                describe(json)
            ),
        ));
    }
    let raw: RawDaysRange = shape(json, at)?;
    let day = |value: Value, name: &str| match value.as_u64() {
        Some(days) if days <= u64::from(MAX_DAYS) => Ok(u32::try_from(days).unwrap_or(MAX_DAYS)),
        _ => Err(invalid(
            at,
            format!("`{name}` needs a whole number of days from 0 to {MAX_DAYS}"),
        )),
    };
    let at_least = raw.at_least.map(|v| day(v, "atLeast")).transpose()?;
    let at_most = raw.at_most.map(|v| day(v, "atMost")).transpose()?;
    match (at_least, at_most) {
        (None, None) => Err(invalid(at, "needs `atLeast`, `atMost` or both")),
        (Some(least), Some(most)) if least > most => {
            Err(invalid(at, "`atLeast` must not be more than `atMost`"))
        }
        _ => Ok(DaysRange { at_least, at_most }),
    }
}

// ---------------------------------------------------------------------------------------
// Writing the language back

impl Node {
    fn to_json(&self) -> Value {
        let mut object = Map::new();
        match self {
            Self::All(nodes) | Self::Any(nodes) => {
                let kind = if matches!(self, Self::All(_)) {
                    "all"
                } else {
                    "any"
                };
                let children = nodes.iter().map(Self::to_json).collect();
                object.insert(kind.into(), Value::Array(children));
            }
            Self::Not(node) => {
                object.insert("not".into(), node.to_json());
            }
            Self::Trait { keys, test } => {
                let key = match &keys[..] {
                    [key] => Value::String(key.clone()),
                    keys => keys.iter().cloned().map(Value::String).collect(),
                };
                object.insert("trait".into(), key);
                match test {
                    TraitTest::Equals(value) => {
                        object.insert("equals".into(), value.clone());
                    }
                    TraitTest::NotEquals(value) => {
                        object.insert("notEquals".into(), value.clone());
                    }
                    TraitTest::Exists(exists) => {
                        object.insert("exists".into(), Value::Bool(*exists));
                    }
                    TraitTest::Contains(text) => {
                        object.insert("contains".into(), Value::String(text.clone()));
                    }
                    TraitTest::Range { lower, upper } => {
                        if let Some((bound, number)) = lower {
                            let name = if *bound == Bound::Inclusive {
                                "gte"
                            } else {
                                "gt"
                            };
                            object.insert(name.into(), Value::Number(number.clone()));
                        }
                        if let Some((bound, number)) = upper {
                            let name = if *bound == Bound::Inclusive {
                                "lte"
                            } else {
                                "lt"
                            };
                            object.insert(name.into(), Value::Number(number.clone()));
                        }
                    }
                }
            }
            Self::Seen { column, range } => {
                let mut inner = Map::new();
                let rfc3339 = |time: &DateTime<Utc>| Value::String(time.to_rfc3339());
                if let Some(after) = &range.after {
                    inner.insert("after".into(), rfc3339(after));
                }
                if let Some(before) = &range.before {
                    inner.insert("before".into(), rfc3339(before));
                }
                object.insert(column.name("Seen"), Value::Object(inner));
            }
            Self::SeenDaysAgo { column, days } => {
                let mut inner = Map::new();
                if let Some(at_least) = days.at_least {
                    inner.insert("atLeast".into(), at_least.into());
                }
                if let Some(at_most) = days.at_most {
                    inner.insert("atMost".into(), at_most.into());
                }
                object.insert(column.name("SeenDaysAgo"), Value::Object(inner));
            }
            Self::Responded(Responded::Survey(survey)) => {
                object.insert("responded".into(), Value::String(survey.clone()));
            }
            Self::Responded(Responded::Any(any)) => {
                object.insert("responded".into(), Value::Bool(*any));
            }
            Self::Consent { category, granted } => {
                object.insert("consent".into(), Value::String(category.clone()));
                object.insert("granted".into(), Value::Bool(*granted));
            }
            Self::ConsentRecorded(recorded) => {
                object.insert("consentRecorded".into(), Value::Bool(*recorded));
            }
            Self::Gpc(gpc) => {
                object.insert("gpc".into(), Value::Bool(*gpc));
            }
        }
        Value::Object(object)
    }
}

impl SeenColumn {
    fn name(self, suffix: &str) -> String {
        match self {
            Self::First => format!("first{suffix}"),
            Self::Last => format!("last{suffix}"),
        }
    }

    fn sql(self) -> &'static str {
        match self {
            Self::First => "u.first_seen",
            Self::Last => "u.last_seen",
        }
    }
}

// ---------------------------------------------------------------------------------------
// Compiling to SQL
//
// The SQL text is made only of this module's constants and parameter placeholders, so it
// depends on the filter's shape and never on its values. Every condition compiles to an
// expression that is TRUE or FALSE, never NULL (a missing trait would otherwise make
// `NOT` drop the user instead of keeping them); typed comparisons sit behind
// `CASE WHEN <type check> THEN … ELSE FALSE END`, because neither database promises to
// evaluate the sides of an AND in order and PostgreSQL's cast of a string to a number
// raises an error.

/// Gathers the parameters while an expression is written.
struct Compiler {
    dialect: Dialect,
    next_param: usize,
    binds: Vec<Bind>,
    now: DateTime<Utc>,
}

/// One trait, located: SQL that reads its JSON type, its value, and its text.
struct TraitSql {
    /// `json_type(…)` on SQLite ('text', 'integer', 'real', 'true', 'null', …),
    /// `jsonb_typeof(…)` on PostgreSQL ('string', 'number', 'boolean', 'null', …).
    type_of: String,
    /// The SQL value on SQLite, the `jsonb` on PostgreSQL.
    value: String,
    /// The value as text, for strings.
    text: String,
}

impl Compiler {
    /// Adds a parameter and returns its placeholder.
    fn bind(&mut self, value: Bind) -> String {
        let placeholder = format!("${}", self.next_param);
        self.next_param += 1;
        self.binds.push(value);
        placeholder
    }

    fn node(&mut self, node: &Node) -> String {
        match node {
            Node::All(nodes) => self.join(nodes, " AND ", "TRUE"),
            Node::Any(nodes) => self.join(nodes, " OR ", "FALSE"),
            Node::Not(node) => format!("NOT ({})", self.node(node)),
            Node::Trait { keys, test } => self.trait_test(keys, test),
            Node::Seen { column, range } => {
                let mut parts = Vec::new();
                if let Some(after) = range.after {
                    parts.push(format!(
                        "{} >= {}",
                        column.sql(),
                        self.bind(Bind::Time(after))
                    ));
                }
                if let Some(before) = range.before {
                    parts.push(format!(
                        "{} < {}",
                        column.sql(),
                        self.bind(Bind::Time(before))
                    ));
                }
                format!("({})", parts.join(" AND "))
            }
            Node::SeenDaysAgo { column, days } => {
                // "At least N days ago" is "at or before now − N days"; "at most" is the
                // reverse.
                let mut parts = Vec::new();
                if let Some(at_least) = days.at_least {
                    let until = self.days_before_now(at_least);
                    parts.push(format!(
                        "{} <= {}",
                        column.sql(),
                        self.bind(Bind::Time(until))
                    ));
                }
                if let Some(at_most) = days.at_most {
                    let since = self.days_before_now(at_most);
                    parts.push(format!(
                        "{} >= {}",
                        column.sql(),
                        self.bind(Bind::Time(since))
                    ));
                }
                format!("({})", parts.join(" AND "))
            }
            Node::Responded(responded) => {
                let mut sql = String::from(
                    "EXISTS (SELECT 1 FROM responses r \
                     WHERE r.environment_id = u.environment_id AND r.user_key = u.id",
                );
                if let Responded::Survey(survey) = responded {
                    let survey = self.bind(Bind::Text(survey.clone()));
                    let _ = write!(sql, " AND r.survey_id = {survey}");
                }
                sql.push(')');
                match responded {
                    Responded::Any(false) => format!("NOT {sql}"),
                    _ => sql,
                }
            }
            Node::Consent { category, granted } => self.consent(category, *granted),
            Node::ConsentRecorded(true) => "(u.consent IS NOT NULL)".into(),
            Node::ConsentRecorded(false) => "(u.consent IS NULL)".into(),
            // Both dialects read `IS TRUE` as "true, and not NULL", which folds the
            // never-seen signal into "did not object".
            Node::Gpc(true) => "(u.gpc IS TRUE)".into(),
            Node::Gpc(false) => "(u.gpc IS NOT TRUE)".into(),
        }
    }

    fn join(&mut self, nodes: &[Node], operator: &str, empty: &str) -> String {
        if nodes.is_empty() {
            return empty.into();
        }
        let parts: Vec<String> = nodes.iter().map(|node| self.node(node)).collect();
        format!("({})", parts.join(operator))
    }

    fn days_before_now(&self, days: u32) -> DateTime<Utc> {
        self.now
            .checked_sub_signed(TimeDelta::days(i64::from(days)))
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    }

    /// Binds the trait's location once and returns SQL that reads it; the placeholders
    /// may then appear several times, which both databases allow.
    fn locate_trait(&mut self, keys: &[String]) -> TraitSql {
        match self.dialect {
            Dialect::Sqlite => {
                let path = self.bind(Bind::Text(sqlite_json_path(keys)));
                TraitSql {
                    type_of: format!("json_type(u.traits, {path})"),
                    value: format!("json_extract(u.traits, {path})"),
                    text: format!("json_extract(u.traits, {path})"),
                }
            }
            Dialect::Postgres => {
                let placeholders: Vec<String> = keys
                    .iter()
                    .map(|key| self.bind(Bind::Text(key.clone())))
                    .collect();
                let (last, parents) = placeholders
                    .split_last()
                    .unwrap_or_else(|| unreachable!("a trait has at least one key"));
                let parent: String = parents.iter().map(|p| format!(" -> {p}")).collect();
                TraitSql {
                    type_of: format!("jsonb_typeof(u.traits{parent} -> {last})"),
                    value: format!("(u.traits{parent} -> {last})"),
                    text: format!("(u.traits{parent} ->> {last})"),
                }
            }
        }
    }

    fn trait_test(&mut self, keys: &[String], test: &TraitTest) -> String {
        let located = self.locate_trait(keys);
        let TraitSql {
            type_of,
            value,
            text,
        } = &located;
        let (string_type, number_type, find) = match self.dialect {
            Dialect::Sqlite => ("= 'text'", "IN ('integer', 'real')", "instr"),
            Dialect::Postgres => ("= 'string'", "= 'number'", "strpos"),
        };
        match test {
            TraitTest::Equals(expected) => self.trait_equals(&located, expected),
            TraitTest::NotEquals(expected) => {
                format!("NOT {}", self.trait_equals(&located, expected))
            }
            TraitTest::Exists(exists) => {
                // A missing key has no type; a JSON null has the type 'null' on both.
                let set = format!("(COALESCE({type_of}, 'null') <> 'null')");
                if *exists {
                    set
                } else {
                    format!("NOT {set}")
                }
            }
            TraitTest::Contains(needle) => {
                // A substring search instead of LIKE, so that no character of the value
                // can act as a wildcard and nothing needs escaping.
                let needle = self.bind(Bind::Text(needle.clone()));
                format!(
                    "(CASE WHEN {type_of} {string_type} \
                     THEN {find}(lower({text}), lower({needle})) > 0 ELSE FALSE END)"
                )
            }
            TraitTest::Range { lower, upper } => {
                let number = match self.dialect {
                    Dialect::Sqlite => value.clone(),
                    Dialect::Postgres => format!("CAST({value} AS NUMERIC)"),
                };
                let mut parts = Vec::new();
                for (bound, operators) in [(lower, (">", ">=")), (upper, ("<", "<="))] {
                    if let Some((bound, limit)) = bound {
                        let operator = match bound {
                            Bound::Exclusive => operators.0,
                            Bound::Inclusive => operators.1,
                        };
                        let limit = self.bind_number(limit);
                        parts.push(format!("{number} {operator} {limit}"));
                    }
                }
                format!(
                    "(CASE WHEN {type_of} {number_type} THEN {} ELSE FALSE END)",
                    parts.join(" AND ")
                )
            }
        }
    }

    fn trait_equals(&mut self, located: &TraitSql, expected: &Value) -> String {
        let TraitSql { type_of, value, .. } = located;
        match (self.dialect, expected) {
            // JSONB equality already compares type and value (numbers as numbers).
            (Dialect::Postgres, _) => {
                let expected = self.bind(Bind::Json(expected.clone()));
                format!("COALESCE({value} = {expected}, FALSE)")
            }
            (Dialect::Sqlite, Value::String(text)) => {
                let expected = self.bind(Bind::Text(text.clone()));
                format!("(CASE WHEN {type_of} = 'text' THEN {value} = {expected} ELSE FALSE END)")
            }
            (Dialect::Sqlite, Value::Number(number)) => {
                let expected = self.bind_number(number);
                format!(
                    "(CASE WHEN {type_of} IN ('integer', 'real') \
                     THEN {value} = {expected} ELSE FALSE END)"
                )
            }
            // SQLite's json_extract turns true into 1 and null into NULL, so booleans and
            // null are told apart by their JSON type name alone.
            (Dialect::Sqlite, _) => {
                let type_name = match expected {
                    Value::Bool(true) => "true",
                    Value::Bool(false) => "false",
                    _ => "null",
                };
                let expected = self.bind(Bind::Text(type_name.into()));
                format!("COALESCE({type_of} = {expected}, FALSE)")
            }
        }
    }

    fn bind_number(&mut self, number: &Number) -> String {
        match self.dialect {
            Dialect::Sqlite => self.bind(match number.as_i64() {
                Some(int) => Bind::Int(int),
                None => Bind::Float(number.as_f64().unwrap_or(f64::NAN)),
            }),
            // As text, turned into NUMERIC by the database: exact for any JSON number, and
            // of one parameter type whatever the number. sqlx prepares a statement once
            // per SQL text with the parameter types of its first use, so `gte 18` (int8)
            // followed by `gte 3.5` (float8) would have the float's bytes read as an int.
            Dialect::Postgres => {
                format!(
                    "CAST({} AS NUMERIC)",
                    self.bind(Bind::Text(number.to_string()))
                )
            }
        }
    }

    fn consent(&mut self, category: &str, granted: bool) -> String {
        match self.dialect {
            Dialect::Sqlite => {
                let path = self.bind(Bind::Text(sqlite_json_path(&[category.to_owned()])));
                let type_name = self.bind(Bind::Text(granted.to_string()));
                format!("COALESCE(json_type(u.consent, {path}) = {type_name}, FALSE)")
            }
            Dialect::Postgres => {
                let key = self.bind(Bind::Text(category.to_owned()));
                let expected = self.bind(Bind::Json(Value::Bool(granted)));
                format!("COALESCE((u.consent -> {key}) = {expected}, FALSE)")
            }
        }
    }
}

/// The SQLite JSON path `$."k1"."k2"` for the keys, which is itself bound as a parameter.
///
/// SQLite ends a quoted path label at the first `"`, whatever precedes it, but decodes
/// JSON escapes inside the label. So `"` and `\` (and control characters, for clarity)
/// are written as `\uXXXX`, which addresses any key exactly.
fn sqlite_json_path(keys: &[String]) -> String {
    let mut path = String::from("$");
    for key in keys {
        path.push_str(".\"");
        for c in key.chars() {
            if c == '"' || c == '\\' || c.is_control() {
                let _ = write!(path, "\\u{:04x}", u32::from(c));
            } else {
                path.push(c);
            }
        }
        path.push('"');
    }
    path
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-03-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn error(json: Value) -> String {
        Filter::parse(&json).unwrap_err().to_string()
    }

    /// A filter with every kind of condition, for checks that should hold for all.
    fn every_kind(text: &str) -> Value {
        json!({"all": [
            {"trait": text, "equals": text},
            {"trait": [text, text], "notEquals": 1},
            {"trait": text, "equals": true},
            {"trait": text, "equals": null},
            {"trait": text, "notEquals": 2.5},
            {"trait": text, "exists": true},
            {"trait": text, "exists": false},
            {"trait": text, "contains": text},
            {"trait": text, "gte": 18, "lt": 65.5},
            {"trait": text, "gt": -1},
            {"trait": text, "lte": 1e300},
            {"firstSeen": {"after": "2024-01-01T00:00:00Z", "before": "2025-01-01"}},
            {"lastSeen": {"before": "2024-06-01T00:00:00.5+02:00"}},
            {"firstSeenDaysAgo": {"atLeast": 1}},
            {"lastSeenDaysAgo": {"atLeast": 30, "atMost": 90}},
            {"responded": text}, {"responded": true}, {"responded": false},
            {"consent": text, "granted": true}, {"consent": text, "granted": false},
            {"consentRecorded": true}, {"consentRecorded": false},
            {"gpc": true}, {"gpc": false},
            {"any": [{"not": {"trait": text, "equals": text}}, {}]},
            {"any": []}
        ]})
    }

    #[rstest]
    #[case::not_an_object(json!([]), "filter: a condition must be a JSON object")]
    #[case::null(json!(null), "filter: a condition must be a JSON object")]
    #[case::unknown_kind(json!({"trait_": "plan"}), "filter: a condition needs one of `all`")]
    #[case::operator_without_trait(json!({"equals": 1}), "found only `equals`")]
    #[case::two_kinds(
        json!({"trait": "plan", "equals": "pro", "responded": true}),
        "filter: `trait` and `responded` cannot share one object"
    )]
    #[case::unknown_trait_field(
        json!({"all": [{"trait": "plan", "equal": "pro"}]}),
        "filter.all[0]: unknown field `equal`, expected one of `trait`, `equals`"
    )]
    #[case::no_operator(
        json!({"trait": "plan"}),
        "filter: a trait condition needs one of `equals`"
    )]
    #[case::two_operators(
        json!({"trait": "plan", "equals": "pro", "exists": true}),
        "filter: `equals` and `exists` cannot share one trait condition"
    )]
    #[case::equality_with_bound(
        json!({"trait": "age", "equals": 3, "gte": 1}),
        "`equals` and `gte` cannot share"
    )]
    #[case::gte_string(
        json!({"all": [{}, {}, {"trait": "age", "gte": "18"}]}),
        "filter.all[2]: `gte` needs a number, not a string"
    )]
    #[case::lt_null(json!({"trait": "age", "lt": null}), "filter: `lt` needs a number, not null")]
    #[case::two_lower_bounds(
        json!({"trait": "age", "gt": 1, "gte": 2}),
        "`gt` and `gte` are both lower bounds"
    )]
    #[case::empty_range(
        json!({"trait": "age", "gte": 10, "lt": 10}),
        "the numeric bounds leave no number between them"
    )]
    #[case::reversed_range(
        json!({"trait": "age", "gt": 10, "lte": 5}),
        "the numeric bounds leave no number between them"
    )]
    #[case::equals_array(
        json!({"trait": "tags", "equals": ["a"]}),
        "`equals` needs a string, number, boolean or null, not an array"
    )]
    #[case::not_equals_object(
        json!({"trait": "a", "notEquals": {}}),
        "`notEquals` needs a string, number, boolean or null, not an object"
    )]
    #[case::exists_string(json!({"trait": "a", "exists": "yes"}), "`exists` needs true or false")]
    #[case::contains_empty(
        json!({"trait": "a", "contains": ""}),
        "`contains` needs a non-empty string, not a string"
    )]
    #[case::contains_number(json!({"trait": "a", "contains": 1}), "`contains` needs a non-empty")]
    #[case::empty_key(json!({"trait": "", "exists": true}), "a `trait` key needs a non-empty name")]
    #[case::number_key(json!({"trait": 1, "exists": true}), "`trait` needs a key, or an array")]
    #[case::empty_path(json!({"trait": [], "exists": true}), "a `trait` path needs 1 to 8 keys")]
    #[case::long_path(
        json!({"trait": ["a", "b", "c", "d", "e", "f", "g", "h", "i"], "exists": true}),
        "a `trait` path needs 1 to 8 keys"
    )]
    #[case::path_with_index(
        json!({"trait": ["tags", 0], "exists": true}),
        "a `trait` path holds keys (strings), not a number"
    )]
    #[case::nul_in_key(json!({"trait": "a\u{0}b", "exists": true}), "holds a NUL character")]
    #[case::nul_in_value(json!({"trait": "a", "equals": "\u{0}"}), "`equals` holds a NUL")]
    #[case::all_not_array(json!({"all": {}}), "filter: `all` needs an array of conditions")]
    #[case::all_with_extra(
        json!({"all": [], "gpc": true}),
        "`all` and `gpc` cannot share one object"
    )]
    #[case::not_with_extra(json!({"not": {}, "x": 1}), "filter: unknown field `x` beside `not`")]
    #[case::not_array(json!({"not": []}), "filter.not: a condition must be a JSON object")]
    #[case::nested_error(
        json!({"any": [{}, {"not": {"all": [{"gpc": "yes"}]}}]}),
        "filter.any[1].not.all[0]: `gpc` needs true or false, not a string"
    )]
    #[case::range_not_object(
        json!({"firstSeen": "2024-01-01"}),
        "filter.firstSeen: needs an object with `after` and/or `before`"
    )]
    #[case::range_empty(json!({"lastSeen": {}}), "filter.lastSeen: needs `after`, `before`")]
    #[case::range_unknown(
        json!({"lastSeen": {"since": "2024-01-01"}}),
        "filter.lastSeen: unknown field `since`"
    )]
    #[case::range_bad_time(
        json!({"lastSeen": {"after": "yesterday"}}),
        "filter.lastSeen: `after` needs a time such as"
    )]
    #[case::range_number(json!({"lastSeen": {"before": 1_700_000_000}}), "`before` needs a time")]
    #[case::range_reversed(
        json!({"firstSeen": {"after": "2024-02-01", "before": "2024-01-01"}}),
        "`after` must be earlier than `before`"
    )]
    #[case::range_year_zero(
        json!({"firstSeen": {"after": "0000-01-01T00:00:00Z"}}),
        "`after` must fall between the years 1 and 9999"
    )]
    #[case::days_negative(
        json!({"lastSeenDaysAgo": {"atLeast": -1}}),
        "filter.lastSeenDaysAgo: `atLeast` needs a whole number of days from 0 to 36500"
    )]
    #[case::days_fraction(json!({"lastSeenDaysAgo": {"atMost": 1.5}}), "`atMost` needs a whole")]
    #[case::days_too_many(json!({"lastSeenDaysAgo": {"atMost": 36_501}}), "`atMost` needs")]
    #[case::days_reversed(
        json!({"firstSeenDaysAgo": {"atLeast": 9, "atMost": 3}}),
        "`atLeast` must not be more than `atMost`"
    )]
    #[case::days_empty(json!({"lastSeenDaysAgo": {}}), "needs `atLeast`, `atMost` or both")]
    #[case::responded_number(json!({"responded": 3}), "`responded` needs a survey id")]
    #[case::responded_empty(json!({"responded": ""}), "`responded` needs a non-empty name")]
    #[case::consent_without_granted(
        json!({"consent": "analytics"}),
        "`consent` needs `granted`: true (granted) or false (denied)"
    )]
    #[case::consent_granted_string(
        json!({"consent": "analytics", "granted": "yes"}),
        "`granted` needs true or false, not a string"
    )]
    #[case::consent_not_string(json!({"consent": true, "granted": true}), "needs a category")]
    #[case::consent_unknown_field(
        json!({"consent": "a", "granted": true, "since": 1}),
        "filter: unknown field `since`, expected `consent` or `granted`"
    )]
    #[case::consent_recorded_string(
        json!({"consentRecorded": "no"}),
        "`consentRecorded` needs true or false"
    )]
    fn malformed_filters_are_refused_with_the_place_and_the_problem(
        #[case] filter: Value,
        #[case] expected: &str,
    ) {
        let message = error(filter);

        assert!(
            message.contains(expected),
            "message {message:?} should contain {expected:?}"
        );
    }

    #[test]
    fn error_messages_do_not_echo_the_values_they_refuse() {
        let secret = "ada@example.com";

        let message = error(json!({"trait": "email", "gte": secret}));

        assert_eq!(message, "filter: `gte` needs a number, not a string");
    }

    #[test]
    fn nesting_is_limited_to_eight_levels() {
        let mut eight = json!({"gpc": true});
        for _ in 1..MAX_DEPTH {
            eight = json!({"not": eight});
        }
        let nine = json!({"not": eight.clone()});

        assert!(Filter::parse(&eight).is_ok());
        assert_eq!(
            error(nine),
            "filter.not.not.not.not.not.not.not.not: the filter nests more than 8 levels \
             deep; flatten it"
        );
    }

    #[test]
    fn conditions_are_limited_to_one_hundred() {
        let hundred: Vec<Value> = (0..MAX_CONDITIONS).map(|_| json!({"gpc": true})).collect();
        let mut more = hundred.clone();
        more.push(json!({"gpc": true}));
        // Combinators count as conditions too, so empty ones cannot pile up unbounded.
        let nested = json!({"all": [{"all": hundred.clone()}]});

        assert!(Filter::parse(&json!({"all": hundred})).is_ok());
        assert_eq!(
            error(json!({"all": more})),
            "filter.all[100]: the filter has more than 100 conditions"
        );
        assert_eq!(
            error(nested),
            "filter.all[0].all[99]: the filter has more than 100 conditions"
        );
    }

    #[rstest]
    #[case::key_at_limit(json!({"trait": "k".repeat(200), "exists": true}), true)]
    #[case::key_over_limit(json!({"trait": "k".repeat(201), "exists": true}), false)]
    #[case::key_counts_characters(json!({"trait": "é".repeat(200), "exists": true}), true)]
    #[case::value_at_limit(json!({"trait": "k", "equals": "v".repeat(1000)}), true)]
    #[case::value_over_limit(json!({"trait": "k", "equals": "v".repeat(1001)}), false)]
    #[case::contains_over_limit(json!({"trait": "k", "contains": "v".repeat(1001)}), false)]
    #[case::survey_over_limit(json!({"responded": "s".repeat(201)}), false)]
    #[case::category_over_limit(json!({"consent": "c".repeat(201), "granted": true}), false)]
    #[case::path_key_over_limit(json!({"trait": ["a", "k".repeat(201)], "exists": true}), false)]
    #[case::days_at_limit(json!({"lastSeenDaysAgo": {"atLeast": 36_500}}), true)]
    fn lengths_are_limited(#[case] filter: Value, #[case] accepted: bool) {
        let result = Filter::parse(&filter);

        assert_eq!(result.is_ok(), accepted, "{result:?}");
        if let Err(error) = result {
            assert!(error.to_string().contains("longer than"), "{error}");
        }
    }

    #[test]
    fn every_kind_of_condition_parses_and_survives_a_round_trip_through_serde() {
        let filter = Filter::parse(&every_kind("plan")).unwrap();

        let written = serde_json::to_value(&filter).unwrap();
        let read: Filter = serde_json::from_value(written.clone()).unwrap();

        assert_eq!(read, filter);
        assert_eq!(
            written["all"][0],
            json!({"trait": "plan", "equals": "plan"})
        );
        assert_eq!(
            written["all"][12],
            json!({"lastSeen": {"before": "2024-05-31T22:00:00.500+00:00"}})
        );
        assert_eq!(written["all"][24]["any"][1], json!({"all": []}));
    }

    #[test]
    fn deserialising_validates() {
        let result = serde_json::from_value::<Filter>(json!({"trait": "age", "gte": "x"}));

        let message = result.unwrap_err().to_string();

        assert!(message.contains("`gte` needs a number"), "{message}");
    }

    #[rstest]
    #[case::empty_object(json!({}), true)]
    #[case::empty_all(json!({"all": []}), true)]
    #[case::empty_any(json!({"any": []}), false)]
    #[case::condition(json!({"gpc": false}), false)]
    fn everyone_is_recognised_only_when_written_so(#[case] filter: Value, #[case] everyone: bool) {
        assert_eq!(Filter::parse(&filter).unwrap().is_everyone(), everyone);
    }

    /// The placeholder numbers used in the SQL.
    fn placeholders(sql: &str) -> BTreeSet<usize> {
        let mut found = BTreeSet::new();
        let mut rest = sql;
        while let Some(index) = rest.find('$') {
            rest = &rest[index + 1..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            found.insert(digits.parse().unwrap());
        }
        found
    }

    #[rstest]
    fn parameters_are_numbered_from_first_param_without_gaps(
        #[values(Dialect::Sqlite, Dialect::Postgres)] dialect: Dialect,
        #[values(1, 2, 9)] first_param: usize,
    ) {
        let filter = Filter::parse(&every_kind("plan")).unwrap();

        let compiled = filter.to_sql(dialect, first_param, now());

        let expected: BTreeSet<usize> = (first_param..first_param + compiled.binds.len()).collect();
        assert_eq!(placeholders(&compiled.sql), expected);
    }

    #[rstest]
    fn the_sql_depends_on_the_filter_shape_never_on_its_values(
        #[values(Dialect::Sqlite, Dialect::Postgres)] dialect: Dialect,
        #[values(
            "'",
            "'; DROP TABLE users; --",
            "\") OR 1=1 --",
            "%",
            "_",
            "\\",
            "$1",
            "?",
            ":name",
            "*/",
            "$$",
            "é🙂",
            "a.b[0]"
        )]
        hostile: &str,
    ) {
        let plain = Filter::parse(&every_kind("plain")).unwrap();
        let filter = Filter::parse(&every_kind(hostile)).unwrap();

        let plain_sql = plain.to_sql(dialect, 2, now());
        let hostile_sql = filter.to_sql(dialect, 2, now());

        assert_eq!(hostile_sql.sql, plain_sql.sql);
        assert_ne!(hostile_sql.binds, plain_sql.binds);
    }

    #[test]
    fn on_postgres_the_sql_text_fixes_the_type_of_every_parameter() {
        let variants = |binds: &[Bind]| -> Vec<std::mem::Discriminant<Bind>> {
            binds.iter().map(std::mem::discriminant).collect()
        };
        let numbers = [
            json!(18),
            json!(3.5),
            json!(-2),
            json!(1e300),
            json!(u64::MAX),
        ];
        let filters: Vec<Value> = numbers
            .iter()
            .flat_map(|n| {
                [
                    json!({"trait": "age", "gte": n}),
                    json!({"trait": "age", "gt": n, "lte": 1e301}),
                    json!({"trait": "age", "equals": n}),
                    json!({"trait": "age", "notEquals": "x"}),
                    json!({"trait": "age", "equals": true}),
                ]
            })
            .collect();

        let compiled: Vec<SqlFilter> = filters
            .iter()
            .map(|f| {
                Filter::parse(f)
                    .unwrap()
                    .to_sql(Dialect::Postgres, 2, now())
            })
            .collect();

        for a in &compiled {
            for b in compiled.iter().filter(|b| b.sql == a.sql) {
                assert_eq!(variants(&a.binds), variants(&b.binds), "{}", a.sql);
            }
        }
    }

    #[test]
    fn the_sqlite_path_escapes_what_would_end_or_escape_a_label() {
        let keys = ["plan".to_owned(), "a\"b\\c.d\ne".to_owned()];

        assert_eq!(
            sqlite_json_path(&keys),
            "$.\"plan\".\"a\\u0022b\\u005cc.d\\u000ae\""
        );
    }

    #[test]
    fn an_empty_filter_compiles_to_true_without_parameters() {
        let filter = Filter::parse(&json!({})).unwrap();

        let compiled = filter.to_sql(Dialect::Sqlite, 2, now());

        assert_eq!(
            compiled,
            SqlFilter {
                sql: "TRUE".into(),
                binds: vec![]
            }
        );
    }

    #[test]
    fn days_ago_are_counted_back_from_now() {
        let filter = Filter::parse(&json!({"lastSeenDaysAgo": {"atLeast": 30}})).unwrap();

        let compiled = filter.to_sql(Dialect::Postgres, 2, now());

        assert_eq!(compiled.sql, "(u.last_seen <= $2)");
        assert_eq!(compiled.binds, [Bind::Time(now() - TimeDelta::days(30))]);
    }
}
