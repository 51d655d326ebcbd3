//! Delivery records, kept on the event's own item as one group of attributes per target
//! (`d:{target}:state`, `…:attempts`, `…:lease`, `…:holder`, `…:updated`, `…:error`,
//! `…:delivered`).
//! On one item, the last delivery and the event's final status are one write, and a failed
//! lease condition hands back the record without a second read.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};

use super::events::{EVENT_SK, final_status};
use super::{
    DynamoStore, applied, classify, condition_failed, key, n, refused_item, s, text_is, write_id,
};
use crate::contract::Timestamp;
use crate::ports::{
    Attempt, DeliveryLog, DeliveryRecord, DeliveryState, EventKey, EventStatus, StoreError,
};

const PREFIX: &str = "d:";

/// The attribute holding `field` of `target`'s record.
fn attr(target: &str, field: &str) -> String {
    format!("{PREFIX}{target}:{field}")
}

fn state_name(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::InFlight => "in_flight",
        DeliveryState::Delivered => "delivered",
        DeliveryState::Retrying => "retrying",
        DeliveryState::Failed => "failed",
    }
}

fn state_of(name: &str) -> Option<DeliveryState> {
    Some(match name {
        "in_flight" => DeliveryState::InFlight,
        "delivered" => DeliveryState::Delivered,
        "retrying" => DeliveryState::Retrying,
        "failed" => DeliveryState::Failed,
        _ => return None,
    })
}

/// Every target's record on an event item, by target name.
pub(super) fn records_of(
    item: &HashMap<String, AttributeValue>,
) -> Result<Vec<DeliveryRecord>, StoreError> {
    let mut fields: BTreeMap<&str, HashMap<&str, &AttributeValue>> = BTreeMap::new();
    for (name, value) in item {
        if let Some((target, field)) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.rsplit_once(':'))
        {
            fields.entry(target).or_default().insert(field, value);
        }
    }
    fields
        .into_iter()
        .map(|(target, f)| {
            let text = |name: &str| f.get(name).and_then(|v| v.as_s().ok()).cloned();
            let number = |name: &str| {
                f.get(name)
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse::<i64>().ok())
            };
            let corrupt = || StoreError::Corrupt(format!("delivery record of {target}"));
            Ok(DeliveryRecord {
                target: target.to_owned(),
                state: text("state")
                    .as_deref()
                    .and_then(state_of)
                    .ok_or_else(corrupt)?,
                attempts: number("attempts")
                    .and_then(|a| u32::try_from(a).ok())
                    .unwrap_or(0),
                last_error: text("error"),
                lease_until: number("lease").and_then(|ms| Timestamp::from_unix(ms / 1000)),
                updated_at: text("updated")
                    .and_then(|t| Timestamp::parse(&t))
                    .ok_or_else(corrupt)?,
                delivered_at: text("delivered").and_then(|t| Timestamp::parse(&t)),
            })
        })
        .collect()
}

fn event_key(event: &EventKey) -> HashMap<String, AttributeValue> {
    key(event.as_str(), EVENT_SK)
}

impl DynamoStore {
    /// Marks `targets` delivered (their leases end) and, given one, sets the event's final
    /// status: one conditional update of the event item.
    async fn mark_delivered(
        &self,
        event: &EventKey,
        targets: &[&str],
        status: Option<(EventStatus, Option<&str>)>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let (mut set, mut remove) = (Vec::new(), Vec::new());
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(event_key(event)))
            .condition_expression("attribute_exists(pk)")
            .expression_attribute_values(":at", s(now.to_string()));
        if let Some((status, detail)) = status {
            let last = final_status(event, status, detail);
            (set, remove) = (last.set, last.remove);
            request = request.expression_attribute_names("#status", "status");
            for (name, value) in last.values {
                request = request.expression_attribute_values(name, value);
            }
        }
        if !targets.is_empty() {
            request = request
                .expression_attribute_values(":delivered", s(state_name(DeliveryState::Delivered)))
                .expression_attribute_values(":one", n(1));
        }
        for (i, target) in targets.iter().enumerate() {
            // No attempts yet: the entity's write held this first one.
            set.push(format!(
                "#s{i} = :delivered, #d{i} = :at, #u{i} = :at, #a{i} = if_not_exists(#a{i}, :one)"
            ));
            remove.push(format!("#l{i}"));
            request = request
                .expression_attribute_names(format!("#a{i}"), attr(target, "attempts"))
                .expression_attribute_names(format!("#s{i}"), attr(target, "state"))
                .expression_attribute_names(format!("#d{i}"), attr(target, "delivered"))
                .expression_attribute_names(format!("#u{i}"), attr(target, "updated"))
                .expression_attribute_names(format!("#l{i}"), attr(target, "lease"));
        }
        if set.is_empty() {
            return Ok(());
        }
        let update = format!("SET {} REMOVE {}", set.join(", "), remove.join(", "));
        match request.update_expression(update).send().await {
            Ok(_) => Ok(()),
            Err(err) if condition_failed(&err) => {
                Err(StoreError::Corrupt(format!("{event}: no such event")))
            }
            Err(err) => Err(classify(err)),
        }
    }
}

impl DeliveryLog for DynamoStore {
    async fn begin(
        &self,
        event: &EventKey,
        target: &str,
        now: Timestamp,
        lease: Duration,
        replay: bool,
        held: Option<Timestamp>,
    ) -> Result<Attempt, StoreError> {
        let until = now.unix_millis() + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        let holder = write_id();
        let held = held.filter(|h| h.unix_millis() >= now.unix_millis());
        // The event item must exist: an update would otherwise create a half item. While the
        // entity's write holds the first attempt, a target without a record is not free.
        let free = if held.is_some() {
            "attribute_exists(#state) AND"
        } else {
            "attribute_not_exists(#state) OR"
        };
        let failed = if replay { "" } else { " AND #state <> :failed" };
        let condition = format!(
            "attribute_exists(pk) AND ({free} (#state <> :delivered{failed} AND (attribute_not_exists(#lease) OR #lease < :now)))"
        );
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(event_key(event)))
            .update_expression(
                "SET #state = :in_flight, #lease = :until, #updated = :at, #holder = :holder \
                 ADD #attempts :one",
            )
            .condition_expression(condition)
            .expression_attribute_names("#holder", attr(target, "holder"))
            .expression_attribute_values(":holder", s(holder.clone()))
            .expression_attribute_names("#state", attr(target, "state"))
            .expression_attribute_names("#lease", attr(target, "lease"))
            .expression_attribute_names("#updated", attr(target, "updated"))
            .expression_attribute_names("#attempts", attr(target, "attempts"))
            .expression_attribute_values(":in_flight", s(state_name(DeliveryState::InFlight)))
            .expression_attribute_values(":delivered", s(state_name(DeliveryState::Delivered)))
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":now", n(now.unix_millis()))
            .expression_attribute_values(":at", s(now.to_string()))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        if !replay {
            request = request
                .expression_attribute_values(":failed", s(state_name(DeliveryState::Failed)));
        }
        match request.send().await {
            Ok(out) => {
                let attempt = out
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get(&attr(target, "attempts")))
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                Ok(Attempt::Go { attempt })
            }
            Err(err) if condition_failed(&err) => {
                let item = match refused_item(&err).cloned() {
                    Some(item) => item,
                    None => self
                        .read(event_key(event))
                        .await?
                        .ok_or_else(|| StoreError::Corrupt(format!("{event}: no such event")))?,
                };
                let record = records_of(&item)?.into_iter().find(|r| r.target == target);
                // The SDK's retry of this lease, whose answer was lost, is refused by the lease
                // itself: it is this caller's.
                let ours = text_is(&item, &attr(target, "holder"), &holder);
                if let Some(record) = record
                    .as_ref()
                    .filter(|r| ours && r.state == DeliveryState::InFlight)
                {
                    return Ok(Attempt::Go {
                        attempt: record.attempts,
                    });
                }
                let record = match (record, held) {
                    (Some(record), _) => record,
                    (None, Some(until)) => return Ok(Attempt::Leased { until }),
                    (None, None) => return Err(StoreError::Corrupt("lease lost".into())),
                };
                Ok(match record.state {
                    DeliveryState::Delivered => Attempt::AlreadyDelivered,
                    DeliveryState::Failed if !replay => Attempt::FailedBefore {
                        reason: record.last_error,
                    },
                    _ => Attempt::Leased {
                        until: record.lease_until.unwrap_or(now),
                    },
                })
            }
            Err(err) => Err(classify(err)),
        }
    }

    async fn delivered(
        &self,
        event: &EventKey,
        target: &str,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.mark_delivered(event, &[target], None, now).await
    }

    async fn settle(
        &self,
        event: &EventKey,
        delivered: &[&str],
        status: EventStatus,
        detail: Option<&str>,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        self.mark_delivered(event, delivered, Some((status, detail)), now)
            .await
    }

    async fn failed(
        &self,
        event: &EventKey,
        target: &str,
        reason: &str,
        permanent: bool,
        now: Timestamp,
    ) -> Result<(), StoreError> {
        let state = if permanent {
            DeliveryState::Failed
        } else {
            DeliveryState::Retrying
        };
        let result = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(event_key(event)))
            .update_expression(
                "SET #state = :state, #error = :reason, #updated = :at, #attempts = if_not_exists(#attempts, :one) REMOVE #lease",
            )
            // A late failure report never overwrites a delivery.
            .condition_expression(
                "attribute_exists(pk) AND (attribute_not_exists(#state) OR #state <> :delivered)",
            )
            .expression_attribute_names("#state", attr(target, "state"))
            .expression_attribute_names("#error", attr(target, "error"))
            .expression_attribute_names("#updated", attr(target, "updated"))
            .expression_attribute_names("#lease", attr(target, "lease"))
            .expression_attribute_names("#attempts", attr(target, "attempts"))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":state", s(state_name(state)))
            .expression_attribute_values(":delivered", s(state_name(DeliveryState::Delivered)))
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":at", s(now.to_string()))
            .send()
            .await;
        // A failed condition is an expected outcome here, not an error.
        applied(result).map(|_| ())
    }

    async fn retrying_until(&self, event: &EventKey, until: Timestamp) -> Result<(), StoreError> {
        // A claim no longer received is left alone: not an error.
        self.move_claim(event, until, None).await.map(|_| ())
    }

    async fn deliveries(&self, event: &EventKey) -> Result<Vec<DeliveryRecord>, StoreError> {
        match self.read(event_key(event)).await? {
            Some(item) => records_of(&item),
            None => Ok(Vec::new()),
        }
    }
}
