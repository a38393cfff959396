//! The little JSON the SDK needs, without a JSON library: writing strings and objects,
//! checking stored text, and merging two objects' members.
//!
//! Messages are written as text straight away. serde_json's serialiser and parser together
//! were more than half of the wasm module; what the SDK writes has a fixed shape, and what
//! it reads back (its own stored queue, traits) only needs to be checked and split into
//! members, never turned into values. Values from the page are written by the engine's
//! `JSON.stringify` and spliced in as text.

use crate::prelude::*;

/// The text of ASCII bytes (hex digits, a timestamp) that the SDK wrote itself.
///
/// Every message needs two of these (its id and its time), so they are copied as they
/// are: `core::str::from_utf8`'s validation costs the module code, and copying them a
/// character at a time costs each call time, for bytes that could not fail the check.
pub(crate) fn ascii(bytes: &[u8]) -> String {
    debug_assert!(bytes.is_ascii());
    if !bytes.is_ascii() {
        return String::new();
    }
    #[allow(unsafe_code)]
    // SAFETY: ASCII bytes are valid UTF-8, checked just above.
    unsafe {
        String::from_utf8_unchecked(bytes.to_vec())
    }
}

/// The lines of stored text that the SDK wrote itself, split at each `\n`.
///
/// A predicate rather than the `'\n'` pattern: the character searcher behind the latter
/// costs the module more code than this loop.
pub(crate) fn lines(text: &str) -> core::str::Split<'_, fn(char) -> bool> {
    fn line_break(c: char) -> bool {
        c == '\n'
    }
    text.split(line_break as fn(char) -> bool)
}

/// Appends `text` as a JSON string literal, quotes and escapes included.
///
/// Runs of bytes that need no escape are copied whole: every message writes a dozen
/// strings, and copying them character by character was the most expensive step of
/// `track`.
pub(crate) fn push_string(out: &mut String, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";

    out.reserve(text.len() + 2);
    out.push('"');
    let mut clean = 0;
    for (at, byte) in text.bytes().enumerate() {
        if byte >= 0x20 && byte != b'"' && byte != b'\\' {
            continue;
        }
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            _ => "",
        };
        // Escaped bytes are ASCII, so `clean..at` lies on character boundaries; `get`
        // rather than indexing keeps the panic message's formatting out of the module.
        out.push_str(text.get(clean..at).unwrap_or_default());
        clean = at + 1;
        if escape.is_empty() {
            out.push_str("\\u00");
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        } else {
            out.push_str(escape);
        }
    }
    out.push_str(text.get(clean..).unwrap_or_default());
    out.push('"');
}

/// Appends a whole number in decimal, without the formatting machinery.
pub(crate) fn push_number(out: &mut String, mut number: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (number % 10) as u8;
        number /= 10;
        if number == 0 {
            break;
        }
    }
    for digit in &digits[at..] {
        out.push(char::from(*digit));
    }
}

/// A JSON object written member by member.
#[derive(Debug)]
pub(crate) struct Object {
    out: String,
}

impl Object {
    pub(crate) fn new() -> Self {
        Self::with_capacity(64)
    }

    /// An object expected to take about `bytes`, so that it grows once at most.
    pub(crate) fn with_capacity(bytes: usize) -> Self {
        let mut out = String::with_capacity(bytes);
        out.push('{');
        Self { out }
    }

    /// Member names are the SDK's own words, which need no escaping.
    fn key(&mut self, name: &str) {
        debug_assert!(!name.contains(['"', '\\']));
        if self.out.len() > 1 {
            self.out.push(',');
        }
        self.out.push('"');
        self.out.push_str(name);
        self.out.push_str("\":");
    }

    /// A string member.
    pub(crate) fn string(&mut self, name: &str, value: &str) -> &mut Self {
        self.key(name);
        push_string(&mut self.out, value);
        self
    }

    /// A string member when `value` is given.
    pub(crate) fn optional(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.string(name, value);
        }
        self
    }

    /// A member whose value is JSON text already.
    pub(crate) fn raw(&mut self, name: &str, json: &str) -> &mut Self {
        self.key(name);
        self.out.push_str(json);
        self
    }

    /// A boolean member.
    pub(crate) fn boolean(&mut self, name: &str, value: bool) -> &mut Self {
        self.raw(name, if value { "true" } else { "false" })
    }

    /// A boolean member whose name is not the SDK's own (a consent category, which the page
    /// or stored text names), escaped like any string.
    pub(crate) fn named_boolean(&mut self, name: &str, value: bool) -> &mut Self {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        push_string(&mut self.out, name);
        self.out.push_str(if value { ":true" } else { ":false" });
        self
    }

    /// The finished text.
    pub(crate) fn finish(&mut self) -> String {
        let mut out = core::mem::take(&mut self.out);
        out.push('}');
        out
    }
}

/// Whether `text` is exactly one well-formed JSON object (surrounding whitespace allowed).
///
/// Used on what comes back from storage, which another script, a full disk or a crash
/// mid-write may have left broken: a broken entry must be skipped, not sent, because one
/// unreadable message makes the collector refuse its whole batch.
pub fn is_object(text: &str) -> bool {
    let mut scan = Scanner::new(text);
    scan.skip_space();
    let ok = scan.peek() == Some(b'{') && scan.value(0);
    scan.skip_space();
    ok && scan.at == scan.bytes.len()
}

/// The members of a well-formed JSON object as `(key, value)` text slices, keys with their
/// quotes; `None` when `text` is not one.
pub(crate) fn members(text: &str) -> Option<Vec<(&str, &str)>> {
    if !is_object(text) {
        return None;
    }

    let mut scan = Scanner::new(text);
    let mut found = Vec::new();
    scan.skip_space();
    scan.at += 1;
    loop {
        scan.skip_space();
        if scan.peek() == Some(b'}') {
            return Some(found);
        }
        let key_start = scan.at;
        scan.string();
        let key = text.get(key_start..scan.at)?;
        scan.skip_space();
        scan.at += 1; // the colon
        scan.skip_space();
        let value_start = scan.at;
        scan.value(1);
        found.push((key, text.get(value_start..scan.at)?));
        scan.skip_space();
        if scan.peek() == Some(b',') {
            scan.at += 1;
        }
    }
}

/// `base`'s members overlaid with `update`'s: a key in both takes `update`'s value, in
/// `base`'s position. Either side that is not an object counts as empty.
///
/// Keys compare as written; both sides come from `JSON.stringify`, which writes one string
/// one way only.
pub(crate) fn merge(base: &str, update: &str) -> String {
    let base = members(base).unwrap_or_default();
    let update = members(update).unwrap_or_default();

    let mut out = String::from("{");
    let mut push = |key: &str, value: &str| {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(key);
        out.push(':');
        out.push_str(value);
    };
    for (key, value) in &base {
        let newer = update.iter().rev().find(|(other, _)| other == key);
        push(key, newer.map_or(value, |(_, value)| value));
    }
    for (index, (key, value)) in update.iter().enumerate() {
        let in_base = base.iter().any(|(other, _)| other == key);
        let repeated_later = update[index + 1..].iter().any(|(other, _)| other == key);
        if !in_base && !repeated_later {
            push(key, value);
        }
    }
    out.push('}');
    out
}

/// A validating scanner over JSON text: each method consumes one construct and says
/// whether it was well formed.
struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    /// Nesting deeper than this is refused, so that hostile text cannot exhaust the stack.
    const MAX_DEPTH: usize = 64;

    fn new(text: &'a str) -> Self {
        Self {
            bytes: text.as_bytes(),
            at: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let matched = self.peek() == Some(byte);
        self.at += usize::from(matched);
        matched
    }

    fn skip_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.at += 1;
        }
    }

    fn value(&mut self, depth: usize) -> bool {
        if depth > Self::MAX_DEPTH {
            return false;
        }
        self.skip_space();
        match self.peek() {
            Some(b'{') => self.sequence(b'}', depth, true),
            Some(b'[') => self.sequence(b']', depth, false),
            Some(b'"') => self.string(),
            Some(b't') => self.word(b"true"),
            Some(b'f') => self.word(b"false"),
            Some(b'n') => self.word(b"null"),
            _ => self.number(),
        }
    }

    /// An object (`keyed`) or an array, its opening bracket next.
    fn sequence(&mut self, close: u8, depth: usize, keyed: bool) -> bool {
        self.at += 1;
        self.skip_space();
        if self.eat(close) {
            return true;
        }
        loop {
            if keyed {
                self.skip_space();
                if !self.string() {
                    return false;
                }
                self.skip_space();
                if !self.eat(b':') {
                    return false;
                }
            }
            if !self.value(depth + 1) {
                return false;
            }
            self.skip_space();
            if self.eat(close) {
                return true;
            }
            if !self.eat(b',') {
                return false;
            }
        }
    }

    fn string(&mut self) -> bool {
        if !self.eat(b'"') {
            return false;
        }
        while let Some(byte) = self.peek() {
            self.at += 1;
            match byte {
                b'"' => return true,
                b'\\' => {
                    let Some(escaped) = self.peek() else {
                        return false;
                    };
                    self.at += 1;
                    if escaped == b'u' {
                        let hex = self.bytes.get(self.at..self.at + 4);
                        if !hex.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
                            return false;
                        }
                        self.at += 4;
                    } else if !matches!(
                        escaped,
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't'
                    ) {
                        return false;
                    }
                }
                0..0x20 => return false,
                _ => {}
            }
        }
        false
    }

    fn word(&mut self, word: &[u8]) -> bool {
        let matched = self.bytes.get(self.at..self.at + word.len()) == Some(word);
        self.at += if matched { word.len() } else { 0 };
        matched
    }

    fn number(&mut self) -> bool {
        self.eat(b'-');
        if !self.eat(b'0') && !self.digits() {
            return false;
        }
        if self.eat(b'.') && !self.digits() {
            return false;
        }
        if self.eat(b'e') || self.eat(b'E') {
            let _sign = self.eat(b'+') || self.eat(b'-');
            return self.digits();
        }
        true
    }

    /// One or more decimal digits.
    fn digits(&mut self) -> bool {
        let start = self.at;
        while self.peek().is_some_and(|byte| byte.is_ascii_digit()) {
            self.at += 1;
        }
        self.at > start
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use proptest::prelude::*;
    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn strings_are_escaped_as_json_requires() {
        let mut out = String::new();

        push_string(&mut out, "a\"b\\c\nd\u{1}é");

        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
        assert_eq!(
            serde_json::from_str::<String>(&out).unwrap(),
            "a\"b\\c\nd\u{1}é"
        );
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for number in [0, 7, 10, 1234567890, u64::MAX] {
            let mut out = String::new();
            push_number(&mut out, number);
            assert_eq!(out, number.to_string());
        }
    }

    #[test]
    fn an_object_is_built_member_by_member() {
        let text = Object::new()
            .string("a", "x")
            .optional("b", None)
            .raw("c", "[1]")
            .boolean("d", true)
            .finish();

        assert_eq!(text, r#"{"a":"x","c":[1],"d":true}"#);
    }

    #[test]
    fn broken_or_non_object_text_is_refused() {
        for text in [
            "",
            "[]",
            "1",
            "{",
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":tru}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":01}"#,
            r#"{"a":1} {}"#,
            "{\"a\":\"line\nbreak\"}",
        ] {
            assert!(!is_object(text), "{text:?}");
        }
        assert!(is_object(r#" {"a":[1,-2.5e3,{"b":null}],"c":"\u00e9\""} "#));
    }

    #[test]
    fn deep_nesting_is_refused_instead_of_recursing_without_end() {
        let text = format!("{{\"a\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));

        assert!(!is_object(&text));
    }

    #[test]
    fn merging_overlays_keys_in_place_and_appends_new_ones() {
        let merged = merge(r#"{"a":1,"b":{"x":2}}"#, r#"{"b":3,"c":[4]}"#);

        assert_eq!(merged, r#"{"a":1,"b":3,"c":[4]}"#);
        assert_eq!(merge("broken", r#"{"c":1}"#), r#"{"c":1}"#);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            // Quarters print exactly, so that the comparison does not hinge on how a
            // float is rounded when serde_json reads it back.
            (-4000i32..4000).prop_map(|n| Value::from(f64::from(n) / 4.0)),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
                prop::collection::btree_map(any::<String>(), inner, 0..6)
                    .prop_map(|map| Value::Object(map.into_iter().collect())),
            ]
        })
    }

    fn json_object() -> impl Strategy<Value = serde_json::Map<String, Value>> {
        prop::collection::btree_map(any::<String>(), json_value(), 0..6)
            .prop_map(|map| map.into_iter().collect())
    }

    proptest! {
        #[test]
        fn every_serialised_object_is_accepted(object in json_object()) {
            let text = Value::Object(object).to_string();

            prop_assert!(is_object(&text));
        }

        #[test]
        fn every_cut_short_object_is_refused(object in json_object(), cut in any::<prop::sample::Index>()) {
            let text = Value::Object(object).to_string();
            let mut end = cut.index(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }

            prop_assert!(!is_object(&text[..end]));
        }

        #[test]
        fn written_strings_read_back_unchanged(text in any::<String>()) {
            let mut out = String::new();
            push_string(&mut out, &text);

            prop_assert_eq!(serde_json::from_str::<String>(&out).unwrap(), text);
        }

        #[test]
        fn merging_equals_overlaying_parsed_objects(base in json_object(), update in json_object()) {
            let merged = merge(&Value::Object(base.clone()).to_string(), &Value::Object(update.clone()).to_string());

            let mut expected = base;
            expected.extend(update);
            prop_assert_eq!(serde_json::from_str::<Value>(&merged).unwrap(), Value::Object(expected));
        }
    }

    #[test]
    fn members_split_an_object() {
        let found = members(r#"{ "a" : 1 , "b":{"c":[2]} }"#).unwrap();

        assert_eq!(found, vec![(r#""a""#, "1"), (r#""b""#, r#"{"c":[2]}"#)]);
        assert_eq!(json!({}).to_string(), "{}");
        assert_eq!(members("{}").unwrap(), vec![]);
    }
}
