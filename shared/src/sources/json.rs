//! Reading provider JSON with precise reasons for what is missing or wrong.

use serde_json::Value;

use crate::contract::{Money, SourceEventId, Timestamp};

/// [`Value::pointer`] without its new `String` per path segment (it unescapes every one): the
/// ingress walks a dozen pointers per event, and each is a literal here.
pub trait Walk {
    fn at(&self, pointer: &str) -> Option<&Value>;
}

impl Walk for Value {
    fn at(&self, pointer: &str) -> Option<&Value> {
        if pointer.contains('~') {
            return self.pointer(pointer);
        }
        if pointer.is_empty() {
            return Some(self);
        }
        pointer
            .strip_prefix('/')?
            .split('/')
            .try_fold(self, |node, segment| match node {
                Value::Object(map) => map.get(segment),
                Value::Array(items) => index(segment).and_then(|i| items.get(i)),
                _ => None,
            })
    }
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

pub fn str_at<'a>(v: &'a Value, pointer: &str) -> Result<&'a str, String> {
    match v.at(pointer) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(format!("{} is empty", dotted(pointer))),
        Some(_) => Err(format!("{} is not a string", dotted(pointer))),
        None => Err(format!("{} is missing", dotted(pointer))),
    }
}

/// A string, or a number written as its decimal text (Shopify ids are numbers).
pub fn id_at(v: &Value, pointer: &str) -> Result<String, String> {
    match v.at(pointer) {
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        _ => str_at(v, pointer).map(str::to_owned),
    }
}

pub fn opt_str(v: &Value, pointer: &str) -> Option<String> {
    match v.at(pointer) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

pub fn i64_at(v: &Value, pointer: &str) -> Result<i64, String> {
    match v.at(pointer) {
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| format!("{} is not an integer", dotted(pointer))),
        Some(_) => Err(format!("{} is not a number", dotted(pointer))),
        None => Err(format!("{} is missing", dotted(pointer))),
    }
}

pub fn unix_at(v: &Value, pointer: &str) -> Result<Timestamp, String> {
    let secs = i64_at(v, pointer)?;
    Timestamp::from_unix(secs).ok_or_else(|| format!("{} is out of range", dotted(pointer)))
}

pub fn rfc3339_at(v: &Value, pointer: &str) -> Result<Timestamp, String> {
    let text = str_at(v, pointer)?;
    Timestamp::parse(text)
        .ok_or_else(|| format!("{} is not an RFC 3339 date-time", dotted(pointer)))
}

pub fn minor_money(v: &Value, amount: &str, currency: &str) -> Result<Money, String> {
    let value = v
        .at(amount)
        .ok_or_else(|| format!("{} is missing", dotted(amount)))?;
    let code = str_at(v, currency)?;
    Money::from_minor_json(value, code).map_err(|e| format!("{}: {e}", dotted(amount)))
}

pub fn decimal_money(v: &Value, amount: &str, currency: &str) -> Result<Money, String> {
    let text = str_at(v, amount)?;
    let code = str_at(v, currency)?;
    Money::from_decimal(text, code).map_err(|e| format!("{}: {e}", dotted(amount)))
}

pub fn event_id(v: &Value, pointer: &str) -> Result<SourceEventId, String> {
    let raw = id_at(v, pointer)?;
    SourceEventId::try_from(raw).map_err(|e| format!("{}: {e}", dotted(pointer)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walking_agrees_with_json_pointer() {
        let v = serde_json::json!({
            "data": {"object": {"id": "pi_1", "items": [{"sku": "a"}, {"sku": "b"}]}},
            "a/b": 1,
            "m~n": 2,
            "": {"": 3}
        });
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
            assert_eq!(v.at(pointer), v.pointer(pointer), "{pointer:?}");
        }
    }
}
