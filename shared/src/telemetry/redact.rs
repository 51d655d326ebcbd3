//! Redaction at the logging layer: every formatted log line passes through [`redact`] before it
//! is written, so personal data or a secret that reaches a log by mistake (an error message that
//! quotes a payload, a header in a debug line) is replaced, not shipped. The code also never
//! logs payloads, names or headers on purpose; this is the net under that rule.

use std::borrow::Cow;
use std::io::Write;
use std::sync::LazyLock;

use regex::bytes::{Captures, Regex};

/// Patterns and what replaces them, most specific first. Byte classes (`(?-u)`, over the line's
/// bytes): the regex crate is built without its Unicode tables, which were a tenth of each
/// function's binary, and `\x80-\xFF` takes in every byte of a non-ASCII character (a whole
/// character always: a match begins and ends at ASCII or runs over all of a character's bytes).
/// None has a capturing group: group `i + 1` of the combined pattern is pattern `i`.
const PATTERNS: [(&str, &str); 9] = [
    // Signing secrets and API tokens.
    (r"whsec_[A-Za-z0-9+/=_-]+", "[secret]"),
    (r"\b(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]+", "[secret]"),
    (r"\bpat-[a-z0-9]+-[A-Za-z0-9-]+", "[secret]"),
    (r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+", "Bearer [secret]"),
    // Signature header values: Stripe `t=…,v1=…`, Paddle `ts=…;h1=…`, Standard Webhooks `v1,…`.
    (r"\b(?:v1|h1|v0)=[0-9a-fA-F]{16,}", "[signature]"),
    (r"\bv1,[A-Za-z0-9+/]{20,}={0,2}", "[signature]"),
    // Email addresses, internationalized ones too (`zoë@müller.de`).
    (
        r"[A-Za-z0-9._%+\x80-\xFF-]+@[A-Za-z0-9.\x80-\xFF-]+\.[A-Za-z\x80-\xFF]{2,}",
        "[email]",
    ),
    // Card-like numbers: 13 to 19 digits, spaces or dashes between groups.
    (r"\b\d(?:[ -]?\d){12,18}\b", "[number]"),
    // Phone numbers in international form.
    (r"\+\d(?:[ .()-]{0,2}\d){6,14}", "[phone]"),
];

/// Every pattern as one alternation, so a line is scanned once and the first log line of a
/// cold start compiles one regex (a quarter of the time nine took). Where two could match at
/// the same place, the earlier (more specific) one wins, as when they ran one after another.
static COMBINED: LazyLock<Regex> = LazyLock::new(|| {
    let alternatives: Vec<String> = PATTERNS.iter().map(|(p, _)| format!("({p})")).collect();
    let regex = Regex::new(&format!("(?-u){}", alternatives.join("|"))).expect("valid patterns");
    assert_eq!(
        regex.captures_len(),
        PATTERNS.len() + 1,
        "a redaction pattern has a capturing group of its own"
    );
    regex
});

/// The line with personal data and secrets replaced.
pub fn redact(line: &str) -> String {
    match redact_bytes(line.as_bytes()) {
        Cow::Borrowed(_) => line.to_owned(),
        Cow::Owned(bytes) => String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

fn redact_bytes(line: &[u8]) -> Cow<'_, [u8]> {
    COMBINED.replace_all(line, |caps: &Captures<'_>| {
        (1..caps.len())
            .find(|&group| caps.get(group).is_some())
            .map_or(&b""[..], |group| PATTERNS[group - 1].1.as_bytes())
    })
}

/// Wraps a writer: each write (one formatted event) is redacted before it goes through.
#[derive(Debug, Clone)]
pub struct Redacting<M>(pub M);

/// The writer [`Redacting`] hands to the formatter for one event.
#[derive(Debug)]
pub struct RedactingWriter<W: Write>(W);

/// The length of the JSON formatter's own first field, the line's time, when it has one: the
/// formatter writes it and nothing logged can change it, so it is passed over. Scanning it cost
/// a cold start about 0.26 M instructions (callgrind; docs/benchmarks.md), most likely the
/// patterns' lazy automaton building states for its digits and dashes.
fn stamp_len(line: &[u8]) -> usize {
    const KEY: &[u8] = br#"{"timestamp":""#;
    if !line.starts_with(KEY) {
        return 0;
    }
    line[KEY.len()..]
        .iter()
        .position(|&b| b == b'"')
        .map_or(0, |end| KEY.len() + end + 1)
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let (stamp, rest) = buf.split_at(stamp_len(buf));
        match redact_bytes(rest) {
            Cow::Borrowed(_) => self.0.write_all(buf)?,
            // One write per line, so that lines from two threads never interleave.
            Cow::Owned(redacted) => self.0.write_all(&[stamp, &redacted].concat())?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a>
    for Redacting<M>
{
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter(self.0.make_writer())
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn personal_data_and_secrets_are_replaced() {
        let line = r#"{"msg":"failed","email":"Jane.Doe@example.com","card":"4242 4242 4242 4242","phone":"+1 (415) 555-0123","secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw","auth":"Bearer pat-na1-abc123","sig":"t=1700000000,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd","sw":"v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=","key":"sk_live_51HxYz"}"#;
        let out = redact(line);
        for leaked in [
            "Jane.Doe", "4242", "555-0123", "MfKQ9r8", "abc123", "5257a869", "g0hM9SsE", "51HxYz",
        ] {
            assert!(!out.contains(leaked), "{leaked} leaked: {out}");
        }
        assert!(
            out.contains("[email]")
                && out.contains("[number]")
                && out.contains("[phone]")
                && out.contains("[secret]")
        );
    }

    #[test]
    fn internationalized_addresses_are_replaced_whole() {
        for (line, kept) in [
            ("to zoë@müller.de →", "to [email] →"),
            ("josé.garcía@correo.es", "[email]"),
            // Non-ASCII punctuation against an address goes with it: more hidden, never less.
            ("„jürgen@beispiel.de“", "[email]"),
            ("user@пример.рф failed", "[email] failed"),
        ] {
            assert_eq!(redact(line), kept);
        }
        // Written through the writer: valid text, whatever the bytes around a match.
        let mut out = Vec::new();
        {
            let mut writer = super::RedactingWriter(&mut out);
            std::io::Write::write_all(&mut writer, "ünïcode éva@exämple.com ✓".as_bytes())
                .expect("write");
        }
        assert_eq!(String::from_utf8(out).expect("utf-8"), "ünïcode [email] ✓");
    }

    #[test]
    fn the_writer_passes_over_the_formatters_stamp_and_redacts_the_rest() {
        use std::io::Write;
        let through = |line: &str| {
            let mut writer = super::RedactingWriter(Vec::new());
            writer.write_all(line.as_bytes()).expect("written");
            String::from_utf8(writer.0).expect("text")
        };
        let stamped = r#"{"timestamp":"2026-12-04T14:08:58.914871Z","level":"WARN","card":"4242 4242 4242 4242"}"#;
        assert_eq!(
            through(stamped),
            r#"{"timestamp":"2026-12-04T14:08:58.914871Z","level":"WARN","card":"[number]"}"#
        );
        let clean = r#"{"timestamp":"2026-12-04T14:08:58.914871Z","level":"INFO","n":12}"#;
        assert_eq!(through(clean), clean);
        // Only the line's own first field is passed over: anywhere else, or unterminated, the
        // same text is redacted like any other.
        assert_eq!(
            through(r#"{"level":"WARN","m":"{\"timestamp\":\"4242 4242 4242 4242\"}"}"#),
            r#"{"level":"WARN","m":"{\"timestamp\":\"[number]\"}"}"#
        );
        assert_eq!(
            through(r#"{"timestamp":"4242 4242 4242 4242"#),
            r#"{"timestamp":"[number]"#
        );
    }

    #[test]
    fn ordinary_fields_survive() {
        let line = r#"{"time":"2026-11-23T16:47:00Z","event_id":"01M84K3Q9Z8Y7X6W5V4T3S2R1Q","event_key":"EVT#stripe#evt_3PqLr2F7kS1mZk0a1dS8kT4e","elapsed_ms":12,"status":401}"#;
        assert_eq!(redact(line), line);
    }
}
