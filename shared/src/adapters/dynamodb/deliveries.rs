//! Delivery records: one item per event and target, beside the event's item, with a lease.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{DynamoStore, classify, condition_failed, key, n, s};
use crate::contract::Timestamp;
use crate::ports::{Attempt, DeliveryLog, DeliveryRecord, DeliveryState, EventKey, StoreError};

fn sk(target: &str) -> String {
    format!("DLV#{target}")
}

fn state_name(state: DeliveryState) -> &'static str {
    match state {
        DeliveryState::InFlight => "in_flight",
        DeliveryState::Delivered => "delivered",
        DeliveryState::Retrying => "retrying",
        DeliveryState::Failed => "failed",
    }
}

fn record_of(item: &HashMap<String, AttributeValue>) -> Result<DeliveryRecord, StoreError> {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned();
    let number = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_n().ok())
            .and_then(|v| v.parse::<i64>().ok())
    };
    let corrupt = || StoreError::Corrupt("delivery record".into());
    let state = match text("state").as_deref() {
        Some("in_flight") => DeliveryState::InFlight,
        Some("delivered") => DeliveryState::Delivered,
        Some("retrying") => DeliveryState::Retrying,
        Some("failed") => DeliveryState::Failed,
        _ => return Err(corrupt()),
    };
    Ok(DeliveryRecord {
        target: text("sk")
            .and_then(|sk| sk.strip_prefix("DLV#").map(str::to_owned))
            .ok_or_else(corrupt)?,
        state,
        attempts: number("attempts")
            .and_then(|a| u32::try_from(a).ok())
            .unwrap_or(0),
        last_error: text("last_error"),
        lease_until: number("lease_until_ms").and_then(|ms| Timestamp::from_unix(ms / 1000)),
        updated_at: text("updated_at")
            .and_then(|t| Timestamp::parse(&t))
            .ok_or_else(corrupt)?,
        delivered_at: text("delivered_at").and_then(|t| Timestamp::parse(&t)),
    })
}

impl DeliveryLog for DynamoStore {
    async fn begin(
        &self,
        event: &EventKey,
        target: &str,
        now: Timestamp,
        lease: Duration,
        replay: bool,
    ) -> Result<Attempt, StoreError> {
        let until = now.unix_millis() + i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 2);
        let condition = if replay {
            "attribute_not_exists(pk) OR (#state <> :delivered AND (attribute_not_exists(lease_until_ms) OR lease_until_ms < :now))"
        } else {
            "attribute_not_exists(pk) OR (#state <> :delivered AND #state <> :failed AND (attribute_not_exists(lease_until_ms) OR lease_until_ms < :now))"
        };
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(event.as_str(), &sk(target))))
            .update_expression("SET #state = :in_flight, lease_until_ms = :until, updated_at = :at ADD attempts :one")
            .condition_expression(condition)
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":in_flight", s(state_name(DeliveryState::InFlight)))
            .expression_attribute_values(":delivered", s(state_name(DeliveryState::Delivered)))
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":now", n(now.unix_millis()))
            .expression_attribute_values(":at", s(now.to_string()))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew);
        if !replay {
            request = request
                .expression_attribute_values(":failed", s(state_name(DeliveryState::Failed)));
        }
        match request.send().await {
            Ok(out) => {
                let attempt = out
                    .attributes
                    .as_ref()
                    .and_then(|a| a.get("attempts"))
                    .and_then(|v| v.as_n().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(1);
                Ok(Attempt::Go { attempt })
            }
            Err(err) if condition_failed(&err) => {
                let item = self.read(key(event.as_str(), &sk(target))).await?;
                let record = item
                    .as_ref()
                    .map(record_of)
                    .transpose()?
                    .ok_or_else(|| StoreError::Corrupt("lease lost".into()))?;
                Ok(match record.state {
                    DeliveryState::Delivered => Attempt::AlreadyDelivered,
                    DeliveryState::Failed if !replay => Attempt::FailedBefore,
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
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(event.as_str(), &sk(target))))
            .update_expression("SET #state = :delivered, delivered_at = :at, updated_at = :at REMOVE lease_until_ms")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":delivered", s(state_name(DeliveryState::Delivered)))
            .expression_attribute_values(":at", s(now.to_string()))
            .send()
            .await
            .map(|_| ())
            .map_err(classify)
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
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(event.as_str(), &sk(target))))
            .update_expression(
                "SET #state = :state, last_error = :reason, updated_at = :at REMOVE lease_until_ms",
            )
            // A late failure report never overwrites a delivery.
            .condition_expression("attribute_not_exists(#state) OR #state <> :delivered")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":state", s(state_name(state)))
            .expression_attribute_values(":delivered", s(state_name(DeliveryState::Delivered)))
            .expression_attribute_values(":reason", s(reason))
            .expression_attribute_values(":at", s(now.to_string()))
            .send()
            .await
            .map(|_| ())
            .or_else(|err| {
                if condition_failed(&err) {
                    Ok(())
                } else {
                    Err(classify(err))
                }
            })
    }

    async fn deliveries(&self, event: &EventKey) -> Result<Vec<DeliveryRecord>, StoreError> {
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND begins_with(sk, :dlv)")
            .expression_attribute_values(":pk", s(event.as_str()))
            .expression_attribute_values(":dlv", s("DLV#"))
            .consistent_read(true)
            .send()
            .await
            .map_err(classify)?;
        out.items
            .unwrap_or_default()
            .iter()
            .map(record_of)
            .collect()
    }
}
