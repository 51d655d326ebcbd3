//! HMAC-SHA256 and constant-time comparison shared by every scheme.

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretSlice};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::contract::SourceEventId;

/// HMAC-SHA256 over the concatenation of `parts`.
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    // An HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// True when any candidate signature equals the HMAC of `parts` under any key.
/// Every comparison is constant-time; candidates of the wrong length never match.
pub fn any_matches(keys: &[SecretSlice<u8>], parts: &[&[u8]], candidates: &[Vec<u8>]) -> bool {
    let mut matched = subtle::Choice::from(0);
    for key in keys {
        let expected = hmac_sha256(key.expose_secret(), parts);
        for candidate in candidates {
            matched |= expected.as_slice().ct_eq(candidate.as_slice());
        }
    }
    matched.into()
}

/// SHA-256 of an event's payload: tells a retry (same hash) from a conflicting reuse of an id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PayloadHash(String);

impl PayloadHash {
    pub fn of(bytes: &[u8]) -> Self {
        let mut text = [0; 64];
        hex::encode_to_slice(Sha256::digest(bytes), &mut text).expect("64 hex digits for 32 bytes");
        Self(std::str::from_utf8(&text).expect("hex is ASCII").to_owned())
    }

    pub fn from_hex(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id used when the provider's own cannot be read: `sha256:` and the first 32 hex digits.
    pub fn derived_event_id(&self) -> SourceEventId {
        SourceEventId::try_from(format!("sha256:{}", &self.0[..32]))
            .expect("a hex prefix is a valid id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn any_key_and_any_candidate_may_match() {
        let keys = vec![
            SecretSlice::from(b"new".to_vec()),
            SecretSlice::from(b"old".to_vec()),
        ];
        let good = hmac_sha256(b"old", &[b"body"]).to_vec();
        assert!(any_matches(&keys, &[b"body"], &[vec![0; 32], good.clone()]));
        assert!(!any_matches(
            &keys,
            &[b"other"],
            std::slice::from_ref(&good)
        ));
        assert!(!any_matches(&keys, &[b"body"], &[good[..31].to_vec()]));
        assert!(!any_matches(&[], &[b"body"], &[good]));
    }
}
