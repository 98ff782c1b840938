//! JSON the user writes (configs): read strictly, and decode errors told in
//! the user's terms.
//!
//! - [`parse`] accepts a UTF-8 byte-order mark (editors on Windows write
//!   one) and refuses a key given twice in one object, naming it and where
//!   (`serde_json` would silently keep the last value).
//! - [`decode`] deserializes with the path of the failing field tracked and
//!   [`describe`] turns serde's message into one that names that field, says
//!   what it needs in JSON terms (never a Rust type such as `usize` or
//!   `struct TrainingConfig`) and shows the value it got.
//!
//! Custom deserializers that decode a part themselves (a layer inside a
//! block, a schedule) report the path inside that part as
//! `field `sub.path`: message`; [`describe`] joins it to the outer path.

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use serde_path_to_error::Segment;
use std::fmt;

/// Parses JSON text (an optional UTF-8 BOM first), refusing duplicate keys.
pub fn parse(text: &str) -> Result<Value, serde_json::Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Strict { at: Where::Top }.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Where a value sits, for the duplicate-key message (built only then).
#[derive(Clone, Copy)]
enum Where<'a> {
    Top,
    Key(&'a Where<'a>, &'a str),
    Index(&'a Where<'a>, usize),
}

impl fmt::Display for Where<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Where::Top => Ok(()),
            Where::Key(Where::Top, k) => write!(f, "{k}"),
            Where::Key(parent, k) => write!(f, "{parent}.{k}"),
            Where::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

/// A JSON value, built like `serde_json::Value` but refusing duplicate keys.
struct Strict<'a> {
    at: Where<'a>,
}

impl<'de> DeserializeSeed<'de> for Strict<'_> {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strict<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict {
            at: Where::Index(&self.at, items.len()),
        })? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                let within = match self.at {
                    Where::Top => "the top level".to_string(),
                    at => format!("`{at}`"),
                };
                return Err(de::Error::custom(format!(
                    "`{key}` is given twice in {within}; keep one (JSON objects take each key once)"
                )));
            }
            let value = map.next_value_seed(Strict {
                at: Where::Key(&self.at, &key),
            })?;
            out.insert(key, value);
        }
        Ok(Value::Object(out))
    }
}

/// Deserializes `value` as `T`; on failure, [`describe`]s the error.
pub fn decode<T: for<'de> Deserialize<'de>>(value: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| describe(&e, value))
}

/// `field `a.b[0]`: expected ..., got ...`, or the bare message for an error
/// at the top of `root`.
pub fn describe(e: &serde_path_to_error::Error<serde_json::Error>, root: &Value) -> String {
    let mut path: Vec<Step> = e
        .path()
        .iter()
        .filter_map(|s| match s {
            Segment::Map { key } => Some(Step::Key(key.clone())),
            Segment::Seq { index } => Some(Step::Index(*index)),
            Segment::Enum { variant } => Some(Step::Variant(variant.clone())),
            Segment::Unknown => None,
        })
        .collect();
    let mut msg = e.inner().to_string();
    // A part decoded on its own (see the module comment) names its own path.
    if let Some((inner, rest)) = split_field(&msg) {
        path.extend(parse_path(inner));
        msg = rest.to_string();
    }
    // `unknown field `x`` is about a key, not about the value at it.
    if let Some(rest) = msg.strip_prefix("unknown field `")
        && let Some((field, _)) = rest.split_once('`')
        && path.last() == Some(&Step::Key(field.to_string()))
    {
        path.pop();
        msg = msg.replace(", there are no fields", "; this takes no fields");
    }
    let got = value_at(root, &path);
    let msg = humanize(&msg, got);
    if path.iter().all(|s| matches!(s, Step::Variant(_))) {
        msg
    } else {
        format!("field `{}`: {msg}", render(&path))
    }
}

/// One step of a path into a JSON value.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Key(String),
    Index(usize),
    /// An externally tagged enum's variant: a key in the JSON, but not a
    /// field the user wrote (see `LrSchedule`).
    Variant(String),
}

fn render(path: &[Step]) -> String {
    let mut out = String::new();
    for s in path {
        match s {
            Step::Key(k) if out.is_empty() => out.push_str(k),
            Step::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
            Step::Variant(_) => {}
        }
    }
    out
}

/// `a.b[0].c` back into steps.
fn parse_path(s: &str) -> Vec<Step> {
    let mut out = Vec::new();
    for part in s.split('.') {
        let (key, mut rest) = part.split_once('[').map_or((part, ""), |(k, r)| (k, r));
        if !key.is_empty() {
            out.push(Step::Key(key.to_string()));
        }
        while let Some((index, after)) = rest.split_once(']') {
            if let Ok(i) = index.trim_start_matches('[').parse() {
                out.push(Step::Index(i));
            }
            rest = after;
        }
    }
    out
}

/// `field `x`: rest` → (`x`, `rest`).
fn split_field(msg: &str) -> Option<(&str, &str)> {
    let rest = msg.strip_prefix("field `")?;
    let (path, rest) = rest.split_once("`: ")?;
    Some((path, rest))
}

fn value_at<'a>(root: &'a Value, path: &[Step]) -> Option<&'a Value> {
    let mut here = root;
    for s in path {
        here = match (s, here) {
            (Step::Key(k) | Step::Variant(k), Value::Object(m)) => m.get(k)?,
            (Step::Index(i), Value::Array(a)) => a.get(*i)?,
            _ => return None,
        };
    }
    Some(here)
}

/// A value for a message: JSON, cut short when long.
pub fn show(v: &Value) -> String {
    let text = v.to_string();
    if text.chars().count() <= 60 {
        return text;
    }
    let cut: String = text.chars().take(57).collect();
    format!("{cut}...")
}

/// serde's message in JSON terms, with the value got when known.
fn humanize(msg: &str, got: Option<&Value>) -> String {
    // "invalid type: integer `5`, expected struct X" and
    // "invalid value: integer `-1`, expected usize": say what is expected
    // in JSON terms, then what was found.
    for head in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = msg.strip_prefix(head)
            && let Some((found, expected)) = rest.rsplit_once(", expected ")
        {
            let expected = json_terms(expected);
            // "3" for 3: the quotes are the mistake.
            let hint = match got {
                Some(Value::String(text))
                    if text.trim().parse::<f64>().is_ok()
                        && (expected.contains("integer") || expected.contains("number")) =>
                {
                    "; write the number without quotes"
                }
                _ => "",
            };
            let found = got.map_or_else(|| found.to_string(), show);
            return format!("expected {expected}, got {found}{hint}");
        }
    }
    if let Some(rest) = msg.strip_prefix("invalid length ")
        && let Some((_, expected)) = rest.split_once(", expected ")
    {
        let got = got
            .map(|v| format!(", got {}", show(v)))
            .unwrap_or_default();
        return format!("expected {}{got}", json_terms(expected));
    }
    // An untagged enum's own `expecting` text (a number or a pair, ...).
    if msg.starts_with("a ") || msg.starts_with("an ") || msg.starts_with('"') {
        let hint = match got {
            Some(Value::String(text)) if text.trim().parse::<f64>().is_ok() => {
                "; write the number without quotes"
            }
            _ => "",
        };
        let got = got
            .map(|v| format!(", got {}", show(v)))
            .unwrap_or_default();
        return format!("expected {msg}{got}{hint}");
    }
    msg.to_string()
}

/// Rust's names for what serde expected, in JSON terms.
fn json_terms(expected: &str) -> String {
    let e = expected.trim();
    if e.starts_with("struct ") || e == "a map" {
        return "an object {...}".into();
    }
    if let Some(n) = e
        .strip_prefix("an array of length ")
        .or_else(|| e.strip_prefix("a tuple of size "))
    {
        return format!("a list of {n} values");
    }
    match e {
        "usize" | "u64" | "u32" | "u16" => "a non-negative integer".into(),
        "u8" => "an integer from 0 to 255".into(),
        "i64" | "i32" | "isize" | "i16" | "i8" => "an integer".into(),
        "f64" | "f32" => "a number".into(),
        "a sequence" => "a list [...]".into(),
        "a boolean" => "true or false".into(),
        "a string" | "path string" => "a string".into(),
        "option" => "a value or null".into(),
        "unit" => "null".into(),
        other => other
            .strip_prefix("enum ")
            .map_or_else(|| other.to_string(), |_| "one of the listed names".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        inner: Inner,
        #[serde(default)]
        sizes: Vec<usize>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        count: usize,
        rate: f64,
    }

    fn err(text: &str) -> String {
        decode::<Outer>(&parse(text).unwrap()).unwrap_err()
    }

    #[test]
    fn messages_name_the_field_in_json_terms_and_show_the_value() {
        assert_eq!(
            err(r#"{"inner": 5}"#),
            "field `inner`: expected an object {...}, got 5"
        );
        assert_eq!(
            err(r#"{"inner": {"count": -1, "rate": 1}}"#),
            "field `inner.count`: expected a non-negative integer, got -1"
        );
        assert_eq!(
            err(r#"{"inner": {"count": 1, "rate": "x"}}"#),
            "field `inner.rate`: expected a number, got \"x\""
        );
        assert_eq!(
            err(r#"{"inner": {"count": 1, "rate": 1}, "sizes": [1, -2]}"#),
            "field `sizes[1]`: expected a non-negative integer, got -2"
        );
        let e = err(r#"{"inner": {"count": 1}}"#);
        assert_eq!(e, "field `inner`: missing field `rate`");
    }

    #[test]
    fn a_byte_order_mark_is_accepted_and_duplicate_keys_are_refused_with_their_place() {
        assert_eq!(parse("\u{feff}{\"a\": 1}").unwrap()["a"], 1);
        let e = parse(r#"{"a": 1, "a": 2}"#).unwrap_err().to_string();
        assert!(e.contains("`a` is given twice in the top level"), "{e}");
        let e = parse(r#"{"layers": [{"type": "relu"}, {"k": 1, "k": 1}]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`k` is given twice in `layers[1]`"), "{e}");
        assert!(e.contains("line 1"), "{e}");
        assert!(parse(r#"{"a": {"b": 1}, "c": {"b": 2}}"#).is_ok());
        assert!(parse("{} x").is_err());
    }

    #[test]
    fn nested_paths_join() {
        assert_eq!(
            parse_path("a.b[2][3].c"),
            vec![
                Step::Key("a".into()),
                Step::Key("b".into()),
                Step::Index(2),
                Step::Index(3),
                Step::Key("c".into())
            ]
        );
        assert_eq!(render(&parse_path("x[0].y")), "x[0].y");
    }
}
