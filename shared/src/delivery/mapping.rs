//! Field mapping: a target's payload built from the delivery document, field by field, each with
//! a format and a required flag. A mapping the event cannot satisfy is a permanent failure that
//! names the field.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::contract::{Money, Timestamp};
use crate::ledger::identity;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    String,
    Email,
    /// E.164, e.g. `+14155550123`.
    Phone,
    /// `YYYY-MM-DD` (UTC) from a date-time.
    Date,
    /// RFC 3339 in UTC.
    DateTime,
    /// Integer minor units from a money value.
    MinorUnits,
    /// A decimal string in major units from a money value (`"20.00"`).
    Decimal,
    Integer,
}

/// One target field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldMapping {
    /// The target's field name (may be dotted to nest: `customer.email`).
    pub to: String,
    /// Dotted path into the delivery document: `event.data.amount`, `entity.fields.email`, …
    pub from: String,
    #[serde(default = "default_format")]
    pub format: Format,
    #[serde(default)]
    pub required: bool,
}

fn default_format() -> Format {
    Format::String
}

/// Reads a dotted path (`a.b.0.c`) in a JSON document.
pub fn lookup<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.')
        .try_fold(doc, |v, seg| match v {
            Value::Object(m) => m.get(seg),
            Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        })
        .filter(|v| !v.is_null())
}

/// Formats one value; `Err` says why it does not fit.
pub fn format_value(value: &Value, format: Format) -> Result<Value, String> {
    let text = || {
        value
            .as_str()
            .map(str::to_owned)
            .or_else(|| value.as_number().map(ToString::to_string))
    };
    let money = || {
        serde_json::from_value::<Money>(value.clone())
            .map_err(|_| "is not a money value".to_owned())
    };
    match format {
        Format::String => text()
            .map(Value::String)
            .ok_or_else(|| "is not text".into()),
        Format::Email => text()
            .and_then(|t| identity::normalize_email(&t))
            .map(Value::String)
            .ok_or_else(|| "is not an email address".into()),
        Format::Phone => text()
            .and_then(|t| identity::normalize_phone(&t))
            .map(Value::String)
            .ok_or_else(|| "is not an E.164 phone number".into()),
        Format::Date | Format::DateTime => {
            let t = text()
                .and_then(|t| Timestamp::parse(&t))
                .ok_or("is not a date-time")?;
            let full = t.to_string();
            Ok(Value::String(if format == Format::Date {
                full[..10].to_owned()
            } else {
                full
            }))
        }
        Format::MinorUnits => Ok(Value::from(money()?.amount_minor)),
        Format::Decimal => Ok(Value::String(decimal(&money()?))),
        Format::Integer => value
            .as_i64()
            .map(Value::from)
            .ok_or_else(|| "is not an integer".into()),
    }
}

/// Major units with the currency's minor digits, exactly: 2000 USD → "20.00", 1500 JPY → "1500".
pub fn decimal(money: &Money) -> String {
    let digits = money.currency.minor_digits();
    let sign = if money.amount_minor < 0 { "-" } else { "" };
    let abs = money.amount_minor.unsigned_abs();
    if digits == 0 {
        return format!("{sign}{abs}");
    }
    let scale = 10_u64.pow(digits);
    format!(
        "{sign}{}.{:0width$}",
        abs / scale,
        abs % scale,
        width = digits as usize
    )
}

/// Builds the mapped payload; `Err` names the first field that cannot be filled.
pub fn map(doc: &Value, fields: &[FieldMapping]) -> Result<Value, String> {
    let mut out = Value::Object(Map::new());
    for field in fields {
        let Some(value) = lookup(doc, &field.from) else {
            if field.required {
                return Err(format!(
                    "{} (from {}) is required but missing",
                    field.to, field.from
                ));
            }
            continue;
        };
        let formatted = format_value(value, field.format)
            .map_err(|why| format!("{} (from {}) {why}", field.to, field.from))?;
        insert(&mut out, &field.to, formatted);
    }
    Ok(out)
}

fn insert(out: &mut Value, dotted: &str, value: Value) {
    let mut node = out;
    let mut parts = dotted.split('.').peekable();
    while let Some(part) = parts.next() {
        let map = node
            .as_object_mut()
            .expect("mapping output is built from objects");
        if parts.peek().is_none() {
            map.insert(part.to_owned(), value);
            return;
        }
        node = map
            .entry(part.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !node.is_object() {
            *node = Value::Object(Map::new());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(to: &str, from: &str, format: Format, required: bool) -> FieldMapping {
        FieldMapping {
            to: to.into(),
            from: from.into(),
            format,
            required,
        }
    }

    #[test]
    fn formats_each_kind_of_value() {
        let money = json!({"amount_minor": 2050, "currency": "USD"});
        assert_eq!(format_value(&money, Format::Decimal), Ok(json!("20.50")));
        assert_eq!(format_value(&money, Format::MinorUnits), Ok(json!(2050)));
        assert_eq!(
            format_value(
                &json!({"amount_minor": 1500, "currency": "JPY"}),
                Format::Decimal
            ),
            Ok(json!("1500"))
        );
        assert_eq!(
            format_value(
                &json!({"amount_minor": -1234, "currency": "KWD"}),
                Format::Decimal
            ),
            Ok(json!("-1.234"))
        );
        assert_eq!(
            format_value(&json!(" A@B.CO "), Format::Email),
            Ok(json!("a@b.co"))
        );
        assert_eq!(
            format_value(&json!("+1 415 555 0123"), Format::Phone),
            Ok(json!("+14155550123"))
        );
        assert_eq!(
            format_value(&json!("2025-11-23T12:00:00+01:00"), Format::Date),
            Ok(json!("2025-11-23"))
        );
        assert_eq!(
            format_value(&json!("2025-11-23T12:00:00+01:00"), Format::DateTime),
            Ok(json!("2025-11-23T11:00:00Z"))
        );
        assert!(format_value(&json!("not a phone"), Format::Phone).is_err());
        assert!(format_value(&json!(12.5), Format::Integer).is_err());
    }

    #[test]
    fn decimal_and_minor_units_round_trip() {
        for (minor, currency) in [
            (0, "USD"),
            (1, "USD"),
            (2050, "USD"),
            (-99, "EUR"),
            (1500, "JPY"),
            (1234, "KWD"),
            (i64::MAX / 10, "USD"),
        ] {
            let m = Money::new(minor, currency.try_into().expect("currency"));
            let back = Money::from_decimal(&decimal(&m), currency).expect("parses");
            assert_eq!(back, m, "{minor} {currency}");
        }
    }

    #[test]
    fn a_missing_required_field_is_named() {
        let doc = json!({"event": {"data": {"amount": {"amount_minor": 100, "currency": "EUR"}}}});
        let fields = [
            field("total", "event.data.amount", Format::Decimal, true),
            field("customer.email", "entity.fields.email", Format::Email, true),
        ];
        assert_eq!(
            map(&doc, &fields),
            Err("customer.email (from entity.fields.email) is required but missing".into())
        );
        let optional = [
            field("total", "event.data.amount", Format::Decimal, true),
            field(
                "customer.email",
                "entity.fields.email",
                Format::Email,
                false,
            ),
        ];
        assert_eq!(map(&doc, &optional), Ok(json!({"total": "1.00"})));
    }

    #[test]
    fn an_invalid_value_is_named_with_the_reason() {
        let doc = json!({"entity": {"fields": {"phone": "call me"}}});
        let fields = [field("phone", "entity.fields.phone", Format::Phone, false)];
        assert_eq!(
            map(&doc, &fields),
            Err("phone (from entity.fields.phone) is not an E.164 phone number".into())
        );
    }
}
