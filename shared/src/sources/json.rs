//! Reading provider JSON with precise reasons for what is missing or wrong.

use serde_json::Value;

use crate::contract::{Money, SourceEventId, Timestamp};

/// `/a/b` → `a.b`, for reasons operators read.
fn dotted(pointer: &str) -> String {
    pointer.trim_start_matches('/').replace('/', ".")
}

pub fn str_at<'a>(v: &'a Value, pointer: &str) -> Result<&'a str, String> {
    match v.pointer(pointer) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        Some(Value::String(_)) => Err(format!("{} is empty", dotted(pointer))),
        Some(_) => Err(format!("{} is not a string", dotted(pointer))),
        None => Err(format!("{} is missing", dotted(pointer))),
    }
}

/// A string, or a number written as its decimal text (Shopify ids are numbers).
pub fn id_at(v: &Value, pointer: &str) -> Result<String, String> {
    match v.pointer(pointer) {
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Ok(n.to_string()),
        _ => str_at(v, pointer).map(str::to_owned),
    }
}

pub fn opt_str(v: &Value, pointer: &str) -> Option<String> {
    match v.pointer(pointer) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

pub fn i64_at(v: &Value, pointer: &str) -> Result<i64, String> {
    match v.pointer(pointer) {
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
        .pointer(amount)
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
