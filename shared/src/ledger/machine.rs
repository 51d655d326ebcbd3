//! State precedence for payments, orders and subscriptions (tables in docs/ledger.md).
//!
//! Each state has a rank. An event's state replaces the current one when its (rank, occurrence
//! time) is greater: a higher rank always wins, and within a rank the later occurrence wins. The
//! final state is therefore the greatest of all the events seen, whatever order they arrived
//! in, so late and out-of-order webhooks can never regress an entity.

use crate::contract::{EntityKind, Timestamp};

/// Payment ranks. `failed` and `canceled` share a rank with `authorized`, so a later attempt's
/// authorization replaces an earlier failure and vice versa; any success outranks them all.
pub const PAYMENT_RANKS: [(&str, u8); 12] = [
    ("pending", 0),
    ("requires_action", 1),
    ("processing", 2),
    ("authorized", 3),
    ("failed", 3),
    ("canceled", 3),
    ("succeeded", 4),
    ("partially_refunded", 5),
    ("disputed", 5),
    ("refunded", 6),
    ("dispute_won", 6),
    ("dispute_lost", 7),
];

pub const ORDER_RANKS: [(&str, u8); 6] = [
    ("created", 0),
    ("paid", 1),
    ("fulfilled", 2),
    ("cancelled", 2),
    ("partially_refunded", 3),
    ("refunded", 4),
];

/// Subscriptions move back and forth (active, past_due, paused): the latest occurrence wins,
/// except that `canceled` is final.
fn subscription_rank(state: &str) -> u8 {
    u8::from(state == "canceled")
}

/// The rank of `state` for `kind`; `None` for a state the kind does not have.
pub fn rank(kind: EntityKind, state: &str) -> Option<u8> {
    let lookup = |table: &[(&str, u8)]| table.iter().find(|(s, _)| *s == state).map(|(_, r)| *r);
    match kind {
        EntityKind::Payment => lookup(&PAYMENT_RANKS),
        EntityKind::Order => lookup(&ORDER_RANKS),
        EntityKind::Subscription => Some(subscription_rank(state)),
        EntityKind::Customer | EntityKind::Lead => Some(0),
    }
}

/// Whether an entity in `from` (set by an event that occurred at `from_at`) moves to `to` on an
/// event that occurred at `to_at`. Unknown states never replace known ones.
pub fn advances(
    kind: EntityKind,
    from: Option<(&str, Timestamp)>,
    to: &str,
    to_at: Timestamp,
) -> bool {
    let Some(to_rank) = rank(kind, to) else {
        return false;
    };
    let Some((from, from_at)) = from else {
        return true;
    };
    let Some(from_rank) = rank(kind, from) else {
        return true;
    };
    // The state name breaks exact ties, so the result never depends on arrival order.
    (to_rank, to_at, to) > (from_rank, from_at, from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_unix(1_700_000_000 + s).expect("in range")
    }

    /// Applies `(state, at)` events in the given order, as the ledger does.
    fn replay(kind: EntityKind, events: &[(&str, i64)]) -> Option<String> {
        let mut current: Option<(String, Timestamp)> = None;
        for (state, at) in events {
            let from = current.as_ref().map(|(s, a)| (s.as_str(), *a));
            if advances(kind, from, state, t(*at)) {
                current = Some(((*state).to_owned(), t(*at)));
            }
        }
        current.map(|(s, _)| s)
    }

    fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
        if items.len() <= 1 {
            return vec![items.to_vec()];
        }
        let mut out = Vec::new();
        for i in 0..items.len() {
            let mut rest = items.to_vec();
            let head = rest.remove(i);
            for mut p in permutations(&rest) {
                p.insert(0, head.clone());
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn payments_never_regress() {
        assert_eq!(
            replay(EntityKind::Payment, &[("succeeded", 2), ("processing", 1)]).as_deref(),
            Some("succeeded")
        );
        assert_eq!(
            replay(EntityKind::Payment, &[("refunded", 5), ("succeeded", 2)]).as_deref(),
            Some("refunded")
        );
        assert_eq!(
            replay(
                EntityKind::Payment,
                &[("dispute_lost", 9), ("disputed", 8), ("succeeded", 2)]
            )
            .as_deref(),
            Some("dispute_lost")
        );
    }

    #[test]
    fn a_failed_attempt_can_be_followed_by_a_later_attempt() {
        assert_eq!(
            replay(EntityKind::Payment, &[("failed", 1), ("succeeded", 2)]).as_deref(),
            Some("succeeded")
        );
        assert_eq!(
            replay(EntityKind::Payment, &[("failed", 3), ("processing", 1)]).as_deref(),
            Some("failed")
        );
        assert_eq!(
            replay(EntityKind::Payment, &[("succeeded", 2), ("failed", 3)]).as_deref(),
            Some("succeeded")
        );
        assert_eq!(
            replay(EntityKind::Payment, &[("failed", 1), ("authorized", 2)]).as_deref(),
            Some("authorized")
        );
        assert_eq!(
            replay(EntityKind::Payment, &[("authorized", 2), ("failed", 1)]).as_deref(),
            Some("authorized")
        );
    }

    #[test]
    fn unknown_states_never_replace_known_ones() {
        assert!(!advances(
            EntityKind::Payment,
            Some(("succeeded", t(1))),
            "teleported",
            t(2)
        ));
        assert!(advances(
            EntityKind::Subscription,
            Some(("past_due", t(1))),
            "active",
            t(2)
        ));
        assert!(!advances(
            EntityKind::Subscription,
            Some(("canceled", t(1))),
            "active",
            t(2)
        ));
    }

    #[test]
    fn every_order_of_a_realistic_history_ends_in_the_same_state() {
        let histories: [(&[(&str, i64)], &str); 4] = [
            (
                &[
                    ("requires_action", 1),
                    ("processing", 2),
                    ("succeeded", 3),
                    ("partially_refunded", 4),
                    ("refunded", 5),
                ],
                "refunded",
            ),
            (
                &[
                    ("processing", 1),
                    ("failed", 2),
                    ("processing", 3),
                    ("succeeded", 4),
                ],
                "succeeded",
            ),
            (
                &[
                    ("authorized", 1),
                    ("canceled", 2),
                    ("succeeded", 3),
                    ("disputed", 4),
                    ("dispute_won", 5),
                ],
                "dispute_won",
            ),
            (
                &[("pending", 0), ("processing", 1), ("failed", 2)],
                "failed",
            ),
        ];
        for (events, expected) in histories {
            for order in permutations(events) {
                assert_eq!(
                    replay(EntityKind::Payment, &order).as_deref(),
                    Some(expected),
                    "{order:?}"
                );
            }
        }
        let order_events = [
            ("created", 1),
            ("paid", 2),
            ("fulfilled", 3),
            ("refunded", 4),
        ];
        for order in permutations(&order_events) {
            assert_eq!(
                replay(EntityKind::Order, &order).as_deref(),
                Some("refunded"),
                "{order:?}"
            );
        }
    }

    #[test]
    fn the_same_state_again_only_moves_its_time_forward() {
        assert!(advances(
            EntityKind::Payment,
            Some(("succeeded", t(1))),
            "succeeded",
            t(2)
        ));
        assert!(!advances(
            EntityKind::Payment,
            Some(("succeeded", t(2))),
            "succeeded",
            t(1)
        ));
    }
}
