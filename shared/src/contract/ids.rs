//! Identifiers, each a newtype parsed once at the boundary.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a string is not a valid identifier of some kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind}: {reason}")]
pub struct IdError {
    pub kind: &'static str,
    pub reason: &'static str,
}

/// Declares a string newtype whose only constructor is `TryFrom<String>` through `$check`.
macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $check:path, $schema:tt) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        // Written as the string it holds, without the copy `into = "String"` would make.
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(value: String) -> Result<Self, IdError> {
                $check(&value).map_err(|reason| IdError { kind: $kind, reason })?;
                Ok(Self(value))
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(value: &str) -> Result<Self, IdError> {
                Self::try_from(value.to_owned())
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(value: &str) -> Result<Self, IdError> {
                Self::try_from(value.to_owned())
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl schemars::JsonSchema for $name {
            fn schema_name() -> Cow<'static, str> {
                stringify!($name).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!($schema)
            }
        }
    };
}

fn check_source_name(s: &str) -> Result<(), &'static str> {
    let ok_len = (1..=63).contains(&s.len());
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok =
        chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
    if ok_len && first_ok && rest_ok {
        Ok(())
    } else {
        Err("expected 1-63 characters of a-z, 0-9, '-' or '_', starting with a letter or digit")
    }
}

fn check_source_event_id(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 256 {
        return Err("expected 1-256 bytes");
    }
    if s.chars().any(char::is_control) {
        return Err("control characters are not allowed");
    }
    Ok(())
}

fn check_event_type(s: &str) -> Result<(), &'static str> {
    let segment_ok = |seg: &str| {
        seg.chars().next().is_some_and(|c| c.is_ascii_lowercase())
            && seg
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let mut segments = s.split('.');
    let first = segments.next().is_some_and(segment_ok);
    let mut count = 1;
    let rest = segments.all(|seg| {
        count += 1;
        segment_ok(seg)
    });
    if first && rest && count >= 2 && s.len() <= 64 {
        Ok(())
    } else {
        Err("expected dotted lowercase segments such as payment.succeeded")
    }
}

fn check_idempotency_key(s: &str) -> Result<(), &'static str> {
    let (source, rest) = s
        .split_once(':')
        .ok_or("expected {source}:{provider event id}")?;
    check_source_name(source)?;
    check_source_event_id(rest)
}

fn check_event_id(s: &str) -> Result<(), &'static str> {
    ulid::Ulid::from_string(s)
        .map(|_| ())
        .map_err(|_| "expected a ULID")
}

string_id!(
    /// The name a deployment gives a source; it is also the route (`POST /webhooks/{name}`).
    SourceName, "source name", check_source_name,
    { "type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}$" }
);
string_id!(
    /// The provider's own id of the event (or a documented derivation where it has none).
    SourceEventId, "source event id", check_source_event_id,
    { "type": "string", "minLength": 1, "maxLength": 256 }
);
string_id!(
    /// A canonical event type, e.g. `payment.succeeded`.
    EventType, "event type", check_event_type,
    { "type": "string", "pattern": "^[a-z][a-z0-9_]*(\\.[a-z][a-z0-9_]*)+$" }
);
string_id!(
    /// `{source}:{source event id}`: stable across every retry of the same provider event.
    IdempotencyKey, "idempotency key", check_idempotency_key,
    { "type": "string", "pattern": "^[a-z0-9][a-z0-9_-]{0,62}:.+$" }
);
string_id!(
    /// plumbline's own id of an event: a ULID, so ids sort by the time they were received.
    EventId, "event id", check_event_id,
    { "type": "string", "pattern": "^[0-9A-HJKMNP-TV-Z]{26}$" }
);

impl EventId {
    /// A new id for an event received at `at`.
    pub fn generate(at: super::Timestamp) -> Self {
        let ms = u64::try_from(at.unix_millis()).unwrap_or(0);
        let ulid = ulid::Ulid::from_parts(ms, rand_bits());
        Self(ulid.to_string())
    }
}

/// 80 random bits for a ULID, from the ulid crate's own generator.
fn rand_bits() -> u128 {
    ulid::Ulid::new().random()
}

impl IdempotencyKey {
    pub fn for_event(source: &SourceName, id: &SourceEventId) -> Self {
        let mut key = String::with_capacity(source.0.len() + 1 + id.0.len());
        key.push_str(&source.0);
        key.push(':');
        key.push_str(&id.0);
        Self(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_names_are_route_safe() {
        assert!(SourceName::try_from("stripe").is_ok());
        assert!(SourceName::try_from("shop-eu_2").is_ok());
        for bad in ["", "Stripe", "a/b", "a#b", "-x", &"x".repeat(64)] {
            assert!(SourceName::try_from(bad).is_err(), "{bad} must be rejected");
        }
    }

    #[test]
    fn event_types_are_dotted_lowercase() {
        assert!(EventType::try_from("payment.succeeded").is_ok());
        assert!(EventType::try_from("payment.dispute_won").is_ok());
        for bad in [
            "payment",
            "Payment.succeeded",
            "payment..x",
            ".x",
            "payment.",
            "a.b c",
        ] {
            assert!(EventType::try_from(bad).is_err(), "{bad} must be rejected");
        }
    }

    #[test]
    fn idempotency_key_joins_source_and_provider_id() {
        let source = SourceName::try_from("stripe").expect("valid");
        let id = SourceEventId::try_from("evt_1").expect("valid");
        let key = IdempotencyKey::for_event(&source, &id);
        assert_eq!(key.as_str(), "stripe:evt_1");
        assert_eq!(IdempotencyKey::try_from("stripe:evt_1"), Ok(key));
        assert!(IdempotencyKey::try_from("no-colon").is_err());
    }

    #[test]
    fn event_ids_sort_by_receive_time() {
        let early = super::super::Timestamp::from_unix(1_700_000_000).expect("in range");
        let late = early.plus_secs(1);
        assert!(EventId::generate(early) < EventId::generate(late));
        assert!(EventId::try_from("not-a-ulid").is_err());
    }

    #[test]
    fn ids_reject_control_characters() {
        assert!(SourceEventId::try_from("evt\n1").is_err());
        assert!(SourceEventId::try_from("").is_err());
    }
}
