//! Paddle Billing's events API (`GET /events`), for the missed-webhook check. It has no time
//! filter: the list is read newest first (`order_by=id[DESC]`, Paddle's ids sort by creation),
//! only of the types plumbline reads (`event_type`), pages by `after`, and the walk ends at the
//! first event that occurred before `since` less a margin. It has no delivery filter either, so
//! `reconcile.failed_only` does not narrow it.

use std::time::Duration;

use secrecy::SecretString;

use super::provider_api::{Api, page_of};
use crate::contract::Timestamp;
use crate::ports::{ProviderError, ProviderEvents, ProviderPage};
use crate::sources::SourceKind;

/// How far before `since` the walk goes on: an id's creation and the event's `occurred_at` are
/// not the same instant, so near the boundary the order by id and by time may differ. What the
/// margin lists again is already stored, and found in the same batch read.
const BOUNDARY_SECS: i64 = 300;

#[derive(Debug)]
pub struct PaddleEvents {
    api: Api,
}

impl PaddleEvents {
    pub fn new(base: Option<&str>, key: SecretString) -> Result<Self, String> {
        Api::new(base, "https://api.paddle.com", key).map(|api| Self { api })
    }

    /// A shorter first backoff after a 429, for tests against a local server.
    #[must_use]
    pub fn with_backoff(mut self, backoff: Duration) -> Self {
        self.api.backoff = backoff;
        self
    }
}

impl ProviderEvents for PaddleEvents {
    async fn list(
        &self,
        since: Timestamp,
        starting_after: Option<&str>,
        page_size: usize,
        _failed_only: bool,
    ) -> Result<ProviderPage, ProviderError> {
        let mut query = vec![
            ("order_by", "id[DESC]".to_owned()),
            ("per_page", page_size.clamp(1, 200).to_string()),
            // Only the types plumbline reads: any other was never a webhook it acts on.
            ("event_type", SourceKind::Paddle.read_types().join(",")),
        ];
        if let Some(after) = starting_after {
            query.push(("after", after.to_owned()));
        }
        let body = self.api.get_json("/events", &query).await?;
        let data = body["data"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        let floor = since.plus_secs(-BOUNDARY_SECS);
        // An event without a readable time is listed all the same: reading it says why.
        let before_floor = |e: &serde_json::Value| {
            e["occurred_at"]
                .as_str()
                .and_then(Timestamp::parse)
                .is_some_and(|at| at < floor)
        };
        let within = data.iter().position(before_floor).unwrap_or(data.len());
        let has_more = within == data.len()
            && body["meta"]["pagination"]["has_more"]
                .as_bool()
                .unwrap_or(false);
        Ok(page_of(&data[..within], "event_id", has_more))
    }
}
