//! The demo configuration and its secrets, the bundled sample payloads, and the resolver that
//! lets environment variables override the demo secrets.

use std::collections::BTreeMap;

use plumbline::config::{EnvSecrets, MapSecrets, SecretRef, SecretResolver};
use secrecy::SecretString;

pub const CONFIG: &str = include_str!("../demo.toml");

/// Public demo values: they protect nothing and are printed at start-up.
pub const SECRETS: [(&str, &str); 6] = [
    (
        "PLUMBLINE_DEMO_STRIPE_SECRET",
        "whsec_plumbline_demo_stripe",
    ),
    (
        "PLUMBLINE_DEMO_SITE_SECRET",
        "whsec_cGx1bWJsaW5lLWRlbW8tc2l0ZS1zZWNyZXQ=",
    ),
    ("PLUMBLINE_DEMO_SHOPIFY_SECRET", "shpss_plumbline_demo"),
    (
        "PLUMBLINE_DEMO_ADYEN_HMAC_KEY",
        "706C756D626C696E652D64656D6F2D6164792D686D61632D6B65792D3332622E",
    ),
    ("PLUMBLINE_DEMO_PADDLE_SECRET", "pdl_ntfset_plumbline_demo"),
    (
        "PLUMBLINE_DEMO_ERP_SIGNING_SECRET",
        "whsec_cGx1bWJsaW5lLXdhbGt0aHJvdWdo",
    ),
];

/// The environment first, then values fetched from AWS, then the demo values.
#[derive(Debug, Clone)]
pub struct Secrets {
    demo: Option<MapSecrets>,
    remote: MapSecrets,
}

impl Secrets {
    /// With `use_demo`, unset `PLUMBLINE_DEMO_*` variables fall back to the demo values; other
    /// references always come from the environment (or from AWS, after [`Self::fetching`]).
    pub fn new(use_demo: bool) -> Self {
        let demo = use_demo.then(|| {
            MapSecrets(
                SECRETS
                    .iter()
                    .map(|(k, v)| (format!("env:{k}"), (*v).to_owned()))
                    .collect(),
            )
        });
        Self {
            demo,
            remote: MapSecrets::default(),
        }
    }

    /// Adds the values of the `ssm:` and `secretsmanager:` references among `refs` (keyed as
    /// the configuration names them), read from AWS (the SDK's own environment) as the
    /// functions read them at cold start, so a command run with the deployment's configuration
    /// uses the deployment's secrets. A command fetches only the references it uses, so it
    /// needs no permission on the others; with `env:` references alone it reaches no AWS API.
    pub async fn fetching(mut self, refs: Vec<(String, SecretRef)>) -> anyhow::Result<Self> {
        if refs.iter().all(|(_, r)| matches!(r, SecretRef::Env(_))) {
            return Ok(self);
        }
        let aws = plumbline::adapters::aws_sdk::load_config().await?;
        self.remote = plumbline::adapters::aws_secrets::fetch(&refs, &aws)
            .await
            .map_err(|e| anyhow::anyhow!("reading the configuration's secrets from AWS: {e}"))?;
        Ok(self)
    }
}

impl SecretResolver for Secrets {
    fn resolve(&self, reference: &SecretRef) -> Result<SecretString, String> {
        if !matches!(reference, SecretRef::Env(_)) {
            return self.remote.resolve(reference);
        }
        EnvSecrets
            .resolve(reference)
            .or_else(|env_err| match &self.demo {
                Some(demo) => demo.resolve(reference).map_err(|_| env_err),
                None => Err(env_err),
            })
    }
}

/// Bundled samples: (source kind, sample name) → the provider's payload.
#[allow(clippy::too_many_lines)] // one line per sample
pub fn samples() -> BTreeMap<(&'static str, &'static str), &'static [u8]> {
    macro_rules! sample {
        ($kind:literal, $name:literal, $file:literal) => {
            (
                ($kind, $name),
                include_bytes!(concat!("../../tests/fixtures/", $file)).as_slice(),
            )
        };
    }
    BTreeMap::from([
        sample!(
            "stripe",
            "payment_intent.succeeded",
            "stripe/payment_intent.succeeded.json"
        ),
        sample!(
            "stripe",
            "payment_intent.payment_failed",
            "stripe/payment_intent.payment_failed.json"
        ),
        sample!(
            "stripe",
            "payment_intent.canceled",
            "stripe/payment_intent.canceled.json"
        ),
        sample!(
            "stripe",
            "payment_intent.processing",
            "stripe/payment_intent.processing.json"
        ),
        sample!(
            "stripe",
            "payment_intent.requires_action",
            "stripe/payment_intent.requires_action.json"
        ),
        sample!(
            "stripe",
            "charge.refunded",
            "stripe/charge.refunded.partial.json"
        ),
        sample!(
            "stripe",
            "charge.refunded.full",
            "stripe/charge.refunded.full.json"
        ),
        sample!("stripe", "refund.created", "stripe/refund.created.json"),
        sample!(
            "stripe",
            "charge.dispute.created",
            "stripe/charge.dispute.created.json"
        ),
        sample!(
            "stripe",
            "charge.dispute.closed",
            "stripe/charge.dispute.closed.won.json"
        ),
        sample!(
            "stripe",
            "checkout.session.completed",
            "stripe/checkout.session.completed.json"
        ),
        sample!("stripe", "customer.created", "stripe/customer.created.json"),
        sample!("stripe", "customer.updated", "stripe/customer.updated.json"),
        sample!(
            "standard-webhooks",
            "lead.submitted",
            "site/lead.submitted.json"
        ),
        sample!(
            "standard-webhooks",
            "order.created",
            "site/order.created.json"
        ),
        sample!(
            "standard-webhooks",
            "order.cancelled",
            "site/order.cancelled.json"
        ),
        sample!("shopify", "orders/create", "shopify/orders.create.json"),
        sample!("shopify", "orders/paid", "shopify/orders.paid.json"),
        sample!(
            "shopify",
            "orders/cancelled",
            "shopify/orders.cancelled.json"
        ),
        sample!("shopify", "refunds/create", "shopify/refunds.create.json"),
        sample!("adyen", "notification", "adyen/batch.json"),
        sample!(
            "paddle",
            "transaction.completed",
            "paddle/transaction.completed.json"
        ),
        sample!(
            "paddle",
            "transaction.payment_failed",
            "paddle/transaction.payment_failed.json"
        ),
        sample!(
            "paddle",
            "adjustment.created",
            "paddle/adjustment.created.json"
        ),
        sample!(
            "paddle",
            "subscription.canceled",
            "paddle/subscription.canceled.json"
        ),
    ])
}
