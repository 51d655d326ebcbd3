//! Money as integer minor units and an ISO 4217 code. Never a float.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("currency must be three ASCII letters (ISO 4217), got {0:?}")]
    Currency(String),
    #[error("amount {0:?} is not an integer number of minor units")]
    Amount(String),
}

/// An ISO 4217 alphabetic code, stored upper-case.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Currency(String);

// Written as the code it holds, without the copy `into = "String"` would make.
impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl Currency {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// ISO 4217 minor unit digits (2 for USD, 0 for JPY, 3 for KWD).
    pub fn minor_digits(&self) -> u32 {
        match self.as_str() {
            "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF"
            | "UGX" | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
            "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
            _ => 2,
        }
    }
}

impl TryFrom<String> for Currency {
    type Error = MoneyError;
    fn try_from(value: String) -> Result<Self, MoneyError> {
        if value.len() == 3 && value.chars().all(|c| c.is_ascii_alphabetic()) {
            Ok(Self(value.to_ascii_uppercase()))
        } else {
            Err(MoneyError::Currency(value))
        }
    }
}

impl TryFrom<&str> for Currency {
    type Error = MoneyError;
    fn try_from(value: &str) -> Result<Self, MoneyError> {
        Self::try_from(value.to_owned())
    }
}

impl From<Currency> for String {
    fn from(value: Currency) -> Self {
        value.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl schemars::JsonSchema for Currency {
    fn schema_name() -> Cow<'static, str> {
        "Currency".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "pattern": "^[A-Z]{3}$" })
    }
}

/// An amount in the currency's minor units (cents for USD, yen for JPY).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Money {
    pub amount_minor: i64,
    pub currency: Currency,
}

impl Money {
    pub fn new(amount_minor: i64, currency: Currency) -> Self {
        Self {
            amount_minor,
            currency,
        }
    }

    /// From a JSON value holding minor units as an integer or an integer string (some providers
    /// send `"1000"`). Decimal strings are refused: their scale differs per provider.
    pub fn from_minor_json(amount: &serde_json::Value, currency: &str) -> Result<Self, MoneyError> {
        let amount_minor = match amount {
            serde_json::Value::Number(n) => n.as_i64(),
            serde_json::Value::String(s) => s.parse::<i64>().ok(),
            _ => None,
        }
        .ok_or_else(|| MoneyError::Amount(amount.to_string()))?;
        Ok(Self::new(amount_minor, Currency::try_from(currency)?))
    }

    /// From a decimal string in major units, e.g. Shopify's `"12.50"`, given the currency's
    /// number of minor digits. Exact: no float is involved.
    pub fn from_decimal(text: &str, currency: &str) -> Result<Self, MoneyError> {
        let currency = Currency::try_from(currency)?;
        let digits = currency.minor_digits() as usize;
        let bad = || MoneyError::Amount(text.to_owned());
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        let all_digits = |s: &str| s.chars().all(|c| c.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(frac) || frac.len() > digits {
            return Err(bad());
        }
        let scale = 10_i128.pow(u32::try_from(digits).map_err(|_| bad())?);
        let whole: i128 = whole.parse().map_err(|_| bad())?;
        let frac_padded = format!("{frac:0<digits$}");
        let frac: i128 = if digits == 0 {
            0
        } else {
            frac_padded.parse().map_err(|_| bad())?
        };
        // In i128 and signed before narrowing, so the most negative amount fits too.
        let magnitude = whole
            .checked_mul(scale)
            .and_then(|w| w.checked_add(frac))
            .ok_or_else(bad)?;
        let minor =
            i64::try_from(if negative { -magnitude } else { magnitude }).map_err(|_| bad())?;
        Ok(Self::new(minor, currency))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_minor_units_from_numbers_and_strings() {
        let m = Money::from_minor_json(&json!(2000), "usd").expect("valid");
        assert_eq!((m.amount_minor, m.currency.as_str()), (2000, "USD"));
        let m = Money::from_minor_json(&json!("1099"), "EUR").expect("valid");
        assert_eq!(m.amount_minor, 1099);
        assert!(Money::from_minor_json(&json!(10.5), "EUR").is_err());
        assert!(Money::from_minor_json(&json!("10.50"), "EUR").is_err());
        assert!(Money::from_minor_json(&json!(1), "EURO").is_err());
    }

    #[test]
    fn parses_decimals_exactly() {
        let cases = [
            ("12.50", "USD", 1250),
            ("12.5", "USD", 1250),
            ("12", "USD", 1200),
            ("0.07", "EUR", 7),
            ("1500", "JPY", 1500),
            ("1.234", "KWD", 1234),
            ("-3.10", "USD", -310),
        ];
        for (text, cur, minor) in cases {
            assert_eq!(
                Money::from_decimal(text, cur).map(|m| m.amount_minor),
                Ok(minor),
                "{text}"
            );
        }
        for bad in ["12.345", "1e3", "", ".5", "12.5.0", "1,00", "15.5"] {
            let cur = if bad == "15.5" { "JPY" } else { "USD" };
            assert!(
                Money::from_decimal(bad, cur).is_err(),
                "{bad} must be rejected"
            );
        }
    }
}
