//! Walking a sparse index of events newest first across its shards: a page of keys per
//! shard at a time, merged by the index's time.

use std::collections::VecDeque;

use super::events::{
    KEPT_INDEX, KEPT_SHARDS, PENDING_INDEX, PENDING_SHARDS, kept_shard, pending_shard,
};
use super::{DynamoStore, Item, classify, s, text};
use crate::contract::Timestamp;
use crate::ports::{EventStatus, StoreError};

/// A sparse index that holds exactly the events of one status.
pub(super) struct Index {
    pub(super) name: &'static str,
    pub(super) partition: &'static str,
    /// A time never before the event's receipt.
    pub(super) sort: &'static str,
    /// Whether `sort` is the receipt time itself, so the index's order is the listing's.
    pub(super) by_receipt: bool,
    pub(super) shards: Vec<String>,
}

impl Index {
    pub(super) fn for_status(status: &str) -> Option<Self> {
        let kept = |status: EventStatus| Self {
            name: KEPT_INDEX,
            partition: "kept_shard",
            sort: "kept_at",
            by_receipt: true,
            shards: (0..KEPT_SHARDS).map(|n| kept_shard(status, n)).collect(),
        };
        match status {
            "received" => Some(Self {
                name: PENDING_INDEX,
                partition: "pending_shard",
                // The claim time: the receipt time, or later for a claim a duplicate or the stuck
                // sweep refreshed.
                sort: "pending_since",
                by_receipt: false,
                shards: (0..PENDING_SHARDS).map(pending_shard).collect(),
            }),
            "quarantined" => Some(kept(EventStatus::Quarantined)),
            "unrouted" => Some(kept(EventStatus::Unrouted)),
            "dead_lettered" => Some(kept(EventStatus::DeadLettered)),
            _ => None,
        }
    }
}

/// A walk of an index newest first by its time, across its shards: each shard is read a page
/// at a time as the walk reaches it, so a walk that stops early reads little.
pub(super) struct Walk<'i> {
    index: &'i Index,
    /// The lowest index time asked for, as the index writes it.
    lower: Option<String>,
    /// Keys a shard is asked for at a time.
    page: usize,
    cursors: Vec<Cursor<'i>>,
}

impl<'i> Walk<'i> {
    /// A walk of `index`'s entries at or after `since`, reading `page` keys of a shard at a time.
    pub(super) fn new(index: &'i Index, since: Option<Timestamp>, page: usize) -> Self {
        Self {
            index,
            // A second early, written as the index writes instants: a text bound below every
            // instant from `since` on, whatever fraction of a second each is written with. The
            // rows are filtered on the parsed instant after.
            lower: since.map(|t| t.plus_secs(-1).to_string()),
            page: page.max(1),
            cursors: index
                .shards
                .iter()
                .map(|shard| Cursor::new(shard))
                .collect(),
        }
    }

    /// The next keys, newest first, at most `most`, with the index time of the last one; `None`
    /// once every shard is read to its end.
    pub(super) async fn next(
        &mut self,
        store: &DynamoStore,
        most: usize,
    ) -> Result<Option<(Vec<String>, Timestamp)>, StoreError> {
        let refills = self
            .cursors
            .iter_mut()
            .filter(|c| c.keys.is_empty() && c.more)
            .map(|c| store.read_page(self.index, c, self.lower.as_deref(), self.page));
        futures_util::future::try_join_all(refills).await?;
        let (taken, last) = take_newest(&mut self.cursors, most);
        Ok(last.map(|last| (taken, last)))
    }
}

/// Where a walk of one index shard stands.
struct Cursor<'s> {
    shard: &'s str,
    /// Keys read and not yet taken, newest first: `(index time, pk)`.
    keys: VecDeque<(Timestamp, String)>,
    /// Where the shard's next page starts.
    start: Option<Item>,
    /// Whether the shard has entries not yet read.
    more: bool,
}

impl<'s> Cursor<'s> {
    fn new(shard: &'s str) -> Self {
        Self {
            shard,
            keys: VecDeque::new(),
            start: None,
            more: true,
        }
    }
}

/// Takes up to `most` keys newest first across the shards, and the index time of the last one
/// taken (`None`: nothing left to take). It stops early when a shard with more to read runs
/// out of keys read: its next page may hold newer keys than the others have left.
fn take_newest(cursors: &mut [Cursor<'_>], most: usize) -> (Vec<String>, Option<Timestamp>) {
    let mut taken = Vec::new();
    let mut last = None;
    while taken.len() < most {
        let Some(cursor) = cursors
            .iter_mut()
            .filter(|c| !c.keys.is_empty())
            .max_by_key(|c| c.keys.front().map(|(at, _)| *at))
        else {
            break;
        };
        let Some((at, pk)) = cursor.keys.pop_front() else {
            break;
        };
        last = Some(at);
        taken.push(pk);
        if cursor.keys.is_empty() && cursor.more {
            break;
        }
    }
    (taken, last)
}

impl DynamoStore {
    /// Reads a shard's next page of keys, newest first, into its cursor.
    async fn read_page(
        &self,
        index: &Index,
        cursor: &mut Cursor<'_>,
        lower: Option<&str>,
        page: usize,
    ) -> Result<(), StoreError> {
        let mut values: Item = [(":shard".to_owned(), s(cursor.shard))].into();
        let condition = match lower {
            Some(lower) => {
                values.insert(":since".to_owned(), s(lower));
                format!("{} = :shard AND {} >= :since", index.partition, index.sort)
            }
            None => format!("{} = :shard", index.partition),
        };
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index.name)
            .key_condition_expression(condition)
            .set_expression_attribute_values(Some(values))
            .scan_index_forward(false)
            .limit(i32::try_from(page).unwrap_or(i32::MAX))
            .set_exclusive_start_key(cursor.start.take())
            .send()
            .await
            .map_err(classify)?;
        cursor
            .keys
            .extend(out.items.unwrap_or_default().iter().filter_map(|item| {
                let at = Timestamp::parse(&text(item, index.sort)?)?;
                Some((at, text(item, "pk")?))
            }));
        cursor.start = out.last_evaluated_key.filter(|next| !next.is_empty());
        cursor.more = cursor.start.is_some();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_unix(1_763_900_000 + secs).expect("in range")
    }

    fn cursor(keys: &[(i64, &str)], more: bool) -> Cursor<'static> {
        Cursor {
            shard: "s",
            keys: keys
                .iter()
                .map(|(t, pk)| (at(*t), (*pk).to_owned()))
                .collect(),
            start: None,
            more,
        }
    }

    #[test]
    fn keys_are_taken_newest_first_across_shards() {
        let mut cursors = [
            cursor(&[(9, "a9"), (5, "a5"), (1, "a1")], false),
            cursor(&[(8, "b8"), (7, "b7")], false),
        ];
        let (taken, last) = take_newest(&mut cursors, 4);
        assert_eq!(taken, ["a9", "b8", "b7", "a5"]);
        assert_eq!(last, Some(at(5)));
        let (taken, last) = take_newest(&mut cursors, 4);
        assert_eq!(taken, ["a1"]);
        assert_eq!(last, Some(at(1)));
        assert_eq!(take_newest(&mut cursors, 4), (Vec::new(), None));
    }

    /// A shard whose read keys run out while it has more pages stops the take: its next page
    /// may hold keys newer than the other shard's.
    #[test]
    fn a_shard_with_more_to_read_is_read_before_the_walk_passes_it() {
        let mut cursors = [
            cursor(&[(9, "a9")], true),
            cursor(&[(8, "b8"), (2, "b2")], false),
        ];
        let (taken, last) = take_newest(&mut cursors, 10);
        assert_eq!(taken, ["a9"]);
        assert_eq!(last, Some(at(9)));
    }
}
