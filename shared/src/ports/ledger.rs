use std::collections::HashMap;
use std::future::Future;

use serde::{Deserialize, Serialize};

use super::StoreError;
use crate::contract::{EntityKind, Timestamp};
use crate::ledger::Entity;

/// Whether a versioned write landed.
#[derive(Debug, Clone, PartialEq)]
pub enum Saved {
    Saved,
    /// The stored version was not the one the write expected (someone else wrote the entity
    /// since it was read, or a "new" entity exists). `stored` is the entity as it stood when
    /// the write was refused, where the store returns it with the refusal; `None`: read again.
    VersionConflict {
        stored: Option<Box<Entity>>,
    },
}

/// Points an identity key (`email:…`, `phone:…`, `ext:…`, or a lead's form key) at an entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alias {
    pub entity_id: String,
    /// When the aliased entity was last matched by this key (for the lead double-submit window).
    pub at: Timestamp,
}

/// Entities read ahead of a batch, by kind and id; `None` where the store has none.
pub type Known = HashMap<(EntityKind, String), Option<Entity>>;

/// Each (kind, id) once, in a stable order: the keys to ask `load_entities` for.
pub fn distinct_keys(
    keys: impl IntoIterator<Item = (EntityKind, String)>,
) -> Vec<(EntityKind, String)> {
    let mut keys: Vec<_> = keys.into_iter().collect();
    keys.sort_unstable_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
    keys.dedup();
    keys
}

/// Entities with optimistic concurrency, and the aliases identifier matching uses.
pub trait LedgerStore: Send + Sync {
    fn load_entity(
        &self,
        kind: EntityKind,
        id: &str,
    ) -> impl Future<Output = Result<Option<Entity>, StoreError>> + Send;

    /// Reads several entities, in one request where the store can. A key it could not read is
    /// left out of the answer, never reported absent.
    fn load_entities(
        &self,
        keys: &[(EntityKind, String)],
    ) -> impl Future<Output = Result<Known, StoreError>> + Send {
        async move {
            let mut known = Known::new();
            for (kind, id) in keys {
                let entity = self.load_entity(*kind, id).await?;
                known.insert((*kind, id.clone()), entity);
            }
            Ok(known)
        }
    }

    /// Writes `entity` (whose `version` is the new version) only if the stored version is
    /// `version - 1` (absent for version 1). A refused write brings back the stored entity
    /// where the store can do so in the same request.
    fn save_entity(
        &self,
        entity: &Entity,
    ) -> impl Future<Output = Result<Saved, StoreError>> + Send;

    fn load_alias(
        &self,
        kind: EntityKind,
        key: &str,
    ) -> impl Future<Output = Result<Option<Alias>, StoreError>> + Send;

    /// Sets the alias only if it still holds `previous` (absent when `None`); false otherwise.
    fn save_alias(
        &self,
        kind: EntityKind,
        key: &str,
        alias: &Alias,
        previous: Option<&Alias>,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
}
