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
        check_timestamp(timestamp, now, v.tolerance_secs)?;
        let t = timestamp.to_string();
        if any_matches(&v.keys, &[t.as_bytes(), self.joiner, req.body], &signatures) {
            Ok(())
        } else {
            Err(Rejection::BadSignature)
        }
    }

    /// Exactly one timestamp and at least one signature; unknown keys (other schemes'
    /// signatures) are ignored, as the providers' own libraries do.
    fn parse(&self, header: &str) -> Result<(i64, Vec<Vec<u8>>), Rejection> {
        let malformed = || Rejection::MalformedHeader(self.display);
        let mut timestamp = None;
        let mut signatures = Vec::new();
        for item in header.split(self.separator) {
            let (key, value) = item.trim().split_once('=').ok_or_else(malformed)?;
            if key == self.timestamp_key {
                if timestamp.is_some() {
                    return Err(malformed());
                }
                timestamp = Some(value.parse::<i64>().map_err(|_| malformed())?);
            } else if key == self.signature_key {
                signatures.push(hex::decode(value).map_err(|_| malformed())?);
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
