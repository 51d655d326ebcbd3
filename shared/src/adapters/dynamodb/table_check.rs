//! Whether a table is one this store can work on: the key, the indexes it queries and the
//! expiry it writes for, as infra/template.yaml declares them. The template makes such a
//! table; a table made another way (Terraform, by hand, for the cargo-lambda path) is checked
//! by `plumbline config check --aws` before a function fails on it.

use aws_sdk_dynamodb::types::{
    AttributeDefinition, KeySchemaElement, KeyType, ScalarAttributeType, TimeToLiveStatus,
};

use super::events::{KEPT_INDEX, PENDING_INDEX};
use super::ledger::CHANGED_INDEX;
use super::{DynamoStore, classify};
use crate::adapters::aws_error::code;
use crate::config::ConfigProblem;
use crate::ports::StoreError;

/// A secondary index the store queries: its name, its two string key attributes, and what
/// fails without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableIndex {
    pub name: &'static str,
    pub partition: &'static str,
    pub sort: &'static str,
    pub needed_by: &'static str,
}

/// Every index the store queries (each projects at least the table's keys).
pub const INDEXES: [TableIndex; 3] = [
    TableIndex {
        name: PENDING_INDEX,
        partition: "pending_shard",
        sort: "pending_since",
        needed_by: "reconciliation's stuck sweep and `events list --status received` query it; \
                    every reconciliation run would fail",
    },
    TableIndex {
        name: CHANGED_INDEX,
        partition: "chg_shard",
        sort: "chg_at",
        needed_by: "reconciliation's parity checks query it; every run would fail",
    },
    TableIndex {
        name: KEPT_INDEX,
        partition: "kept_shard",
        sort: "kept_at",
        needed_by: "`events list` of kept and dead-lettered events and `events reprocess` \
                    query it; they would fail",
    },
];

/// The attribute every item's expiry is written to.
pub const EXPIRY_ATTRIBUTE: &str = "expires_at";

impl DynamoStore {
    /// What the table lacks of what the store needs, each under where it falls short
    /// (`table.key`, `table.indexes.pending`, `table.ttl`); empty when it has all of it.
    pub async fn table_problems(&self) -> Result<Vec<ConfigProblem>, StoreError> {
        let problem = |key: &str, reason: String| ConfigProblem {
            key: key.to_owned(),
            reason,
            line: None,
        };
        let described = match self
            .client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
        {
            Ok(out) => out.table.ok_or_else(|| {
                StoreError::Corrupt(format!("DescribeTable of {} answered no table", self.table))
            })?,
            Err(err) if code(&err) == Some("ResourceNotFoundException") => {
                let reason = "no such table in this account and region".to_owned();
                return Ok(vec![problem("table", reason)]);
            }
            Err(err) => return Err(classify(err)),
        };
        let types = described.attribute_definitions();
        let mut problems = Vec::new();
        if !keyed_by(described.key_schema(), types, "pk", "sk") {
            problems.push(problem(
                "table.key",
                "the key must be pk (partition) and sk (sort), both strings".to_owned(),
            ));
        }
        for index in INDEXES {
            let found = described
                .global_secondary_indexes()
                .iter()
                .find(|g| g.index_name() == Some(index.name));
            let reason = match found {
                None => Some("missing".to_owned()),
                Some(g) if !keyed_by(g.key_schema(), types, index.partition, index.sort) => {
                    Some(format!(
                        "its key must be {} (partition) and {} (sort), both strings",
                        index.partition, index.sort
                    ))
                }
                Some(_) => None,
            };
            if let Some(reason) = reason {
                problems.push(problem(
                    &format!("table.indexes.{}", index.name),
                    format!("{reason}: {}", index.needed_by),
                ));
            }
        }
        let ttl = self
            .client
            .describe_time_to_live()
            .table_name(&self.table)
            .send()
            .await
            .map_err(classify)?;
        let ttl = ttl.time_to_live_description();
        let expiring = ttl.and_then(|t| t.attribute_name()) == Some(EXPIRY_ATTRIBUTE)
            && matches!(
                ttl.and_then(|t| t.time_to_live_status()),
                Some(TimeToLiveStatus::Enabled | TimeToLiveStatus::Enabling)
            );
        if !expiring {
            problems.push(problem(
                "table.ttl",
                format!(
                    "time to live must be on, on {EXPIRY_ATTRIBUTE}: without it no event, delivery \
                     record or run report ever expires and the table only grows"
                ),
            ));
        }
        Ok(problems)
    }
}

/// Whether `schema` is `partition` then `sort`, both declared as strings.
fn keyed_by(
    schema: &[KeySchemaElement],
    types: &[AttributeDefinition],
    partition: &str,
    sort: &str,
) -> bool {
    let string = |name: &str| {
        types
            .iter()
            .any(|a| a.attribute_name() == name && *a.attribute_type() == ScalarAttributeType::S)
    };
    let role = |name: &str| {
        schema
            .iter()
            .find(|k| k.attribute_name() == name)
            .map(KeySchemaElement::key_type)
    };
    schema.len() == 2
        && role(partition) == Some(&KeyType::Hash)
        && role(sort) == Some(&KeyType::Range)
        && string(partition)
        && string(sort)
}
