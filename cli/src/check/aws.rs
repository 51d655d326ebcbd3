//! `config check --aws`: what each function would make of the secrets it fetches at cold start,
//! and whether the table and queues the environment names are the ones the functions need.

use plumbline::adapters::dynamodb::DynamoStore;
use plumbline::config::{
    ChainSecrets, Config, ConfigError, ConfigProblem, EnvSecrets, MapSecrets, SecretPurpose,
    SecretRef,
};

/// One function's start-up, as `--aws` found it.
pub(super) struct StartUp {
    pub(super) function: &'static str,
    /// How many of its references are fetched from AWS (each once).
    pub(super) fetched: usize,
    pub(super) problems: Vec<ConfigProblem>,
}

/// One resource of the deployment the environment names, as `--aws` found it.
pub(super) struct Resource {
    /// What it is, as the report names it: `table NAME`, `queue URL`.
    pub(super) what: String,
    /// What it is when it has no problem.
    pub(super) fits: &'static str,
    pub(super) problems: Vec<ConfigProblem>,
}

/// Every function's start-up, the resources, and what this shell could not check.
pub(super) struct Remote {
    pub(super) functions: Vec<StartUp>,
    pub(super) resources: Vec<Resource>,
    pub(super) unchecked: Vec<ConfigProblem>,
}

impl Remote {
    /// Fetches each function's remote references, as its cold start does (its own only, with
    /// this shell's AWS identity), and builds from them what it builds: the ingress's
    /// verifiers, the delivery's targets, reconciliation's provider APIs and CRM targets. An
    /// `env:` reference is read from a function's own environment, which this shell does not
    /// have; one that is not set here is listed as not checked rather than as a problem. Then
    /// the table of `PLUMBLINE_TABLE` and the queues of `PLUMBLINE_QUEUE_URL` and
    /// `PLUMBLINE_DLQ_URL`, where they are set.
    pub(super) async fn check(config: &Config) -> anyhow::Result<Self> {
        let aws = plumbline::adapters::aws_sdk::load_config().await?;
        let unset = |reference: &SecretRef| match reference {
            SecretRef::Env(name) => std::env::var_os(name).is_none(),
            _ => false,
        };
        let unchecked_keys: Vec<(String, SecretRef)> = config
            .secret_refs()
            .into_iter()
            .filter(|(_, reference)| unset(reference))
            .collect();
        let mut functions = Vec::new();
        for (function, purpose) in [
            ("ingress", SecretPurpose::Verify),
            ("delivery", SecretPurpose::Deliver),
            ("reconcile", SecretPurpose::Reconcile),
        ] {
            let refs = config.secret_refs_for(purpose);
            let fetched = refs
                .iter()
                .filter(|(_, r)| !matches!(r, SecretRef::Env(_)))
                .map(|(_, r)| r.to_string())
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            let problems = match plumbline::adapters::aws_secrets::fetch(&refs, &aws).await {
                Ok(values) => build(config, purpose, &ChainSecrets(EnvSecrets, values)),
                Err(error) => error.problems,
            };
            functions.push(StartUp {
                function,
                fetched,
                problems: problems
                    .into_iter()
                    .filter(|p| !unchecked_keys.iter().any(|(key, _)| *key == p.key))
                    .collect(),
            });
        }
        let mut unchecked: Vec<ConfigProblem> = unchecked_keys
            .into_iter()
            .map(|(key, reference)| ConfigProblem {
                key,
                reason: format!(
                    "{reference} is not set in this shell: read from the function's environment, not checked"
                ),
                line: None,
            })
            .collect();
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let not_set = |name: &str, what: &str| ConfigProblem {
            key: name.to_owned(),
            reason: format!("not set in this shell: {what} not checked"),
            line: None,
        };
        let mut resources = Vec::new();
        match var("PLUMBLINE_TABLE") {
            Some(table) => {
                let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), table.clone());
                resources.push(Resource {
                    what: format!("table {table}"),
                    fits: "its key, indexes and time to live are the ones the functions need",
                    problems: store.table_problems().await?,
                });
            }
            None => unchecked.push(not_set("PLUMBLINE_TABLE", "the table")),
        }
        match (var("PLUMBLINE_QUEUE_URL"), var("PLUMBLINE_DLQ_URL")) {
            (Some(queue), Some(dlq)) => {
                let sqs = aws_sdk_sqs::Client::new(&aws);
                resources.push(Resource {
                    what: format!("queue {queue}"),
                    fits: "it dead-letters to the dead-letter queue",
                    problems: plumbline::adapters::sqs::redrive_problems(&sqs, &queue, &dlq)
                        .await?,
                });
            }
            (queue, _) => unchecked.push(not_set(
                if queue.is_none() {
                    "PLUMBLINE_QUEUE_URL"
                } else {
                    "PLUMBLINE_DLQ_URL"
                },
                "the queues' redrive",
            )),
        }
        Ok(Self {
            functions,
            resources,
            unchecked,
        })
    }

    pub(super) fn passed(&self) -> bool {
        self.functions.iter().all(|f| f.problems.is_empty())
            && self.resources.iter().all(|r| r.problems.is_empty())
    }
}

/// The problems of building what the function of `purpose` builds at cold start.
fn build(
    config: &Config,
    purpose: SecretPurpose,
    secrets: &ChainSecrets<EnvSecrets, MapSecrets>,
) -> Vec<ConfigProblem> {
    let problems = |result: Result<(), ConfigError>| result.err().map(|e| e.problems);
    let found = match purpose {
        SecretPurpose::Verify => vec![problems(config.verifiers(secrets).map(drop))],
        SecretPurpose::Deliver => vec![problems(
            plumbline::adapters::targets::build_all(config, secrets).map(drop),
        )],
        SecretPurpose::Reconcile => vec![
            problems(plumbline::adapters::provider_api::from_config(config, secrets).map(drop)),
            problems(plumbline::adapters::targets::crm_targets(config, secrets).map(drop)),
        ],
    };
    found.into_iter().flatten().flatten().collect()
}
