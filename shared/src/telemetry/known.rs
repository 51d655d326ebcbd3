//! Secret values the configuration resolved, replaced wherever a line quotes them. The patterns
//! know the shapes of the common providers' secrets (`whsec_…`, `sk_live_…`, `pat-…`); an Adyen
//! HMAC key (hex), a Paddle notification secret or a target's API key in a header has a shape
//! of its own, and only its value can find it. The resolvers register each value they hand out
//! ([`crate::config::EnvSecrets`], [`crate::config::MapSecrets`], which every other one goes
//! through), so a function knows its secrets from its cold start on.

use std::borrow::Cow;
use std::sync::{PoisonError, RwLock};

use memchr::memmem::Finder;

/// Shorter values are not looked for: they would match ordinary words, and no provider issues
/// a secret that short.
const SHORTEST: usize = 8;

/// What a known value becomes.
const REPLACEMENT: &[u8] = b"[secret]";

static KNOWN: RwLock<Vec<Finder<'static>>> = RwLock::new(Vec::new());

/// Makes `value` one that every line written from now on has replaced: as it is, and as a JSON
/// string holds it (a quote or a backslash in it escaped).
pub fn redact_value(value: &str) {
    if value.len() < SHORTEST {
        return;
    }
    let quoted = serde_json::to_string(value).unwrap_or_default();
    let escaped = quoted
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(value);
    let mut known = KNOWN.write().unwrap_or_else(PoisonError::into_inner);
    for form in [value, escaped] {
        if !known.iter().any(|f| f.needle() == form.as_bytes()) {
            known.push(Finder::new(form.as_bytes()).into_owned());
        }
    }
}

/// `line` with every known value replaced; the line itself when it quotes none.
pub(super) fn replace(line: &[u8]) -> Cow<'_, [u8]> {
    let known = KNOWN.read().unwrap_or_else(PoisonError::into_inner);
    let mut line = Cow::Borrowed(line);
    for finder in known.iter() {
        if finder.find(&line).is_none() {
            continue;
        }
        let mut out = Vec::with_capacity(line.len());
        let mut copied = 0;
        for at in finder.find_iter(&line) {
            out.extend_from_slice(&line[copied..at]);
            out.extend_from_slice(REPLACEMENT);
            copied = at + finder.needle().len();
        }
        out.extend_from_slice(&line[copied..]);
        line = Cow::Owned(out);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::super::redact;
    use super::redact_value;

    #[test]
    fn a_known_value_of_any_shape_is_replaced_wherever_a_line_quotes_it() {
        let key = "7E3AC91F0B5D24E86A1C9F3B7D2E5A40";
        let line = format!(r#"{{"message":"verification failed","key":"{key}","again":"{key}"}}"#);
        assert_eq!(redact(&line), line, "unknown, and no pattern's shape");
        redact_value(key);
        let redacted = redact(&line);
        assert!(!redacted.contains(key), "{redacted}");
        assert_eq!(redacted.matches("[secret]").count(), 2, "{redacted}");
        assert!(redacted.contains(r#""message":"verification failed""#));
    }

    #[test]
    fn a_value_is_found_escaped_inside_a_json_string_too() {
        let value = r#"q"uo\te-d-api-key"#;
        redact_value(value);
        let line = serde_json::json!({ "error": format!("refused {value}") }).to_string();
        assert!(line.contains(r#"q\"uo\\te"#), "escaped in the line: {line}");
        let redacted = redact(&line);
        assert_eq!(redacted, r#"{"error":"refused [secret]"}"#);
    }

    #[test]
    fn a_short_value_is_not_looked_for() {
        redact_value("secret1");
        let line = r#"{"message":"secret1 rotated"}"#;
        assert_eq!(redact(line), line);
    }
}
