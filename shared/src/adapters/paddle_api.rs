//! Paddle Billing's events API (`GET /events`), for the missed-webhook check. It has no time
//! filter: the list is read newest first (`order_by=id[DESC]`, Paddle's ids sort by creation),
//! only of the types plumbline reads (`event_type`), pages by `after`, and the walk ends at the
//! first event that occurred before `since` less a margin. With `reconcile.failed_only`, the
//! notifications Paddle could not deliver are read instead (`GET /notifications`). Given the
//! notification destination (`GET /notification-settings/{id}`), only the types it is subscribed
//! to are listed, and only its notifications.

use super::provider_api::{EndpointShape, EventsApi, Provider, page_of};
use crate::contract::Timestamp;
use crate::ports::{ProviderError, ProviderEvents, ProviderPage, Subscription};
use crate::sources::SourceKind;

/// How far before `since` the walk goes on: an id's creation and the event's `occurred_at` are
/// not the same instant, so near the boundary the order by id and by time may differ. What the
/// margin lists again is already stored, and found in the same batch read.
const BOUNDARY_SECS: i64 = 300;

/// A notification destination (`GET /notification-settings/{id}`): `subscribed_events` by
/// `name`, and `active`.
const ENDPOINT: EndpointShape = EndpointShape {
    kind: SourceKind::Paddle,
    path: "/notification-settings/",
    subscribed: |body| {
        body["data"]["subscribed_events"]
            .as_array()
            .map(|events| events.iter().filter_map(|e| e["name"].as_str()).collect())
    },
    switched_off: |body| body["data"]["active"].as_bool() == Some(false),
    name: "notification destination",
    off: "is inactive: Paddle sends it no webhooks",
};

/// Paddle's events API.
#[derive(Debug)]
pub struct Paddle;

impl Provider for Paddle {
    const DEFAULT_BASE: &'static str = "https://api.paddle.com";
}

pub type PaddleEvents = EventsApi<Paddle>;

impl ProviderEvents for PaddleEvents {
    async fn subscription(&self) -> Result<Subscription, ProviderError> {
        self.api.subscription(&ENDPOINT).await
    }

    async fn list(
        &self,
        since: Timestamp,
        starting_after: Option<&str>,
        page_size: usize,
        failed_only: bool,
        types: &[&str],
    ) -> Result<ProviderPage, ProviderError> {
        if failed_only {
            self.undelivered(since, starting_after, page_size, types)
                .await
        } else {
            self.events(starting_after, page_size, since, types).await
        }
    }
}

impl PaddleEvents {
    /// The events list (`GET /events`) of `types`, newest first, down to `since` less the
    /// boundary margin.
    async fn events(
        &self,
        starting_after: Option<&str>,
        page_size: usize,
        since: Timestamp,
        types: &[&str],
    ) -> Result<ProviderPage, ProviderError> {
        let mut query = vec![
            ("order_by", "id[DESC]".to_owned()),
            ("per_page", page_size.clamp(1, 200).to_string()),
            // Only the types plumbline reads: any other was never a webhook it acts on.
            ("event_type", types.join(",")),
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

    /// `reconcile.failed_only`: the notifications Paddle has not delivered (`GET
    /// /notifications?status=failed,needs_retry`, to the named destination or else to any),
    /// created since `since` (`from`), newest first. Each carries its event as the webhook did
    /// (`payload`); the cursor is the last notification's id. Notifications of other `types`
    /// are passed over here: that list has no type filter.
    async fn undelivered(
        &self,
        since: Timestamp,
        starting_after: Option<&str>,
        page_size: usize,
        types: &[&str],
    ) -> Result<ProviderPage, ProviderError> {
        let mut query = vec![
            ("order_by", "id[DESC]".to_owned()),
            ("per_page", page_size.clamp(1, 200).to_string()),
            ("status", "failed,needs_retry".to_owned()),
            ("from", since.to_string()),
        ];
        if let Some(id) = &self.api.endpoint {
            query.push(("notification_setting_id", id.clone()));
        }
        if let Some(after) = starting_after {
            query.push(("after", after.to_owned()));
        }
        let body = self.api.get_json("/notifications", &query).await?;
        let data = body["data"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        // An event has a notification per destination: it is listed once.
        let mut seen = std::collections::HashSet::new();
        let payloads: Vec<serde_json::Value> = data
            .iter()
            .filter(|n| types.contains(&n["type"].as_str().unwrap_or_default()))
            .filter(|n| seen.insert(n["payload"]["event_id"].as_str().unwrap_or_default()))
            .map(|n| n["payload"].clone())
            .collect();
        let has_more = body["meta"]["pagination"]["has_more"]
            .as_bool()
            .unwrap_or(false);
        let mut page = page_of(&payloads, "event_id", has_more);
        page.last_id = data
            .last()
            .and_then(|n| n["id"].as_str())
            .map(str::to_owned);
        Ok(page)
    }
}
