//! Which targets an event goes to: routes select by canonical type glob and optional field
//! equality filters.

use std::collections::BTreeSet;

use serde_json::Value;

use super::mapping::lookup;
use crate::config::Route;

/// `*` matches one segment, or everything when it is the whole pattern or the last segment
/// (`payment.*` matches `payment.refund_created`).
pub fn type_matches(pattern: &str, event_type: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let mut p = pattern.split('.');
    let mut t = event_type.split('.');
    loop {
        match (p.next(), t.next()) {
            (None, None) => return true,
            (Some("*"), Some(_)) if p.clone().next().is_none() => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

fn filter_matches(route: &Route, envelope: &Value) -> bool {
    route
        .filter
        .iter()
        .all(|(path, expected)| match lookup(envelope, path) {
            Some(Value::String(s)) => s == expected,
            Some(other) => *other == serde_json::from_str::<Value>(expected).unwrap_or(Value::Null),
            None => false,
        })
}

/// The targets `routes` select for an event, in name order, each once.
pub fn targets_for(routes: &[Route], event_type: &str, envelope: &Value) -> BTreeSet<String> {
    routes
        .iter()
        .filter(|r| {
            r.events.iter().any(|p| type_matches(p, event_type)) && filter_matches(r, envelope)
        })
        .flat_map(|r| r.targets.iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn globs() {
        assert!(type_matches("payment.*", "payment.succeeded"));
        assert!(type_matches("payment.*", "payment.refund_created"));
        assert!(type_matches("*", "lead.submitted"));
        assert!(type_matches("*.succeeded", "payment.succeeded"));
        assert!(type_matches("payment.succeeded", "payment.succeeded"));
        assert!(!type_matches("payment.*", "order.paid"));
        assert!(!type_matches("payment.succeeded", "payment.failed"));
        assert!(!type_matches("payment", "payment.failed"));
    }

    #[test]
    fn routes_union_their_targets_and_apply_filters() {
        let routes = vec![
            Route {
                events: vec!["payment.*".into()],
                targets: vec!["erp".into()],
                filter: std::collections::BTreeMap::default(),
            },
            Route {
                events: vec!["payment.succeeded".into(), "lead.*".into()],
                targets: vec!["crm".into(), "erp".into()],
                filter: [("data.amount.currency".to_owned(), "USD".to_owned())].into(),
            },
        ];
        let usd = json!({"data": {"amount": {"currency": "USD"}}});
        let eur = json!({"data": {"amount": {"currency": "EUR"}}});
        assert_eq!(
            targets_for(&routes, "payment.succeeded", &usd)
                .into_iter()
                .collect::<Vec<_>>(),
            ["crm", "erp"]
        );
        assert_eq!(
            targets_for(&routes, "payment.succeeded", &eur)
                .into_iter()
                .collect::<Vec<_>>(),
            ["erp"]
        );
        assert!(targets_for(&routes, "customer.updated", &usd).is_empty());
    }
}
