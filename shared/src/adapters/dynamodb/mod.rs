//! The store on one DynamoDB table (key schema in infra/template.yaml): events (with their
//! delivery records as attributes), entities and aliases, each under its own key prefix.
//!
//! | item | pk | sk |
//! |---|---|---|
//! | event | `EVT#{source}#{source event id}` | `EVENT` |
//! | entity | `ENT#{kind}#{id}` | `STATE` |
//! | alias (identifier matching) | `ALIAS#{kind}#{key}` | `ALIAS` |

mod deliveries;
mod events;
mod inspect;
mod ledger;
mod listing;
mod packed;
mod reindex;
mod runs;
mod table_check;
mod walk;

use std::collections::HashMap;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes};

pub use events::{EVENT_SK, KEPT_INDEX, PENDING_INDEX, claim_item};
pub use inspect::key_for;
pub use ledger::CHANGED_INDEX;
pub use listing::Listing;
pub use reindex::Reindexed;
pub use table_check::{EXPIRY_ATTRIBUTE, INDEXES, TableIndex};

use super::aws_error::{code, is_throttling};
use crate::ports::StoreError;

/// An item as the SDK hands it over.
type Item = HashMap<String, AttributeValue>;

/// A string attribute's text.
fn text(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

/// Whether a string attribute holds `expected`.
fn text_is(item: &Item, name: &str, expected: &str) -> bool {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .is_some_and(|t| t == expected)
}

/// Keys one BatchGetItem may carry.
const BATCH_GET_MAX: usize = 100;
/// Rounds of asking again for the keys DynamoDB left unprocessed.
const UNPROCESSED_ROUNDS: usize = 3;

#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    /// One item, by a consistent read.
    async fn read(&self, key: Item) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        Ok(out.item)
    }

    /// Items by key (`pk`s under one `sk`), by consistent BatchGetItems of at most 100 keys:
    /// the items found by `pk`, and the keys DynamoDB still left unprocessed (throttling, or
    /// its 16 MB answer limit) after asking again a few times. A key in neither has no item.
    async fn read_many(
        &self,
        pks: &[String],
        sk: &str,
    ) -> Result<(HashMap<String, Item>, Vec<String>), StoreError> {
        // DynamoDB refuses a batch that names a key twice.
        // (A page is at most a few hundred keys: a linear check costs less code than a set.)
        let mut distinct: Vec<&String> = Vec::with_capacity(pks.len());
        for pk in pks {
            if !distinct.contains(&pk) {
                distinct.push(pk);
            }
        }
        let mut found = HashMap::with_capacity(distinct.len());
        let mut left = Vec::new();
        for chunk in distinct.chunks(BATCH_GET_MAX) {
            let mut asking: Vec<String> = chunk.iter().map(|pk| (*pk).clone()).collect();
            for round in 0..UNPROCESSED_ROUNDS {
                if asking.is_empty() {
                    break;
                }
                if round > 0 {
                    // DynamoDB leaves keys unprocessed when it throttles: asking again at once
                    // mostly meets the same throttle.
                    tokio::time::sleep(unprocessed_pause(round, fastrand::f64())).await;
                }
                let request = KeysAndAttributes::builder()
                    .set_keys(Some(asking.iter().map(|pk| key(pk, sk)).collect()))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, request)
                    .send()
                    .await
                    .map_err(classify)?;
                for item in out
                    .responses
                    .and_then(|mut r| r.remove(&self.table))
                    .unwrap_or_default()
                {
                    if let Some(pk) = item.get("pk").and_then(|v| v.as_s().ok()) {
                        found.insert(pk.clone(), item);
                    }
                }
                asking = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .map(|k| k.keys)
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|k| k.get("pk").and_then(|v| v.as_s().ok()).cloned())
                    .collect();
            }
            left.extend(asking);
        }
        Ok((found, left))
    }

    /// [`Self::read_many`] for callers that need every answer: a key DynamoDB still left
    /// unprocessed is an error (it was throttling the reads).
    async fn read_all(
        &self,
        pks: &[String],
        sk: &str,
    ) -> Result<HashMap<String, Item>, StoreError> {
        let (found, left) = self.read_many(pks, sk).await?;
        if left.is_empty() {
            return Ok(found);
        }
        let why = format!("{} of {} keys left unprocessed", left.len(), pks.len());
        Err(StoreError::Throttled(why.into()))
    }
}

/// The pause before asking again for keys a batch left unprocessed (`round` ≥ 1): full jitter
/// under `min(1 s, 50 ms · 2^(round-1))`, so readers throttled together do not come back
/// together. `unit` is a uniform draw in `[0, 1)`.
fn unprocessed_pause(round: usize, unit: f64) -> std::time::Duration {
    let ceiling_ms = (50_u64 << round.saturating_sub(1).min(5)).min(1_000);
    std::time::Duration::from_millis(ceiling_ms).mul_f64(unit.clamp(0.0, 1.0))
}

/// Sends one query per shard at the same time and hands back their items in shard order:
/// a sharded index costs one round trip of latency, not one per shard.
async fn query_shards(
    shards: u64,
    query: impl Fn(u64) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
) -> Result<Vec<Item>, StoreError> {
    Ok(query_each_shard(shards, query)
        .await?
        .into_iter()
        .flat_map(|(items, _)| items)
        .collect())
}

/// [`query_shards`], keeping each shard's items apart, in shard order, with whether that
/// shard has more after them.
async fn query_each_shard(
    shards: u64,
    query: impl Fn(u64) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
) -> Result<Vec<(Vec<Item>, bool)>, StoreError> {
    let mut running = tokio::task::JoinSet::new();
    for shard in 0..shards {
        let request = query(shard);
        running.spawn(async move { (shard, request.send().await) });
    }
    let mut answers = Vec::with_capacity(running.len());
    while let Some(joined) = running.join_next().await {
        let (shard, answer) = joined.map_err(|e| StoreError::Unavailable(Box::new(e)))?;
        answers.push((shard, answer.map_err(classify)?));
    }
    answers.sort_by_key(|(shard, _)| *shard);
    Ok(answers
        .into_iter()
        .map(|(_, out)| {
            let more = out.last_evaluated_key.is_some_and(|k| !k.is_empty());
            (out.items.unwrap_or_default(), more)
        })
        .collect())
}

fn key(pk: &str, sk: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        ("pk".to_owned(), AttributeValue::S(pk.to_owned())),
        ("sk".to_owned(), AttributeValue::S(sk.to_owned())),
    ])
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl std::fmt::Display) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// Any SDK error that is not a failed condition, classified with its source kept.
fn classify<E>(err: SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if is_throttling(code(&err)) {
        StoreError::Throttled(Box::new(err))
    } else {
        StoreError::Unavailable(Box::new(err))
    }
}

/// Whether a conditional write was applied: a failed condition is `false`, not an error.
fn applied<T, E>(
    result: Result<T, SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>>,
) -> Result<bool, StoreError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(err) if condition_failed(&err) => Ok(false),
        Err(err) => Err(classify(err)),
    }
}

/// [`applied`], for a write the SDK may send again after its answer was lost: the retry is then
/// refused by the item the first attempt wrote. A refusal by an item `own` recognises as this
/// write's doing counts as applied. The write must ask for the item with its refusal
/// (`ReturnValuesOnConditionCheckFailure::AllOld`).
fn applied_or_own<T, E>(
    result: Result<T, SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>>,
    own: impl FnOnce(&Item) -> bool,
) -> Result<bool, StoreError>
where
    E: Refusal + ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match result {
        Ok(_) => Ok(true),
        Err(err) if condition_failed(&err) => Ok(refused_item(&err).is_some_and(own)),
        Err(err) => Err(classify(err)),
    }
}

/// The operations' errors whose failed condition can hand back the item it was refused by.
trait Refusal {
    fn refused_by(&self) -> Option<&Item>;
}

impl Refusal for PutItemError {
    fn refused_by(&self) -> Option<&Item> {
        match self {
            Self::ConditionalCheckFailedException(refused) => refused.item(),
            _ => None,
        }
    }
}

impl Refusal for UpdateItemError {
    fn refused_by(&self) -> Option<&Item> {
        match self {
            Self::ConditionalCheckFailedException(refused) => refused.item(),
            _ => None,
        }
    }
}

/// The item a conditional write was refused by, where the refusal returned it.
fn refused_item<E: Refusal>(
    err: &SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> Option<&Item> {
    err.as_service_error().and_then(Refusal::refused_by)
}

/// An id for one conditional write, stored with it, by which a retry of that write (the SDK
/// sends it again when the answer was lost) knows the item it is refused by for its own: 64
/// random bits, 11 characters, so two writers at once never share one.
fn write_id() -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(fastrand::u64(..).to_le_bytes())
}

/// True when the error is a failed condition expression (an expected outcome, not a fault).
fn condition_failed<E: ProvideErrorMetadata>(
    err: &SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> bool {
    code(err) == Some("ConditionalCheckFailedException")
}

#[cfg(test)]
mod tests {
    use super::unprocessed_pause;

    #[test]
    fn unprocessed_keys_are_asked_for_again_under_a_doubling_ceiling_of_at_most_a_second() {
        let ceiling = |round| unprocessed_pause(round, 0.999_999).as_millis();
        assert_eq!(
            (1..=7).map(ceiling).collect::<Vec<_>>(),
            [49, 99, 199, 399, 799, 999, 999]
        );
        assert_eq!(unprocessed_pause(2, 0.0).as_millis(), 0);
        assert_eq!(unprocessed_pause(2, 0.5).as_millis(), 50);
        assert_eq!(unprocessed_pause(usize::MAX, 1.0).as_millis(), 1_000);
    }
}
