//! Finds the entity an event is about (identifier matching for customers and leads), then
//! applies the event with optimistic concurrency.

use super::retry;
use crate::config::LedgerSettings;
use crate::contract::{EntityKind, Envelope, Timestamp};
use crate::ledger::{self, Applied, Entity, Ownership, identity};
use crate::ports::{Alias, Known, LedgerStore, Saved, StoreError};

/// Attempts at a versioned write before the store is reported as contended.
const MAX_ATTEMPTS: usize = 8;

/// Who holds an event's delivery to its targets, by the entity's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hold {
    /// This application's write took it, until then: the first attempt goes ahead.
    Taken(Timestamp),
    /// An earlier application of the event took it, until then.
    Earlier(Timestamp),
    /// Nobody: each target's record on the event speaks for it.
    Nobody,
}

/// An event applied to its entity, or found there.
#[derive(Debug)]
pub(super) struct Application {
    pub(super) applied: Applied,
    pub(super) hold: Hold,
    /// The event was in the entity's history already: this message repeats an application
    /// (a retry, a replay, a late copy) and nothing was written, so nothing is counted again.
    pub(super) repeated: bool,
}

impl Hold {
    /// The lease an earlier application took, for `DeliveryLog::begin`.
    pub(super) fn earlier(self) -> Option<Timestamp> {
        match self {
            Self::Earlier(until) => Some(until),
            Self::Taken(_) | Self::Nobody => None,
        }
    }
}

/// Which entity an event lands on, and whether it is a repeat submission of that entity.
struct Resolved {
    id: String,
    duplicate_submission: bool,
}

/// Applies `envelope` to its entity, retrying on version conflicts. Idempotent: an event already
/// in the entity's history is not applied again. The entity is taken from `known` when it was
/// read ahead (a stale copy's versioned write is refused, and the refusal brings back the stored
/// one), and the result is put back there for the next event of the batch.
///
/// An entity nobody read ahead is not read first: the event is written as if the entity were
/// new, and a refused write brings back the stored entity to apply it to. A new entity then
/// takes one request instead of a read and a write; an existing one takes two, as before.
///
/// `hold_until`, when the event has targets, is the first delivery attempt's lease: it goes
/// into the event's history entry with the same write, so that attempt needs no lease of its
/// own. Versioned writes make it exclusive: of two workers applying the same event, one
/// writes it and the other finds it in the history, held.
pub(super) async fn apply(
    store: &impl LedgerStore,
    envelope: &Envelope,
    ownership: &Ownership,
    settings: &LedgerSettings,
    now: Timestamp,
    hold_until: Option<Timestamp>,
    known: &mut Known,
) -> Result<Application, StoreError> {
    let kind = envelope.entity.kind;
    let resolved = resolve(store, envelope, settings).await?;
    let key = (kind, resolved.id.clone());
    // `Some(None)`: known absent (or taken for new); `None`: read it from the store.
    let (mut ahead, mut taken_for_new) = match known.remove(&key) {
        Some(entity) => (Some(entity), false),
        None => (Some(None), true),
    };
    let mut lost = 0;
    loop {
        let current = match ahead.take() {
            Some(entity) => entity,
            None => store.load_entity(kind, &resolved.id).await?,
        }
        .unwrap_or_else(|| Entity::new(kind, &resolved.id));
        if let Some(seen) = current
            .history
            .iter()
            .find(|h| h.event_id == envelope.id.as_str())
        {
            let (effect, ownership_conflicts) = (seen.effect, seen.ownership_conflicts.clone());
            let hold = seen.held_until.map_or(Hold::Nobody, Hold::Earlier);
            known.insert(key, Some(current.clone()));
            let applied = Applied {
                entity: current,
                effect,
                ownership_conflicts,
            };
            return Ok(Application {
                applied,
                hold,
                repeated: true,
            });
        }
        let (mut applied, hold) = if resolved.duplicate_submission {
            let merged = ledger::merge_duplicate_submission(current, envelope);
            (merged, Hold::Nobody)
        } else {
            let mut applied = ledger::apply(current, envelope, ownership);
            let entry = applied.entity.history.last_mut();
            let hold = match (hold_until, entry) {
                (Some(until), Some(entry)) => {
                    entry.held_until = Some(until);
                    Hold::Taken(until)
                }
                _ => Hold::Nobody,
            };
            (applied, hold)
        };
        // A hold that has run out says nothing any more (`begin` treats it as none); kept, it
        // would only grow the entity with every event it has had.
        for entry in &mut applied.entity.history {
            entry.held_until.take_if(|until| *until < now);
        }
        applied.entity.version += 1;
        applied.entity.touch(now);
        let Saved::VersionConflict { stored } = store.save_entity(&applied.entity).await? else {
            known.insert(key, Some(applied.entity.clone()));
            return Ok(Application {
                applied,
                hold,
                repeated: false,
            });
        };
        ahead = stored.map(|entity| Some(*entity));
        // The entity existed: nobody raced this write, so no pause and no attempt counted.
        if std::mem::take(&mut taken_for_new) {
            continue;
        }
        lost += 1;
        if lost == MAX_ATTEMPTS {
            return Err(StoreError::Contended(format!(
                "{} {}",
                kind.as_str(),
                resolved.id
            )));
        }
        tokio::time::sleep(retry::conflict_pause(
            u32::try_from(lost - 1).unwrap_or(u32::MAX),
            fastrand::f64(),
        ))
        .await;
    }
}

async fn resolve(
    store: &impl LedgerStore,
    envelope: &Envelope,
    settings: &LedgerSettings,
) -> Result<Resolved, StoreError> {
    let own = || Resolved {
        id: envelope.entity.id.clone(),
        duplicate_submission: false,
    };
    match envelope.entity.kind {
        EntityKind::Customer => resolve_customer(store, envelope).await,
        EntityKind::Lead => resolve_lead(store, envelope, settings).await,
        _ => Ok(own()),
    }
}

fn keys_of(envelope: &Envelope, external_id: Option<&str>) -> Vec<String> {
    let customer = envelope.data.customer.clone().unwrap_or_default();
    let refs = &envelope.entity.refs;
    identity::identity_keys(
        external_id,
        customer.email.as_deref().or(refs.customer_email.as_deref()),
        customer.phone.as_deref().or(refs.customer_phone.as_deref()),
    )
}

/// A customer is the entity any of its keys already names (external id first), else a new one;
/// every key then points at it, unless another customer claimed that key first.
async fn resolve_customer(
    store: &impl LedgerStore,
    envelope: &Envelope,
) -> Result<Resolved, StoreError> {
    let keys = keys_of(envelope, Some(&envelope.entity.id));
    let mut id = None;
    for key in &keys {
        if let Some(alias) = store.load_alias(EntityKind::Customer, key).await? {
            id = Some(alias.entity_id);
            break;
        }
    }
    let id = id.unwrap_or_else(|| envelope.entity.id.clone());
    let alias = Alias {
        entity_id: id.clone(),
        at: envelope.occurred_at,
    };
    for key in &keys {
        store
            .save_alias(EntityKind::Customer, key, &alias, None)
            .await?;
    }
    Ok(Resolved {
        id,
        duplicate_submission: false,
    })
}

/// A lead repeats an earlier one when the same person (any key) sent the same form within the
/// window. Keys are per form: `form:{form id}:{identity key}`.
async fn resolve_lead(
    store: &impl LedgerStore,
    envelope: &Envelope,
    settings: &LedgerSettings,
) -> Result<Resolved, StoreError> {
    let form = envelope
        .data
        .lead
        .as_ref()
        .and_then(|l| l.form_id.clone())
        .unwrap_or_default();
    let keys: Vec<String> = keys_of(envelope, None)
        .into_iter()
        .map(|k| format!("form:{form}:{k}"))
        .collect();
    let own_id = envelope.entity.id.clone();
    let within = |alias: &Alias| {
        alias.entity_id != own_id
            && (envelope.occurred_at.unix() - alias.at.unix()).abs()
                <= settings.lead_dedup_window_secs
    };
    for key in &keys {
        if let Some(alias) = store.load_alias(EntityKind::Lead, key).await?
            && within(&alias)
        {
            return Ok(Resolved {
                id: alias.entity_id,
                duplicate_submission: true,
            });
        }
    }
    // A new lead: point every key at it. A concurrent copy of the same submission may win a key
    // first; then this one is the repeat.
    let mine = Alias {
        entity_id: own_id.clone(),
        at: envelope.occurred_at,
    };
    for key in &keys {
        let previous = store.load_alias(EntityKind::Lead, key).await?;
        if previous.as_ref().is_some_and(|p| p.entity_id == own_id) {
            continue;
        }
        // Another submission took the key since the first look: this one is its repeat. Only
        // an alias from outside the window is replaced.
        if let Some(earlier) = previous.as_ref().filter(|p| within(p)) {
            return Ok(Resolved {
                id: earlier.entity_id.clone(),
                duplicate_submission: true,
            });
        }
        if !store
            .save_alias(EntityKind::Lead, key, &mine, previous.as_ref())
            .await?
            && let Some(winner) = store.load_alias(EntityKind::Lead, key).await?
            && within(&winner)
        {
            return Ok(Resolved {
                id: winner.entity_id,
                duplicate_submission: true,
            });
        }
    }
    Ok(Resolved {
        id: own_id,
        duplicate_submission: false,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;
    use crate::adapters::sqlite::SqliteStore;
    use crate::contract::{
        EntityRef, EventData, EventId, IdempotencyKey, LeadDetails, Origin, Refs, SCHEMA_V1,
        SourceEventId, SourceName, Timestamp, Trace,
    };
    use crate::ledger::Effect;

    /// SQLite, watched: counts the entity reads that reach it, and (when `hide_alias` is set)
    /// hides every alias from the next lookup only, the interleaving where another submission
    /// takes the key between this one's first look and its write.
    struct Watched {
        inner: SqliteStore,
        hide_alias: AtomicBool,
        reads: AtomicUsize,
    }

    impl Watched {
        fn open() -> Self {
            let dir =
                std::env::temp_dir().join(format!("plumbline-identify-{}", ulid::Ulid::new()));
            Self {
                inner: SqliteStore::open(&dir, 8).expect("open"),
                hide_alias: AtomicBool::new(false),
                reads: AtomicUsize::new(0),
            }
        }
    }

    impl LedgerStore for Watched {
        async fn load_entity(
            &self,
            kind: EntityKind,
            id: &str,
        ) -> Result<Option<Entity>, StoreError> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.load_entity(kind, id).await
        }
        async fn save_entity(&self, entity: &Entity) -> Result<Saved, StoreError> {
            self.inner.save_entity(entity).await
        }
        async fn load_alias(
            &self,
            kind: EntityKind,
            key: &str,
        ) -> Result<Option<Alias>, StoreError> {
            if self.hide_alias.swap(false, Ordering::SeqCst) {
                return Ok(None);
            }
            self.inner.load_alias(kind, key).await
        }
        async fn save_alias(
            &self,
            kind: EntityKind,
            key: &str,
            alias: &Alias,
            previous: Option<&Alias>,
        ) -> Result<bool, StoreError> {
            self.inner.save_alias(kind, key, alias, previous).await
        }
    }

    /// The tests' one instant.
    fn now() -> Timestamp {
        Timestamp::from_unix(1_763_900_100).expect("in range")
    }

    /// `apply` with default ownership and settings, holding nothing.
    async fn apply_to(
        store: &Watched,
        envelope: &Envelope,
        known: &mut Known,
    ) -> Result<Applied, StoreError> {
        apply_holding(store, envelope, None, known)
            .await
            .map(|application| application.applied)
    }

    async fn apply_holding(
        store: &Watched,
        envelope: &Envelope,
        hold_until: Option<Timestamp>,
        known: &mut Known,
    ) -> Result<Application, StoreError> {
        apply(
            store,
            envelope,
            &Ownership::default(),
            &LedgerSettings::default(),
            now(),
            hold_until,
            known,
        )
        .await
    }

    /// `lead_a` as stored, read past the watch (no read counted).
    async fn stored_lead(store: &Watched) -> Entity {
        store
            .inner
            .load_entity(EntityKind::Lead, "lead_a")
            .await
            .expect("load")
            .expect("entity")
    }

    fn lead(id: &str, at: i64) -> Envelope {
        let t = Timestamp::from_unix(1_763_900_000 + at).expect("in range");
        let source = SourceName::try_from("site").expect("name");
        let event = SourceEventId::try_from(format!("msg_{id}")).expect("id");
        Envelope {
            schema: SCHEMA_V1.into(),
            id: EventId::generate(t),
            idempotency_key: IdempotencyKey::for_event(&source, &event),
            source,
            source_event_id: event,
            event_type: "lead.submitted".try_into().expect("type"),
            source_type: "lead.submitted".into(),
            occurred_at: t,
            received_at: t,
            entity: EntityRef {
                kind: EntityKind::Lead,
                id: id.into(),
                refs: Refs::default(),
            },
            data: EventData {
                customer: Some(crate::contract::Customer {
                    email: Some("jane@example.com".into()),
                    ..Default::default()
                }),
                lead: Some(LeadDetails {
                    form_id: Some("contact".into()),
                    ..Default::default()
                }),
                ..EventData::default()
            },
            trace: Trace {
                request_id: None,
                origin: Origin::Webhook,
            },
        }
    }

    /// A lead with no contact details: no identity key ties it to another, so it is its own.
    fn lone_lead(id: &str, at: i64) -> Envelope {
        let mut envelope = lead(id, at);
        envelope.data.customer = None;
        envelope
    }

    /// Found by the fault-injection scenario (seed 64023): a second submission whose first
    /// lookup missed the first one's alias overwrote it and became a second lead.
    #[tokio::test]
    async fn a_repeat_that_misses_the_first_alias_is_still_a_repeat() {
        let store = Watched::open();
        let first = apply_to(&store, &lead("lead_a", 0), &mut Known::new())
            .await
            .expect("first");
        assert_eq!(first.effect, Effect::Applied);
        store.hide_alias.store(true, Ordering::SeqCst);
        let again = apply_to(&store, &lead("lead_b", 5), &mut Known::new())
            .await
            .expect("again");
        assert_eq!(again.effect, Effect::DuplicateSubmission);
        assert_eq!(again.entity.id, "lead_a");
    }

    /// A copy read ahead of the batch can be stale (another worker wrote since): its versioned
    /// write is refused with the stored entity, and nothing of the other write is lost.
    #[tokio::test]
    async fn a_stale_read_ahead_copy_gives_way_to_the_stored_one() {
        let store = Watched::open();
        let first = lone_lead("lead_a", 0);
        apply_to(&store, &first, &mut Known::new())
            .await
            .expect("first");

        // Read ahead before the first write: "no such entity".
        let mut known = Known::from([((EntityKind::Lead, "lead_a".to_owned()), None)]);
        let second = lone_lead("lead_a", 10);
        let applied = apply_to(&store, &second, &mut known).await.expect("second");
        assert_eq!(
            applied.entity.version, 2,
            "written over the stored version 1"
        );
        let stored = stored_lead(&store).await;
        let events: Vec<&str> = stored.history.iter().map(|h| h.event_id.as_str()).collect();
        assert_eq!(events, [first.id.as_str(), second.id.as_str()]);
        assert_eq!(stored.version, 2);
        assert_eq!(
            known.get(&(EntityKind::Lead, "lead_a".to_owned())),
            Some(&Some(stored)),
            "the written entity is kept for the batch's next event"
        );
    }

    /// Nothing read ahead: the event is written as if its entity were new. A new one is written
    /// at once; for an existing one the refused write brings the stored entity back. Neither
    /// reads it first, and a repeat of an event already applied changes nothing.
    #[tokio::test]
    async fn an_entity_nobody_read_ahead_is_written_without_reading_it_first() {
        let store = Watched::open();
        let first = lone_lead("lead_a", 0);
        let second = lone_lead("lead_a", 10);
        let mut effects = Vec::new();
        for (envelope, version) in [(&first, 1), (&second, 2), (&second, 2)] {
            let applied = apply_to(&store, envelope, &mut Known::new())
                .await
                .expect("apply");
            assert_eq!(applied.entity.version, version);
            effects.push(applied.effect);
        }
        assert_eq!(effects[0], Effect::Applied);
        assert_eq!(
            effects[2], effects[1],
            "the repeat reports what the event did"
        );
        assert_eq!(
            store.reads.load(Ordering::SeqCst),
            0,
            "no entity was read first"
        );
        let stored = stored_lead(&store).await;
        let events: Vec<&str> = stored.history.iter().map(|h| h.event_id.as_str()).collect();
        assert_eq!(events, [first.id.as_str(), second.id.as_str()]);
        assert_eq!(stored.version, 2);
    }

    /// The first delivery attempt's lease rides on the write that applies the event: the
    /// application that writes it has taken it, a repeat finds it held by the earlier one (the
    /// version check lets only one of two concurrent applications write), and a repeated
    /// submission, which is never delivered, holds nothing. Only the repeat of an event is
    /// reported as one.
    #[tokio::test]
    async fn the_write_that_applies_an_event_holds_its_delivery() {
        let store = Watched::open();
        let until = now().plus_secs(60);
        let first = lead("lead_a", 0);
        let application = apply_holding(&store, &first, Some(until), &mut Known::new())
            .await
            .expect("first");
        assert_eq!(application.hold, Hold::Taken(until));
        assert!(!application.repeated);
        let stored = stored_lead(&store).await;
        assert_eq!(stored.history[0].held_until, Some(until), "written with it");

        let later = until.plus_secs(5);
        let application = apply_holding(&store, &first, Some(later), &mut Known::new())
            .await
            .expect("repeat");
        assert_eq!(
            application.hold,
            Hold::Earlier(until),
            "the first write's hold stands"
        );
        assert_eq!(
            application.applied.entity.version, 1,
            "nothing written again"
        );
        assert!(application.repeated, "found in the history");

        let repeat = lead("lead_b", 5);
        let application = apply_holding(&store, &repeat, Some(later), &mut Known::new())
            .await
            .expect("repeated submission");
        assert_eq!(application.applied.effect, Effect::DuplicateSubmission);
        assert_eq!(application.hold, Hold::Nobody);
        assert!(!application.repeated, "a new event, merged");

        let other = lone_lead("lead_c", 10);
        let application = apply_holding(&store, &other, None, &mut Known::new())
            .await
            .expect("no targets");
        assert_eq!(application.applied.effect, Effect::Applied);
        assert_eq!(
            application.hold,
            Hold::Nobody,
            "nothing asked, nothing held"
        );
        let application = apply_holding(&store, &other, None, &mut Known::new())
            .await
            .expect("no targets, again");
        assert_eq!(application.hold, Hold::Nobody);
        assert!(
            application.repeated,
            "a repeat with nothing held is still one"
        );
    }

    /// Only running holds are kept: the next write of the entity drops the ones that ran out.
    #[tokio::test]
    async fn a_write_drops_the_holds_that_ran_out() {
        let store = Watched::open();
        let first = lone_lead("lead_a", 0);
        let second = lone_lead("lead_a", 10);
        let ran_out = now().plus_secs(-1);
        apply_holding(&store, &first, Some(ran_out), &mut Known::new())
            .await
            .expect("first");
        let running = now().plus_secs(60);
        apply_holding(&store, &second, Some(running), &mut Known::new())
            .await
            .expect("second");
        let holds: Vec<_> = stored_lead(&store)
            .await
            .history
            .iter()
            .map(|h| h.held_until)
            .collect();
        assert_eq!(holds, [None, Some(running)]);
    }
}
