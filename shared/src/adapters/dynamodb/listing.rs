//! Operators' listings of events (`plumbline events list --aws`, `events reprocess --aws`).
//! The statuses an incident asks about have a sparse index each: events awaiting delivery
//! (`received`) are the `pending` index; kept events (`quarantined`, `unrouted`) and
//! dead-lettered ones (`dead_lettered`) the `kept` index, so those listings read what they list,
//! newest first, however large the table. Any
//! other listing is a Scan (read capacity grows with the table): meant for an operator's
//! occasional look, never for a hot path.

use std::cmp::Reverse;

use super::events::EVENT_SK;
use super::walk::{Index, Walk};
use super::{DynamoStore, Item, classify, s, text};
use crate::contract::Timestamp;
use crate::inspect::EventRow;
use crate::ports::StoreError;

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct Listing<'a> {
    pub status: Option<&'a str>,
    /// A canonical type, or a prefix glob such as `payment.*`.
    pub event_type: Option<&'a str>,
    /// Only events received at or after this instant.
    pub since: Option<Timestamp>,
    pub limit: usize,
    /// Scan the table even where an index would answer: items written before an index
    /// existed are not in it.
    pub scan: bool,
}

impl Listing<'_> {
    fn wants(&self, row: &EventRow) -> bool {
        let status = self.status.is_none_or(|s| row.status == s);
        let event_type = self.event_type.is_none_or(|t| {
            let t = t.strip_suffix('*').unwrap_or(t);
            row.event_type.as_deref().is_some_and(|have| {
                if t.ends_with('.') {
                    have.starts_with(t)
                } else {
                    have == t
                }
            })
        });
        // Parsed, not compared as text: RFC 3339 texts with and without a fraction of a
        // second do not sort as the instants they name.
        let since = self
            .since
            .is_none_or(|since| Timestamp::parse(&row.received_at).is_some_and(|at| at >= since));
        status && event_type && since
    }
}

/// Segments of a table scan read at once.
const SCAN_SEGMENTS: i32 = 4;

/// What a row shows, and the sort key its filter needs: a scan reads these alone, not the
/// envelopes and payloads beside them.
const ROW_ATTRIBUTES: &[&str] = &[
    "pk",
    "sk",
    "event_id",
    "source",
    "source_type",
    "event_type",
    "status",
    "received_at",
    "reason",
    "status_detail",
    "conflicts",
];

fn row_of(item: &Item) -> EventRow {
    EventRow {
        event_id: text(item, "event_id").unwrap_or_default(),
        key: text(item, "pk").unwrap_or_default(),
        source: text(item, "source").unwrap_or_default(),
        source_type: text(item, "source_type").unwrap_or_default(),
        event_type: text(item, "event_type"),
        status: text(item, "status").unwrap_or_default(),
        received_at: text(item, "received_at").unwrap_or_default(),
        detail: text(item, "reason").or_else(|| text(item, "status_detail")),
        conflicts: item
            .get("conflicts")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0),
    }
}

/// Newest first, then by event id, as every listing shows them.
fn newest_first(rows: &mut [EventRow]) {
    rows.sort_by_cached_key(|row| {
        Reverse((Timestamp::parse(&row.received_at), row.event_id.clone()))
    });
}

impl DynamoStore {
    /// Events as `listing` selects them, newest first, at most `listing.limit`.
    pub async fn list_events(&self, listing: &Listing<'_>) -> Result<Vec<EventRow>, StoreError> {
        let index = listing.status.filter(|_| !listing.scan);
        let mut rows = match index.and_then(Index::for_status) {
            Some(index) => self.list_indexed(&index, listing).await?,
            None => self.list_scanned(listing).await?,
        };
        newest_first(&mut rows);
        rows.truncate(listing.limit);
        Ok(rows)
    }

    /// The keys of the events `listing` selects, newest first. Where an index in receipt order
    /// answers the whole listing (a kept status, no type, no time bound) the keys come from it
    /// alone, for a caller that reads the events itself; otherwise as [`Self::list_events`]
    /// finds them.
    pub async fn list_keys(&self, listing: &Listing<'_>) -> Result<Vec<String>, StoreError> {
        let index = listing.status.filter(|_| !listing.scan);
        match index.and_then(Index::for_status) {
            Some(index)
                if index.by_receipt && listing.event_type.is_none() && listing.since.is_none() =>
            {
                let page = listing.limit.clamp(1, super::BATCH_GET_MAX);
                let mut walk = Walk::new(&index, None, page);
                let mut keys = Vec::new();
                while keys.len() < listing.limit {
                    let most = listing.limit - keys.len();
                    let Some((taken, _)) = walk.next(self, most).await? else {
                        break;
                    };
                    keys.extend(taken);
                }
                Ok(keys)
            }
            _ => Ok(self
                .list_events(listing)
                .await?
                .into_iter()
                .map(|row| row.key)
                .collect()),
        }
    }

    /// Walks the index newest first across its shards, reading the events a page of keys at
    /// a time, until no entry left could be one of the listing's newest `limit`. Each event's
    /// own status is checked too: an index trails its table by a moment.
    ///
    /// The walk stops at a key's time only when `limit` rows were received at or after it:
    /// an index's time is never before the receipt, so nothing further down was received
    /// later. For the `pending` index that matters: a refreshed claim sorts by the refresh,
    /// and the events the stuck sweep refreshed would otherwise crowd newer ones out.
    async fn list_indexed(
        &self,
        index: &Index,
        listing: &Listing<'_>,
    ) -> Result<Vec<EventRow>, StoreError> {
        let page = listing.limit.clamp(1, super::BATCH_GET_MAX);
        let mut walk = Walk::new(index, listing.since, page);
        let mut rows = Vec::new();
        loop {
            let Some((taken, frontier)) = walk.next(self, page).await? else {
                return Ok(rows);
            };
            let items = self.read_all(&taken, EVENT_SK).await?;
            rows.extend(
                taken
                    .iter()
                    .filter_map(|pk| items.get(pk))
                    .map(row_of)
                    .filter(|row| listing.wants(row)),
            );
            let settled = rows
                .iter()
                .filter(|row| Timestamp::parse(&row.received_at).is_some_and(|at| at >= frontier))
                .count();
            if settled >= listing.limit {
                return Ok(rows);
            }
        }
    }

    /// Scans the table in [`SCAN_SEGMENTS`] segments at once, reading only the attributes a
    /// row shows, and keeps the newest `limit` rows of each segment as it goes: a listing of a
    /// large table takes a fraction of a sequential scan's time, and memory for the rows it
    /// shows, not for the table.
    async fn list_scanned(&self, listing: &Listing<'_>) -> Result<Vec<EventRow>, StoreError> {
        let segments = (0..SCAN_SEGMENTS).map(|segment| self.scan_segment(listing, segment));
        Ok(futures_util::future::try_join_all(segments)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    async fn scan_segment(
        &self,
        listing: &Listing<'_>,
        segment: i32,
    ) -> Result<Vec<EventRow>, StoreError> {
        let projection: Vec<String> = ROW_ATTRIBUTES.iter().map(|a| format!("#{a}")).collect();
        let mut request = self
            .client
            .scan()
            .table_name(&self.table)
            .segment(segment)
            .total_segments(SCAN_SEGMENTS)
            .filter_expression(if listing.status.is_some() {
                "#sk = :event AND #status = :status"
            } else {
                "#sk = :event"
            })
            .projection_expression(projection.join(", "))
            .expression_attribute_values(":event", s(EVENT_SK));
        for attribute in ROW_ATTRIBUTES {
            request = request.expression_attribute_names(format!("#{attribute}"), *attribute);
        }
        if let Some(status) = listing.status {
            request = request.expression_attribute_values(":status", s(status));
        }
        let mut rows = Vec::new();
        let mut start = None;
        loop {
            let out = request
                .clone()
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(classify)?;
            rows.extend(
                out.items
                    .unwrap_or_default()
                    .iter()
                    .map(row_of)
                    .filter(|row| listing.wants(row)),
            );
            if rows.len() > 2 * listing.limit.max(1) {
                newest_first(&mut rows);
                rows.truncate(listing.limit);
            }
            match out.last_evaluated_key {
                Some(next) if !next.is_empty() => start = Some(next),
                _ => return Ok(rows),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(event_type: &str, received_at: &str) -> EventRow {
        EventRow {
            event_id: "01KAQ5Z8Y2M3N4P5Q6R7S8T9V0".into(),
            key: "EVT#stripe#evt_1".into(),
            source: "stripe".into(),
            source_type: "payment_intent.succeeded".into(),
            event_type: Some(event_type.into()),
            status: "received".into(),
            received_at: received_at.into(),
            detail: None,
            conflicts: 0,
        }
    }

    #[test]
    fn a_type_glob_matches_its_family_and_a_type_itself_alone() {
        let wants = |glob: &str, event_type: &str| {
            Listing {
                event_type: Some(glob),
                limit: 10,
                ..Default::default()
            }
            .wants(&row(event_type, "2026-12-02T19:00:00Z"))
        };
        assert!(wants("payment.*", "payment.succeeded"));
        assert!(!wants("payment.*", "payments.succeeded"));
        assert!(wants("payment.succeeded", "payment.succeeded"));
        assert!(!wants("payment.succeeded", "payment.succeeded_late"));
    }

    #[test]
    fn since_compares_instants_not_texts() {
        let since = Timestamp::parse("2026-12-02T19:00:00Z");
        let wants = |at: &str| {
            Listing {
                since,
                limit: 10,
                ..Default::default()
            }
            .wants(&row("payment.succeeded", at))
        };
        // As text, ".5Z" sorts before "Z": a comparison of texts would drop this one.
        assert!(wants("2026-12-02T19:00:00.5Z"));
        assert!(wants("2026-12-02T19:00:00Z"));
        assert!(!wants("2026-12-02T18:59:59.999Z"));
    }

    #[test]
    fn rows_are_newest_first_by_instant_then_event_id() {
        let mut rows = vec![
            row("a", "2026-12-02T19:00:00Z"),
            row("b", "2026-12-02T19:00:00.5Z"),
            row("c", "2026-12-02T18:00:00Z"),
        ];
        newest_first(&mut rows);
        let order: Vec<_> = rows
            .iter()
            .filter_map(|r| r.event_type.as_deref())
            .collect();
        assert_eq!(order, ["b", "a", "c"]);
    }
}
