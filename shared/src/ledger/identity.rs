//! Identifier matching for customers and leads: external id, then normalized email, then E.164
//! phone. The first key that names a known entity wins.

/// Lower-cased and trimmed; nothing else (dots and `+tags` are kept: some providers treat them
/// as distinct mailboxes). `None` when it does not look like an address.
pub fn normalize_email(raw: &str) -> Option<String> {
    let email = raw.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    let valid = !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !email.chars().any(char::is_whitespace)
        && !domain.contains('@');
    valid.then_some(email)
}

/// E.164: `+` and 8 to 15 digits. Spaces, dashes, dots and parentheses are dropped and a leading
/// `00` becomes `+`; a number without a country code is not E.164 and is not used for matching.
pub fn normalize_phone(raw: &str) -> Option<String> {
    let compact: String = raw
        .trim()
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '.' | '(' | ')'))
        .collect();
    let digits = compact
        .strip_prefix('+')
        .or_else(|| compact.strip_prefix("00"))?;
    let valid = (8..=15).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit())
        && !digits.starts_with('0');
    valid.then(|| format!("+{digits}"))
}

/// The keys an entity can be found by, strongest first.
pub fn identity_keys(
    external_id: Option<&str>,
    email: Option<&str>,
    phone: Option<&str>,
) -> Vec<String> {
    let mut keys = Vec::new();
    if let Some(id) = external_id.map(str::trim).filter(|s| !s.is_empty()) {
        keys.push(format!("ext:{id}"));
    }
    if let Some(email) = email.and_then(normalize_email) {
        keys.push(format!("email:{email}"));
    }
    if let Some(phone) = phone.and_then(normalize_phone) {
        keys.push(format!("phone:{phone}"));
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_fold_case_and_whitespace_only() {
        assert_eq!(
            normalize_email(" Jane.Doe@Example.COM ").as_deref(),
            Some("jane.doe@example.com")
        );
        assert_eq!(
            normalize_email("jane+crm@example.com").as_deref(),
            Some("jane+crm@example.com")
        );
        for bad in [
            "",
            "jane",
            "@example.com",
            "jane@",
            "jane@localhost",
            "ja ne@example.com",
            "a@b@c.com",
        ] {
            assert_eq!(normalize_email(bad), None, "{bad}");
        }
    }

    #[test]
    fn phones_become_e164_or_nothing() {
        assert_eq!(
            normalize_phone("+1 (415) 555-0123").as_deref(),
            Some("+14155550123")
        );
        assert_eq!(
            normalize_phone("0049 30 1234567").as_deref(),
            Some("+49301234567")
        );
        assert_eq!(
            normalize_phone("+44.20.7946.0958").as_deref(),
            Some("+442079460958")
        );
        for bad in [
            "415 555 0123",
            "+1",
            "+1234567890123456",
            "+0123456789",
            "+1 415 CALL NOW",
            "",
        ] {
            assert_eq!(normalize_phone(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_are_ordered_external_id_email_phone() {
        let keys = identity_keys(Some("cus_1"), Some("A@B.co"), Some("+1 415 555 0123"));
        assert_eq!(keys, ["ext:cus_1", "email:a@b.co", "phone:+14155550123"]);
        assert_eq!(
            identity_keys(None, Some("nope"), Some("123")),
            Vec::<String>::new()
        );
    }
}
