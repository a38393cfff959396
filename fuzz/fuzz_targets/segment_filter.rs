//! The segment filter language: `Filter::parse` and `Filter::to_sql` for both dialects.
//!
//! The input is a filter as an operator would post it. Beyond not panicking:
//!
//! - a parsed filter written back to JSON parses to the same filter;
//! - its SQL numbers its placeholders from `first_param` without gaps, one per bind;
//! - the SQL depends on the filter's shape only: the same filter with every string, number
//!   and time replaced compiles to the same text, so no value from the input can be in it;
//! - every replaced string reaches the database as (part of) a bind, none in the text;
//! - the text uses only the quoted type names and characters the compiler writes itself.

#![no_main]

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use ebb_collector::segment::{Bind, Dialect, Filter, SqlFilter};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Number, Value};

fuzz_target!(|body: &[u8]| {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let filter = match Filter::parse(&json) {
        Ok(filter) => filter,
        Err(error) => {
            assert!(!error.to_string().is_empty(), "an error without a message");
            return;
        }
    };

    let written = Value::from(filter.clone());
    assert_eq!(
        Filter::parse(&written).as_ref(),
        Ok(&filter),
        "a filter written back as {written} parses differently"
    );

    let mut markers = Vec::new();
    let marked_json = replace_values(&written, None, &mut markers);
    let marked = Filter::parse(&marked_json)
        .unwrap_or_else(|e| panic!("the same shape with other values is refused: {e}"));

    let now = fixed_now();
    for dialect in [Dialect::Sqlite, Dialect::Postgres] {
        for first_param in [1, 2, 9] {
            let sql = filter.to_sql(dialect, first_param, now);
            check_sql(&sql, dialect, first_param);

            let other = marked.to_sql(dialect, first_param, now);
            assert_eq!(
                sql.sql, other.sql,
                "the SQL text depends on the filter's values"
            );
            assert_eq!(sql.binds.len(), other.binds.len(), "binds depend on values");
            for marker in &markers {
                assert!(
                    !other.sql.contains(marker.as_str()),
                    "a value is in the SQL text"
                );
                assert!(
                    other.binds.iter().any(|bind| bind_holds(bind, marker)),
                    "a value of the filter is in no bind"
                );
            }
        }

        // The edges of time: days counted back from the earliest or latest moment.
        for now in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
            check_sql(&filter.to_sql(dialect, 2, now), dialect, 2);
        }
    }
});

fn fixed_now() -> DateTime<Utc> {
    DateTime::UNIX_EPOCH + TimeDelta::days(20_000)
}

/// The placeholders, the quoted literals and the characters of a compiled filter.
fn check_sql(compiled: &SqlFilter, dialect: Dialect, first_param: usize) {
    let sql = &compiled.sql;
    let bytes = sql.as_bytes();
    let mut used = BTreeSet::new();
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'$' {
            let digits = bytes[index + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            assert!(digits > 0, "a `$` without a number in {sql}");
            let number: usize = sql[index + 1..index + 1 + digits]
                .parse()
                .unwrap_or_else(|e| panic!("placeholder: {e}"));
            used.insert(number);
            index += digits;
        }
        index += 1;
    }
    let expected: BTreeSet<usize> = (first_param..first_param + compiled.binds.len()).collect();
    assert_eq!(
        used, expected,
        "placeholders do not match the binds in {sql}"
    );

    assert!(
        sql.chars()
            .all(|c| c.is_ascii_alphanumeric() || " _$(),.'=<>-".contains(c)),
        "unexpected character in {sql}"
    );
    assert!(!sql.contains("--"), "a comment marker in {sql}");
    let mut depth = 0_i64;
    for c in sql.chars() {
        depth += match c {
            '(' => 1,
            ')' => -1,
            _ => 0,
        };
        assert!(depth >= 0, "unbalanced parentheses in {sql}");
    }
    assert_eq!(depth, 0, "unbalanced parentheses in {sql}");
    let literals: Vec<&str> = sql.split('\'').skip(1).step_by(2).collect();
    assert!(
        sql.matches('\'').count().is_multiple_of(2),
        "an open quote in {sql}"
    );
    for literal in literals {
        let known = [
            "text", "integer", "real", "null", "string", "number", "boolean",
        ];
        assert!(
            known.contains(&literal),
            "unknown literal '{literal}' in {sql}"
        );
    }

    for bind in &compiled.binds {
        let fits = match dialect {
            Dialect::Sqlite => !matches!(bind, Bind::Json(_)),
            Dialect::Postgres => !matches!(bind, Bind::Int(_) | Bind::Float(_)),
        };
        assert!(fits, "{bind:?} is not a parameter type of {dialect:?}");
    }
}

fn bind_holds(bind: &Bind, marker: &str) -> bool {
    match bind {
        Bind::Text(text) => text.contains(marker),
        Bind::Json(Value::String(text)) => text.contains(marker),
        _ => false,
    }
}

/// The filter with each string replaced by a unique marker and each number and time by a
/// fixed value that keeps its range valid; the grammar's keys stay.
fn replace_values(json: &Value, key: Option<&str>, markers: &mut Vec<String>) -> Value {
    match json {
        Value::Object(object) => {
            let mut out = Map::new();
            for (name, value) in object {
                out.insert(name.clone(), replace_values(value, Some(name), markers));
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            // Items of `all`/`any` are conditions; items of a `trait` path are keys.
            let items = items.iter().map(|item| replace_values(item, key, markers));
            Value::Array(items.collect())
        }
        Value::String(_) => match key {
            Some("after") => Value::String("1990-01-01".into()),
            Some("before") => Value::String("1990-01-02".into()),
            _ => {
                let marker = format!("ebbmarker{}x", markers.len());
                markers.push(marker.clone());
                Value::String(marker)
            }
        },
        Value::Number(_) => {
            let number = match key {
                Some("lt" | "lte" | "atMost") => 1,
                _ => 0,
            };
            Value::Number(Number::from(number))
        }
        Value::Bool(_) | Value::Null => json.clone(),
    }
}
