//! Headers that carry one timestamp and one or more hex HMACs of `{timestamp}{joiner}{body}`:
//! Stripe (`t=…,v1=…`) and Paddle (`ts=…;h1=…`).

use super::signature::any_matches;
use super::{Inbound, Rejection, Verifier, check_timestamp};
use crate::contract::Timestamp;

pub(super) struct Scheme {
    /// Lower-case header name, as `http::HeaderMap` looks it up.
    pub header: &'static str,
    /// The name operators know it by, for rejection reasons.
    pub display: &'static str,
    pub separator: char,
    pub timestamp_key: &'static str,
    pub signature_key: &'static str,
    pub joiner: &'static [u8],
}

impl Scheme {
    /// Checks the header's timestamp and signature against the raw body.
    pub fn verify(&self, v: &Verifier, req: Inbound<'_>, now: Timestamp) -> Result<(), Rejection> {
        let header = req
            .headers
            .get(self.header)
            .ok_or(Rejection::MissingHeader(self.display))?;
        let header = header
            .to_str()
            .map_err(|_| Rejection::MalformedHeader(self.display))?;
        let (timestamp, signatures) = self.parse(header)?;
        check_timestamp(timestamp.unix, now, v.tolerance_secs)?;
        // The provider signed the timestamp as it wrote it in the header, so that text is hashed.
        let t = timestamp.text.as_bytes();
        if any_matches(&v.keys, &[t, self.joiner, req.body], &signatures) {
            Ok(())
        } else {
            Err(Rejection::BadSignature)
        }
    }

    /// Exactly one timestamp and at least one signature; unknown keys (other schemes'
    /// signatures) are ignored, as the providers' own libraries do.
    fn parse<'h>(&self, header: &'h str) -> Result<(Signed<'h>, Vec<Vec<u8>>), Rejection> {
        let malformed = || Rejection::MalformedHeader(self.display);
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for item in header.split(self.separator) {
            let (key, value) = item.trim().split_once('=').ok_or_else(malformed)?;
            if key == self.timestamp_key {
                if timestamp.is_some() {
                    return Err(malformed());
                }
                let unix = value.parse::<i64>().map_err(|_| malformed())?;
                timestamp = Some(Signed { unix, text: value });
            } else if key == self.signature_key {
                signatures.push(decode_hex(value).ok_or_else(malformed)?);
            }
        }
        match (timestamp, signatures.is_empty()) {
            (Some(t), false) => Ok((t, signatures)),
            _ => Err(malformed()),
        }
    }

    /// The header value a sender would compute.
    pub fn sign(&self, key: &[u8], timestamp: i64, body: &[u8]) -> String {
        let t = timestamp.to_string();
        let mac = super::hmac_sha256(key, &[t.as_bytes(), self.joiner, body]);
        format!(
            "{}={t}{}{}={}",
            self.timestamp_key,
            self.separator,
            self.signature_key,
            hex::encode(mac)
        )
    }
}

/// The header's timestamp: its value, and the text the provider signed.
struct Signed<'h> {
    unix: i64,
    text: &'h str,
}

/// Hex into bytes; `hex::decode`'s iterator costs more than the HMAC it is compared with.
/// An odd length is refused by `decode_to_slice` itself.
fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let mut out = vec![0; text.len() / 2];
    hex::decode_to_slice(text, &mut out).ok()?;
    Some(out)
}
