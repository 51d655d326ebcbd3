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

/// The keys payloads keep names under: names have no shape of their own. Each pattern ends at
/// the value's opening quote; [`replace_names`] replaces the value after it.
const NAME_KEYS: &str = "(?:first|last|middle|full|given|family|sur|display|contact|customer|\
    cardholder|card_holder|account_holder|holder|billing|shipping|recipient|sender)_?name";

/// Names in a JSON line: under any name key of a payload the line quotes, escaped once or more
/// inside a JSON string (an error's `Debug` form escapes it again), or as JSON; a bare `name`
/// only escaped, since unescaped it is the formatter's own span name.
static JSON_NAMES: LazyLock<Regex> = LazyLock::new(|| {
    let key = r#"\\*"KEYS\\*"[ \t]*:[ \t]*\\*"|\\+"name\\+"[ \t]*:[ \t]*\\+""#;
    Regex::new(&format!("(?-u)(?i){}", key.replace("KEYS", NAME_KEYS))).expect("valid patterns")
});

/// Names in a text line, where a bare `name` key, even unescaped, can only be a quoted
/// payload's: the text formatter writes a span's name before its braces, not under a key.
static TEXT_NAMES: LazyLock<Regex> = LazyLock::new(|| {
    let key = r#"\\*"(?:KEYS|name)\\*"[ \t]*:[ \t]*\\*""#;
    Regex::new(&format!("(?-u)(?i){}", key.replace("KEYS", NAME_KEYS))).expect("valid patterns")
});

/// The line with personal data and secrets replaced.
pub fn redact(line: &str) -> String {
    match redact_bytes(line.as_bytes(), line.starts_with('{')) {
        Cow::Borrowed(_) => line.to_owned(),
        Cow::Owned(bytes) => String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// `line` redacted; `json` when it is a JSON line, whose unescaped `name` keys are the
/// formatter's own.
fn redact_bytes(line: &[u8], json: bool) -> Cow<'_, [u8]> {
    // The known values first: a pattern could take a part of one and leave the rest.
    match super::known::replace(line) {
        Cow::Borrowed(line) => redact_shapes(line, json),
        Cow::Owned(line) => Cow::Owned(redact_shapes(&line, json).into_owned()),
    }
}

/// `line` with the patterns' and the name keys' matches replaced.
fn redact_shapes(line: &[u8], json: bool) -> Cow<'_, [u8]> {
    let redacted = COMBINED.replace_all(line, |caps: &Captures<'_>| {
        (1..caps.len())
            .find(|&group| caps.get(group).is_some())
            .map_or(&b""[..], |group| PATTERNS[group - 1].1.as_bytes())
    });
    if !may_name_a_person(&redacted, json) {
        return redacted;
    }
    let keys: &Regex = if json { &JSON_NAMES } else { &TEXT_NAMES };
    match redacted {
        Cow::Borrowed(line) => replace_names(line, keys),
        Cow::Owned(line) => Cow::Owned(replace_names(&line, keys).into_owned()),
    }
}

/// Whether the line has a key the name patterns look for: `name` in any case, then a quote
/// or a backslash, other than the JSON formatter's own `"name"`. Few lines have one, so the
/// name patterns are compiled, and their automaton's states built, only for those: run over
/// every line with the others, they added about half again to each cold start's instructions
/// (callgrind; docs/benchmarks.md).
fn may_name_a_person(line: &[u8], json: bool) -> bool {
    memchr::memchr2_iter(b'n', b'N', line).any(|i| {
        line.get(i + 1..i + 5).is_some_and(|rest| {
            rest[..3].eq_ignore_ascii_case(b"ame")
                && (rest[3] == b'\\'
                    || (rest[3] == b'"' && !(json && i > 0 && line[i - 1] == b'"')))
        })
    })
}

/// The value after each match of `keys` (which ends at the value's opening quote) replaced
/// by `[name]`, up to its closing quote; the line itself when there is none.
fn replace_names<'a>(line: &'a [u8], keys: &Regex) -> Cow<'a, [u8]> {
    let mut out = Vec::new();
    // Copied up to here, which is also where the next key is looked for: a match never ends
    // before its value does.
    let mut copied = 0;
    while let Some(key) = keys.find_at(line, copied) {
        out.extend_from_slice(&line[copied..key.end()]);
        out.extend_from_slice(b"[name]");
        copied = value_end(line, key.end());
    }
    if copied == 0 {
        return Cow::Borrowed(line);
    }
    out.extend_from_slice(&line[copied..]);
    Cow::Owned(out)
}

/// Where the quoted value opened just before `from` ends: at its closing quote, with the
/// backslashes that escape that quote as much as the opening one was. Escaped `d` times over
/// (a payload in a JSON string, `d = 1`; that string in a `Debug` form, `d = 3`), a quote is
/// preceded by `d` backslashes, a backslash of the value by `2(d + 1)` more per backslash,
/// and a quote inside the value by more than `d`: the closing quote is the first whose run of
/// backslashes is `d` modulo `2(d + 1)`. The end of the line when there is none, so that a cut
/// line hides more, never less.
fn value_end(line: &[u8], from: usize) -> usize {
    let depth = line[..from - 1]
        .iter()
        .rev()
        .take_while(|&&b| b == b'\\')
        .count();
    let mut run = 0;
    for (i, &b) in line.iter().enumerate().skip(from) {
        match b {
            b'\\' => run += 1,
            b'"' if run % (2 * (depth + 1)) == depth => return i - depth,
            _ => run = 0,
        }
    }
    line.len()
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
        match redact_bytes(rest, buf.starts_with(b"{")) {
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

    /// A payload quoted in an error line, through the functions' own subscriber in both its
    /// formats: every name under a name key goes, its key and the line's JSON stay.
    #[test]
    fn names_in_a_quoted_payload_are_replaced_and_their_keys_kept() {
        use crate::telemetry::tests::Lines;
        let payload = r#"{"customer_name":"Zebulon Quattlebaum","lastName":"Oyelaran","billing_details":{"name":"Wrenfield \"Wren\" Oyelaran"},"plan":{"name":"gold"},"id":"cus_1"}"#;
        for text in [false, true] {
            let lines = Lines::default();
            let writer = lines.clone();
            let subscriber = crate::telemetry::lambda_subscriber(
                "info",
                text,
                super::Redacting(move || writer.clone()),
            );
            tracing::subscriber::with_default(subscriber, || {
                let _span = tracing::info_span!("record", event_id = "01M8V0N8EH").entered();
                tracing::warn!(error = %format!("refused: {payload}"), "target refused");
                tracing::warn!(error = ?payload, "target refused");
            });
            let out = lines.text();
            for name in [
                "Zebulon",
                "Quattlebaum",
                "Wrenfield",
                "Wren",
                "Oyelaran",
                "gold",
            ] {
                assert!(!out.contains(name), "text {text}: {name} in {out}");
            }
            for key in [
                "customer_name",
                "lastName",
                "billing_details",
                "plan",
                "cus_1",
            ] {
                assert!(out.contains(key), "text {text}: {key} lost from {out}");
            }
            if !text {
                for line in out.lines() {
                    let line: serde_json::Value = serde_json::from_str(line).expect("JSON");
                    // The formatter's own `name`, the span's, is not a person's.
                    assert_eq!(line["span"]["name"], "record", "{line}");
                }
                let first: serde_json::Value =
                    serde_json::from_str(out.lines().next().expect("a line")).expect("JSON");
                let quoted: serde_json::Value = serde_json::from_str(
                    first["error"]
                        .as_str()
                        .and_then(|e| e.strip_prefix("refused: "))
                        .expect("the error"),
                )
                .expect("the quoted payload is still JSON");
                assert_eq!(
                    quoted,
                    serde_json::json!({"customer_name": "[name]", "lastName": "[name]",
                        "billing_details": {"name": "[name]"}, "plan": {"name": "[name]"}, "id": "cus_1"})
                );
            }
        }
    }

    #[test]
    fn a_names_value_ends_at_its_own_closing_quote() {
        for (line, kept) in [
            // A backslash of the name's own, then its closing quote.
            (
                r#"refused {"last_name":"Oye\\","id":1}"#,
                r#"refused {"last_name":"[name]","id":1}"#,
            ),
            // Quotes of the name's own, escaped one level deeper than the payload.
            (
                r#"{"m":"x {\"first_name\":\"Zo \\\"Z\\\" Q\"} y"}"#,
                r#"{"m":"x {\"first_name\":\"[name]\"} y"}"#,
            ),
            // A line cut inside the value: the rest of it goes.
            (
                r#"{"m":"{\"name\":\"Jane Do"#,
                r#"{"m":"{\"name\":\"[name]"#,
            ),
        ] {
            assert_eq!(redact(line), kept);
        }
    }

    #[test]
    fn ordinary_fields_survive() {
        let line = r#"{"time":"2026-11-23T16:47:00Z","event_id":"01M84K3Q9Z8Y7X6W5V4T3S2R1Q","event_key":"EVT#stripe#evt_3PqLr2F7kS1mZk0a1dS8kT4e","elapsed_ms":12,"status":401}"#;
        assert_eq!(redact(line), line);
        let spanned = r#"{"level":"INFO","message":"event taken","span":{"event_key":"EVT#site#msg_1","source_type":"lead.submitted","name":"take"}}"#;
        assert_eq!(redact(spanned), spanned);
        let text = " INFO take{event_key=EVT#site#msg_1 source_type=lead.submitted}: event taken";
        assert_eq!(redact(text), text);
    }
}
