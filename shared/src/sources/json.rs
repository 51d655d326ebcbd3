//! Reading provider JSON with precise reasons for what is missing or wrong.
//!
//! Bodies are parsed into a tree that borrows its strings from the body: the ingress reads a
//! dozen fields of each event and keeps none of the rest, so copying every key and string into
//! a `serde_json::Value` cost more than verifying the signature.

use super::PayloadHash;
use crate::contract::{Money, MoneyError, SourceEventId, Timestamp};

/// A provider's JSON, borrowing from the request body.
pub type Value<'a> = serde_json_borrow::Value<'a>;

/// Parses a body that must be JSON.
pub fn parse(text: &str) -> Result<Value<'_>, serde_json::Error> {
    serde_json::from_str(text)
}

/// JSON Pointer lookup (RFC 6901), without a new `String` per segment unless one is escaped.
pub trait Walk<'a> {
    fn at(&self, pointer: &str) -> Option<&Value<'a>>;
}

impl<'a> Walk<'a> for Value<'a> {
    fn at(&self, pointer: &str) -> Option<&Value<'a>> {
        if pointer.is_empty() {
            return Some(self);
        }
        let path = pointer.strip_prefix('/')?;
        if pointer.contains('~') {
            return path.split('/').try_fold(self, |node, segment| {
                step(node, &segment.replace("~1", "/").replace("~0", "~"))
            });
        }
        path.split('/').try_fold(self, step)
    }
}

fn step<'v, 'a>(node: &'v Value<'a>, segment: &str) -> Option<&'v Value<'a>> {
    match node {
        Value::Object(map) => map.get(segment),
        Value::Array(items) => index(segment).and_then(|i| items.get(i)),
        _ => None,
    }
}

/// The provider's JSON as plumbline keeps it for operators (quarantined and unrouted events).
pub fn to_owned_json(v: &Value<'_>) -> serde_json::Value {
    serde_json::Value::from(v)
}

/// What of an event its payload hash covers: what must differ for a second arrival of the same
/// id to be a conflict rather than a duplicate.
#[derive(Debug, Clone, Copy)]
pub enum Fingerprint {
    /// The whole JSON's content.
    Content,
    /// Only the fields at these pointers: for a provider whose events never change once made,
    /// where every other difference between two copies is how they were rendered.
    Identity(&'static [&'static str]),
}

/// The payload hash of an event under its source's [`Fingerprint`].
pub fn payload_hash(v: &Value<'_>, fingerprint: Fingerprint) -> PayloadHash {
    match fingerprint {
        Fingerprint::Content => content_hash(v),
        Fingerprint::Identity(pointers) => {
            let mut canonical = Vec::with_capacity(256);
            let mut entries = Vec::new();
            for pointer in pointers {
                write_str(&mut canonical, pointer);
                match v.at(pointer) {
                    Some(field) => write_canonical(&mut canonical, field, &mut entries),
                    None => canonical.push(b'-'),
                }
            }
            PayloadHash::of(&canonical)
        }
    }
}

/// SHA-256 of the JSON's content rather than its bytes: object keys in sorted order, strings
/// unescaped, no whitespace. Two copies of one event that differ only in formatting, key order
/// or escaping hash alike.
pub fn content_hash(v: &Value<'_>) -> PayloadHash {
    let mut canonical = Vec::with_capacity(1024);
    let mut entries = Vec::with_capacity(64);
    write_canonical(&mut canonical, v, &mut entries);
    PayloadHash::of(&canonical)
}

/// A tag per kind, and a length before every string, so that no two values write the same
/// bytes. Nothing goes through `fmt`, and one `entries` buffer serves every object's sorting
/// (each sorts its own tail of it): this runs on every webhook.
fn write_canonical<'v, 'a>(
    out: &mut Vec<u8>,
    v: &'v Value<'a>,
    entries: &mut Vec<(&'v str, &'v Value<'a>)>,
) {
    match v {
        Value::Null => out.push(b'n'),
        Value::Bool(true) => out.push(b't'),
        Value::Bool(false) => out.push(b'f'),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.push(b'u');
                out.extend_from_slice(&u.to_le_bytes());
            } else if let Some(i) = n.as_i64() {
                out.push(b'i');
                out.extend_from_slice(&i.to_le_bytes());
            } else {
                out.push(b'd');
                out.extend_from_slice(&n.as_f64().unwrap_or_default().to_bits().to_le_bytes());
            }
        }
        Value::Str(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for item in items {
                write_canonical(out, item, entries);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let start = entries.len();
            entries.extend(map.iter());
            entries[start..].sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for i in start..entries.len() {
                let (key, value) = entries[i];
                write_str(out, key);
                write_canonical(out, value, entries);
            }
            entries.truncate(start);
            out.push(b'}');
        }
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // A body is at most a few MB (`ingress.max_body_bytes`), so a string's length fits in 32 bits.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.push(b's');
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// An array index as JSON Pointer writes it: digits, no sign, no leading zero.
fn index(segment: &str) -> Option<usize> {
    if segment.starts_with('+') || (segment.starts_with('0') && segment.len() != 1) {
        return None;
    }
    segment.parse().ok()
}

/// `/a/b` → `a.b`, for reasons operators read.
fn dotted(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

pub fn str_at<'v>(v: &'v Value<'_>, pointer: &str) -> Result<&'v str, String> {
    match v.at(pointer) {
        Some(Value::Str(s)) if !s.is_empty() => Ok(s),
        Some(Value::Str(_)) => Err(format!("{} is empty", dotted(pointer))),
        Some(_) => Err(format!("{} is not a string", dotted(pointer))),
        None => Err(format!("{} is missing", dotted(pointer))),
    }
}

/// A string, or a number written as its decimal text (Shopify ids are numbers).
pub fn id_at(v: &Value<'_>, pointer: &str) -> Result<String, String> {
    match v.at(pointer) {
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        _ => str_at(v, pointer).map(str::to_owned),
    }
}

pub fn opt_str(v: &Value<'_>, pointer: &str) -> Option<String> {
    match v.at(pointer) {
        Some(Value::Str(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

pub fn i64_at(v: &Value<'_>, pointer: &str) -> Result<i64, String> {
    match v.at(pointer) {
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| format!("{} is not an integer", dotted(pointer))),
        Some(_) => Err(format!("{} is not a number", dotted(pointer))),
        None => Err(format!("{} is missing", dotted(pointer))),
    }
}

pub fn unix_at(v: &Value<'_>, pointer: &str) -> Result<Timestamp, String> {
    let secs = i64_at(v, pointer)?;
    Timestamp::from_unix(secs).ok_or_else(|| format!("{} is out of range", dotted(pointer)))
}

pub fn rfc3339_at(v: &Value<'_>, pointer: &str) -> Result<Timestamp, String> {
    let text = str_at(v, pointer)?;
    Timestamp::parse(text)
        .ok_or_else(|| format!("{} is not an RFC 3339 date-time", dotted(pointer)))
}

pub fn minor_money(v: &Value<'_>, amount: &str, currency: &str) -> Result<Money, String> {
    let value = v
        .at(amount)
        .ok_or_else(|| format!("{} is missing", dotted(amount)))?;
    let code = str_at(v, currency)?;
    minor_of(value, code).map_err(|e| format!("{}: {e}", dotted(amount)))
}

/// An amount in minor units, a number or its text: [`Money::from_minor_json`]'s rules.
pub fn minor_of(value: &Value<'_>, currency: &str) -> Result<Money, MoneyError> {
    Money::from_minor_json(&serde_json::Value::from(value), currency)
}

pub fn decimal_money(v: &Value<'_>, amount: &str, currency: &str) -> Result<Money, String> {
    let text = str_at(v, amount)?;
    let code = str_at(v, currency)?;
    Money::from_decimal(text, code).map_err(|e| format!("{}: {e}", dotted(amount)))
}

pub fn event_id(v: &Value<'_>, pointer: &str) -> Result<SourceEventId, String> {
    let raw = id_at(v, pointer)?;
    SourceEventId::try_from(raw).map_err(|e| format!("{}: {e}", dotted(pointer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_hash_ignores_formatting_and_key_order_but_not_content() {
        let hash = |text: &str| content_hash(&parse(text).expect("json"));
        let base = hash(r#"{"a": 1, "b": ["x", {"c": null, "d": true}]}"#);
        assert_eq!(hash(r#"{"b":["x",{"d":true,"c":null}],"a":1}"#), base);
        assert_eq!(
            hash(r#"{"a": 1, "b": ["\u0078", {"c": null, "d": true}]}"#),
            base
        );
        for changed in [
            r#"{"a": 2, "b": ["x", {"c": null, "d": true}]}"#,
            r#"{"a": 1, "b": [{"c": null, "d": true}, "x"]}"#,
            r#"{"a": "1", "b": ["x", {"c": null, "d": true}]}"#,
            r#"{"a": 1, "b": ["x", {"c": null, "d": false}]}"#,
            r#"{"a": 1, "b": ["x", {"c": null}]}"#,
            r#"{"a": 1, "b": ["x", {"cd": null, "": true}]}"#,
        ] {
            assert_ne!(hash(changed), base, "{changed}");
        }
    }

    #[test]
    fn an_identity_fingerprint_covers_only_its_fields() {
        let identity = Fingerprint::Identity(&["/id", "/data/id"]);
        let hash = |text: &str| payload_hash(&parse(text).expect("json"), identity);
        let base = hash(r#"{"id": "e1", "data": {"id": "o1", "amount": 1}, "v": "2024"}"#);
        assert_eq!(
            hash(r#"{"id": "e1", "data": {"id": "o1", "amount": 2}, "v": "2025"}"#),
            base
        );
        assert_ne!(hash(r#"{"id": "e1", "data": {"id": "o2"}}"#), base);
        assert_ne!(
            hash(r#"{"id": "e1"}"#),
            base,
            "a missing field is not an empty one"
        );
    }

    #[test]
    fn walking_agrees_with_json_pointer() {
        let owned = serde_json::json!({
            "data": {"object": {"id": "pi_1", "items": [{"sku": "a"}, {"sku": "b"}]}},
            "a/b": 1,
            "m~n": 2,
            "": {"": 3}
        });
        let text = owned.to_string();
        let v = parse(&text).expect("json");
        for pointer in [
            "",
            "/data",
            "/data/object/id",
            "/data/object/items/1/sku",
            "/data/object/items/2/sku",
            "/data/object/items/x",
            "/data/object/items/01",
            "/data/object/items/+1",
            "/data/object/id/deeper",
            "/missing",
            "data",
            "/a~1b",
            "/m~0n",
            "/",
            "//",
        ] {
            assert_eq!(
                v.at(pointer).map(serde_json::Value::from),
                owned.pointer(pointer).cloned(),
                "{pointer:?}"
            );
        }
    }
}
