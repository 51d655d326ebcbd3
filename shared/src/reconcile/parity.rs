//! Payment ↔ order parity, as pure decisions: what order state a payment's state implies, and
//! whether a mismatch can be corrected (the ownership rules say the payment is right) or only
//! reported.

use crate::contract::{
    EntityKind, EntityRef, EventData, EventType, Refs, SourceEventId, SourceName, Timestamp,
};
use crate::ledger::machine::rank;
use crate::ledger::{Effect, Entity, Ownership};
use crate::sources::{Normalized, NormalizedEvent, PayloadHash, SourceEvent};

/// What a pair of payment and order needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parity {
    InStep,
    /// The order should be in `state`; a corrective event from the payment's source moves it.
    Correct {
        state: &'static str,
    },
    /// They disagree and the rules do not let plumbline choose: reported for a person.
    Conflict(String),
}

/// The order state a payment's state implies, if any.
fn implied_order_state(payment_state: &str) -> Option<&'static str> {
    match payment_state {
        "succeeded" | "disputed" | "dispute_won" => Some("paid"),
        "partially_refunded" => Some("partially_refunded"),
        "refunded" | "dispute_lost" => Some("refunded"),
        _ => None,
    }
}

/// The source whose event last changed the entity's state or fields.
pub fn last_writer(entity: &Entity) -> Option<&str> {
    entity
        .history
        .iter()
        .rev()
        .find(|h| h.effect == Effect::Applied)
        .map(|h| h.source.as_str())
}

/// Compares a payment with its order (`None`: the ledger has no such order).
pub fn payment_vs_order(payment: &Entity, order: Option<&Entity>, ownership: &Ownership) -> Parity {
    let Some(payment_state) = payment.state.as_deref() else {
        return Parity::InStep;
    };
    let order_state = order.and_then(|o| o.state.as_deref());
    let order_rank = order_state.and_then(|s| rank(EntityKind::Order, s));
    let Some(expected) = implied_order_state(payment_state) else {
        // The payment has not succeeded: an order already marked paid is ahead of its money.
        return match order_state {
            Some(s @ ("paid" | "fulfilled")) => Parity::Conflict(format!(
                "order {s} but payment {payment_state}; order states never move back"
            )),
            _ => Parity::InStep,
        };
    };
    if order_state == Some("cancelled") && expected != "refunded" {
        return Parity::Conflict(format!(
            "order cancelled but payment {payment_state}: refund it or reopen the order"
        ));
    }
    let expected_rank = rank(EntityKind::Order, expected).unwrap_or(0);
    if order_rank.is_some_and(|r| r >= expected_rank) {
        return Parity::InStep;
    }
    let payment_source = last_writer(payment).unwrap_or_default();
    match ownership.owner(EntityKind::Order, "status") {
        Some(owner) if owner != payment_source => Parity::Conflict(format!(
            "order {} but payment {payment_state}; order.status is owned by {owner}",
            order_state.unwrap_or("missing")
        )),
        _ => Parity::Correct { state: expected },
    }
}

/// The corrective event that moves `order_id` to `state`, as if the payment's source had sent
/// it. Its id is derived from the order and the state, so a second run claims the same event
/// and changes nothing.
pub fn corrective_event(
    payment: &Entity,
    order_id: &str,
    state: &'static str,
) -> Option<(SourceName, SourceEvent)> {
    let source = SourceName::try_from(last_writer(payment)?).ok()?;
    let source_event_id =
        SourceEventId::try_from(format!("plumbline-parity:{order_id}:{state}")).ok()?;
    let event_type = EventType::try_from(format!("order.{state}")).ok()?;
    let occurred_at: Timestamp = payment.state_at?;
    let data = EventData {
        status: Some(state.to_owned()),
        ..EventData::default()
    };
    let entity = EntityRef {
        kind: EntityKind::Order,
        id: order_id.to_owned(),
        refs: Refs {
            payment_id: Some(payment.id.clone()),
            ..Refs::default()
        },
    };
    let payload = serde_json::json!({
        "correction": "payment_order_parity",
        "payment_id": payment.id,
        "payment_state": payment.state,
        "order_id": order_id,
        "order_state": state,
    });
    let payload_hash = PayloadHash::of(payload.to_string().as_bytes());
    Some((
        source,
        SourceEvent {
            source_event_id,
            source_type: "plumbline.parity".to_owned(),
            payload_hash,
            payload: None,
            header_time: None,
            outcome: Normalized::Event(Box::new(NormalizedEvent {
                event_type,
                occurred_at,
                entity,
                data,
            })),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::HistoryEntry;

    fn entity(kind: EntityKind, id: &str, state: Option<&str>, source: &str) -> Entity {
        let mut e = Entity::new(kind, id);
        e.state = state.map(Into::into);
        e.state_at = Timestamp::from_unix(1_700_000_000);
        e.history.push(HistoryEntry {
            event_id: "01JD0000000000000000000000".into(),
            source_event_id: Some("evt_1".into()),
            event_type: format!("{}.x", kind.as_str()),
            source: source.into(),
            occurred_at: Timestamp::from_unix(1_700_000_000).expect("in range"),
            effect: Effect::Applied,
            ownership_conflicts: Vec::new(),
            held_until: None,
        });
        e
    }

    fn pay(state: &str) -> Entity {
        entity(EntityKind::Payment, "pi_1", Some(state), "stripe")
    }

    fn order(state: &str) -> Entity {
        entity(EntityKind::Order, "ord_1", Some(state), "site")
    }

    #[test]
    fn a_succeeded_payment_pays_a_created_or_missing_order() {
        let own = Ownership::default();
        let want = Parity::Correct { state: "paid" };
        assert_eq!(
            payment_vs_order(&pay("succeeded"), Some(&order("created")), &own),
            want
        );
        assert_eq!(payment_vs_order(&pay("succeeded"), None, &own), want);
        assert_eq!(
            payment_vs_order(&pay("succeeded"), Some(&order("paid")), &own),
            Parity::InStep
        );
        assert_eq!(
            payment_vs_order(&pay("succeeded"), Some(&order("fulfilled")), &own),
            Parity::InStep
        );
    }

    #[test]
    fn refunds_and_chargebacks_reach_the_order() {
        let own = Ownership::default();
        for (payment, order_state, want) in [
            ("refunded", "paid", Some("refunded")),
            ("dispute_lost", "fulfilled", Some("refunded")),
            ("partially_refunded", "paid", Some("partially_refunded")),
            ("refunded", "partially_refunded", Some("refunded")),
            ("partially_refunded", "refunded", None),
            ("refunded", "cancelled", Some("refunded")),
        ] {
            let got = payment_vs_order(&pay(payment), Some(&order(order_state)), &own);
            let want = want.map_or(Parity::InStep, |state| Parity::Correct { state });
            assert_eq!(got, want, "{payment} vs {order_state}");
        }
    }

    #[test]
    fn a_paid_order_without_money_is_a_conflict() {
        let own = Ownership::default();
        for payment in ["failed", "canceled", "processing"] {
            assert!(matches!(
                payment_vs_order(&pay(payment), Some(&order("paid")), &own),
                Parity::Conflict(_)
            ));
        }
        assert!(matches!(
            payment_vs_order(&pay("succeeded"), Some(&order("cancelled")), &own),
            Parity::Conflict(_)
        ));
        assert_eq!(
            payment_vs_order(&pay("failed"), Some(&order("created")), &own),
            Parity::InStep
        );
    }

    #[test]
    fn an_order_status_owned_elsewhere_is_reported_not_corrected() {
        let own = Ownership([("order.status".to_owned(), "erp".to_owned())].into());
        assert!(matches!(
            payment_vs_order(&pay("succeeded"), Some(&order("created")), &own),
            Parity::Conflict(reason) if reason.contains("owned by erp")
        ));
        let own = Ownership([("order.status".to_owned(), "stripe".to_owned())].into());
        assert_eq!(
            payment_vs_order(&pay("succeeded"), Some(&order("created")), &own),
            Parity::Correct { state: "paid" }
        );
    }

    #[test]
    fn the_corrective_event_is_the_same_on_every_run() {
        let a = corrective_event(&pay("succeeded"), "ord_1", "paid").expect("event");
        let b = corrective_event(&pay("succeeded"), "ord_1", "paid").expect("event");
        assert_eq!(a.0.as_str(), "stripe");
        assert_eq!(a.1.source_event_id, b.1.source_event_id);
        assert_eq!(a.1.payload_hash, b.1.payload_hash);
        let Normalized::Event(n) = a.1.outcome else {
            panic!("normalized")
        };
        assert_eq!(n.event_type.as_str(), "order.paid");
        assert_eq!(n.entity.id, "ord_1");
        assert_eq!(n.data.status.as_deref(), Some("paid"));
    }
}
