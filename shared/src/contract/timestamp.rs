use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A UTC instant, written as RFC 3339 with at most millisecond precision is not enforced:
/// whatever precision the provider gave is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(OffsetDateTime);

impl Timestamp {
    pub fn new(at: OffsetDateTime) -> Self {
        Self(at.to_offset(time::UtcOffset::UTC))
    }

    /// From seconds since the Unix epoch; `None` when out of range.
    pub fn from_unix(secs: i64) -> Option<Self> {
        OffsetDateTime::from_unix_timestamp(secs).ok().map(Self)
    }

    pub fn parse(text: &str) -> Option<Self> {
        OffsetDateTime::parse(text, &Rfc3339).ok().map(Self::new)
    }

    pub fn unix(self) -> i64 {
        self.0.unix_timestamp()
    }

    pub fn unix_millis(self) -> i64 {
        i64::try_from(self.0.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
    }

    #[must_use]
    pub fn plus_secs(self, secs: i64) -> Self {
        Self(self.0 + time::Duration::seconds(secs))
    }

    /// RFC 3339 with all nine digits of the second's fraction, so that text order is time
    /// order: the shortest form `Display` writes does not sort (`…:40Z` after `…:40.5Z`).
    /// For keys stores sort by, not for people.
    pub fn sort_key(self) -> String {
        let t = self.0;
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.nanosecond()
        )
    }

    /// RFC 3339 in UTC, exactly as `time`'s `Rfc3339` writes it (`Z`, a fraction only when
    /// there is one, without trailing zeros), but into a buffer on the stack: every event writes
    /// several, and the general formatter allocates a `String` for each. Years 0 to 9999 only
    /// (the others are written as Unix seconds).
    fn rfc3339(self) -> Option<Ascii> {
        let t = self.0;
        let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
        let mut out = Ascii::default();
        out.digits(year, 4);
        out.byte(b'-');
        out.digits(u32::from(u8::from(t.month())), 2);
        out.byte(b'-');
        out.digits(u32::from(t.day()), 2);
        out.byte(b'T');
        out.digits(u32::from(t.hour()), 2);
        out.byte(b':');
        out.digits(u32::from(t.minute()), 2);
        out.byte(b':');
        out.digits(u32::from(t.second()), 2);
        let (mut nanos, mut width) = (t.nanosecond(), 9);
        if nanos != 0 {
            while nanos % 10 == 0 {
                nanos /= 10;
                width -= 1;
            }
            out.byte(b'.');
            out.digits(nanos, width);
        }
        out.byte(b'Z');
        Some(out)
    }
}

/// RFC 3339 as `rfc3339` writes it, or Unix seconds outside years 0 to 9999.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rfc3339() {
            Some(text) => f.write_str(text.as_str()),
            None => write!(f, "{}", self.0.unix_timestamp()),
        }
    }
}

/// Room for the longest RFC 3339 instant written above (30 bytes).
#[derive(Default)]
struct Ascii {
    bytes: [u8; 30],
    len: usize,
}

impl Ascii {
    fn byte(&mut self, b: u8) {
        self.bytes[self.len] = b;
        self.len += 1;
    }

    /// `value` in exactly `width` decimal digits, zero-padded.
    fn digits(&mut self, value: u32, width: u32) {
        for place in (0..width).rev() {
            // A digit is below 10, so the cast cannot truncate.
            #[allow(clippy::cast_possible_truncation)]
            self.byte(b'0' + (value / 10u32.pow(place) % 10) as u8);
        }
    }

    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Straight from the stack buffer: `collect_str` would go through `fmt` for each one.
        match self.rfc3339() {
            Some(text) => s.serialize_str(text.as_str()),
            None => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = Cow::<str>::deserialize(d)?;
        Self::parse(&text).ok_or_else(|| serde::de::Error::custom("not an RFC 3339 date-time"))
    }
}

impl schemars::JsonSchema for Timestamp {
    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "string", "format": "date-time" })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_rfc3339_in_utc() {
        let t = Timestamp::parse("2026-11-23T10:00:00+02:00").expect("valid");
        assert_eq!(t.to_string(), "2026-11-23T08:00:00Z");
        assert_eq!(Timestamp::parse(&t.to_string()), Some(t));
    }

    #[test]
    fn writes_what_the_rfc3339_formatter_writes() {
        for text in [
            "2026-11-23T08:00:00Z",
            "1970-01-01T00:00:00Z",
            "0001-02-03T04:05:06.7Z",
            "9999-12-31T23:59:59.999999999Z",
            "2026-11-23T08:00:00.120Z",
            "2026-11-23T08:00:00.000001Z",
            "2026-11-23T08:00:00.5+05:30",
        ] {
            let t = Timestamp::parse(text).expect("valid");
            assert_eq!(
                t.to_string(),
                t.0.format(&Rfc3339).expect("in range"),
                "{text}"
            );
        }
        let t = Timestamp::from_unix(1_763_900_000).expect("in range");
        assert_eq!(t.to_string(), "2025-11-23T12:13:20Z");
    }

    #[test]
    fn sort_keys_sort_as_the_instants_do() {
        let texts = [
            "2026-11-23T08:00:00.5Z",
            "2026-11-23T08:00:00Z",
            "2026-11-23T08:00:01Z",
            "2026-11-23T08:00:00.25Z",
            "2026-11-23T08:00:00.000000001Z",
        ];
        let mut instants: Vec<Timestamp> = texts
            .iter()
            .map(|t| Timestamp::parse(t).expect("valid"))
            .collect();
        let mut keys: Vec<String> = instants.iter().map(|t| t.sort_key()).collect();
        instants.sort_unstable();
        keys.sort_unstable();
        let from_keys: Vec<Timestamp> = keys
            .iter()
            .map(|k| Timestamp::parse(k).expect("a key is RFC 3339"))
            .collect();
        assert_eq!(from_keys, instants);
        assert_eq!(keys[0], "2026-11-23T08:00:00.000000000Z");
    }

    #[test]
    fn rejects_non_dates() {
        assert!(Timestamp::parse("yesterday").is_none());
    }
}
