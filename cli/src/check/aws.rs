//! `config check --aws`: what each function would make of the secrets it fetches at cold start,
//! and whether the table and queues the environment names are the ones the functions need.

use std::collections::{BTreeSet, HashMap};

use plumbline::adapters::dynamodb::DynamoStore;
use plumbline::adapters::sqs::Queues;
use plumbline::config::{
    ChainSecrets, Config, ConfigError, ConfigProblem, EnvSecrets, MapSecrets, SecretPurpose,
    SecretRef, SecretResolver,
};
use secrecy::SecretString;

use super::functions::{self, FunctionSetup, Role};
use crate::deployment::Deployment;

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

/// A function the shell (or the stack) names, as Lambda has it: `None` for one it does not
/// have.
struct Named {
    role: Role,
    name: String,
    setup: Option<FunctionSetup>,
}

/// The configuration of the named function of `role`, where it is named and exists.
fn setup_of(named: &[Named], role: Role) -> Option<&FunctionSetup> {
    named
        .iter()
        .find(|n| n.role == role)
        .and_then(|n| n.setup.as_ref())
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
    /// `env:` reference is read from a function's own environment: from its configuration in
    /// Lambda where the shell names the function, else from this shell, and one set in
    /// neither is listed as not checked rather than as a problem. Then the table of
    /// `PLUMBLINE_TABLE` and the queues of `PLUMBLINE_QUEUE_URL` and `PLUMBLINE_DLQ_URL`, and
    /// the functions the shell names, where they are set.
    pub(super) async fn check(config: &Config) -> anyhow::Result<Self> {
        let deployment = Deployment::load().await?;
        let aws = &deployment.aws;
        let var = |name: &str| deployment.var(name);
        let not_set = |name: &str, what: &str| ConfigProblem {
            key: name.to_owned(),
            reason: format!("{}: {what} not checked", deployment.unset_reason()),
            line: None,
        };
        let mut unchecked = Vec::new();
        let lambda = aws_sdk_lambda::Client::new(aws);
        let mut named = Vec::new();
        for role in Role::ALL {
            match var(role.variable()) {
                Some(name) => {
                    let setup = FunctionSetup::describe(&lambda, &name, role).await?;
                    named.push(Named { role, name, setup });
                }
                None => unchecked.push(not_set(role.variable(), "the function's configuration")),
            }
        }
        let (functions, unchecked_refs) = start_ups(config, aws, &named).await;
        unchecked.splice(0..0, unchecked_refs);
        // The table and queues the shell (or the stack) names, else the ones a named
        // function's environment names: what the functions will use is what is checked, and
        // each function is held to it.
        let resource = |name: &str| var(name).or_else(|| named_by_functions(&named, name));
        let mut resources = Vec::new();
        match resource("PLUMBLINE_TABLE") {
            Some(table) => {
                let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(aws), table.clone());
                resources.push(Resource {
                    what: format!("table {table}"),
                    fits: "its key, indexes and time to live are the ones the functions need",
                    problems: store.table_problems().await?,
                });
            }
            None => unchecked.push(not_set("PLUMBLINE_TABLE", "the table")),
        }
        let queues = match (
            resource("PLUMBLINE_QUEUE_URL"),
            resource("PLUMBLINE_DLQ_URL"),
        ) {
            (Some(queue), Some(dlq)) => {
                let sqs = aws_sdk_sqs::Client::new(aws);
                let queues = Queues::describe(&sqs, &queue, &dlq).await?;
                resources.push(Resource {
                    what: format!("queue {queue}"),
                    fits: "it dead-letters to the dead-letter queue",
                    problems: queues.redrive_problems(&dlq),
                });
                Some(queues)
            }
            (queue, _) => {
                unchecked.push(not_set(
                    if queue.is_none() {
                        "PLUMBLINE_QUEUE_URL"
                    } else {
                        "PLUMBLINE_DLQ_URL"
                    },
                    "the queues' redrive",
                ));
                None
            }
        };
        for Named { role, name, setup } in &named {
            resources.push(Resource {
                what: format!("function {name} ({})", role.name()),
                fits: match (role, &queues) {
                    (Role::Delivery, Some(_)) => {
                        "its environment names what was checked here, and its event source and \
                         retries fit the delivery queue"
                    }
                    (Role::Delivery, None) => {
                        "its environment names what was checked here (its event source and \
                         retries not checked: no queues named)"
                    }
                    _ => "its environment names what was checked here",
                },
                problems: match setup {
                    Some(setup) => functions::problems(*role, setup, resource, queues.as_ref()),
                    None => vec![ConfigProblem {
                        key: "function".to_owned(),
                        reason: "no such function in this account and region".to_owned(),
                        line: None,
                    }],
                },
            });
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

/// The value of `variable` in the environment of a named function that reads it: delivery's
/// first, which reads every one, then reconciliation's, then the ingress's.
fn named_by_functions(named: &[Named], variable: &str) -> Option<String> {
    [Role::Delivery, Role::Reconcile, Role::Ingress]
        .into_iter()
        .filter(|role| role.reads(variable))
        .filter_map(|role| setup_of(named, role))
        .find_map(|setup| {
            setup
                .environment
                .get(variable)
                .filter(|v| !v.is_empty())
                .cloned()
        })
}

/// Each function's start-up: its remote references fetched and what it builds from them, with
/// the `env:` references read from its configuration in Lambda where `named` has it. Also the
/// `env:` references set neither there nor in this shell, which are not checked.
async fn start_ups(
    config: &Config,
    aws: &plumbline::adapters::aws_sdk::SdkConfig,
    named: &[Named],
) -> (Vec<StartUp>, Vec<ConfigProblem>) {
    let mut functions = Vec::new();
    let mut unchecked_refs: Vec<ConfigProblem> = Vec::new();
    for role in Role::ALL {
        let purpose = role.purpose();
        let refs = config.secret_refs_for(purpose);
        let fetched = refs
            .iter()
            .filter(|(_, r)| !matches!(r, SecretRef::Env(_)))
            .map(|(_, r)| r.to_string())
            .collect::<BTreeSet<_>>()
            .len();
        let environment = setup_of(named, role).map(|setup| &setup.environment);
        // The `env:` references neither the function's configuration nor this shell has.
        let unchecked_keys: Vec<&(String, SecretRef)> = refs
            .iter()
            .filter(|(_, r)| matches!(r, SecretRef::Env(name) if environment.is_none() && std::env::var_os(name).is_none()))
            .collect();
        let values = plumbline::adapters::aws_secrets::fetch(&refs, aws).await;
        let problems = match (values, environment) {
            (Err(error), _) => error.problems,
            (Ok(values), Some(environment)) => build(
                config,
                purpose,
                &ChainSecrets(FunctionEnv::new(&refs, environment), values),
            ),
            (Ok(values), None) => build(config, purpose, &ChainSecrets(EnvSecrets, values)),
        };
        for (key, reference) in &unchecked_keys {
            if !unchecked_refs.iter().any(|u| u.key == *key) {
                unchecked_refs.push(ConfigProblem {
                    key: key.clone(),
                    reason: format!(
                        "{reference} is not set in this shell: read from the function's environment, not checked"
                    ),
                    line: None,
                });
            }
        }
        functions.push(StartUp {
            function: role.name(),
            fetched,
            problems: problems
                .into_iter()
                .filter(|p| !unchecked_keys.iter().any(|(key, _)| *key == p.key))
                .collect(),
        });
    }
    (functions, unchecked_refs)
}

/// The problems of building what the function of `purpose` builds at cold start.
fn build(
    config: &Config,
    purpose: SecretPurpose,
    secrets: &impl SecretResolver,
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

/// Resolves `env:` references from a function's configuration in Lambda, as its cold start
/// would from its environment.
struct FunctionEnv(MapSecrets);

impl FunctionEnv {
    /// The `env:` references among `refs` that the function's `environment` sets.
    fn new(refs: &[(String, SecretRef)], environment: &HashMap<String, String>) -> Self {
        Self(MapSecrets(
            refs.iter()
                .filter_map(|(_, reference)| match reference {
                    SecretRef::Env(name) => environment
                        .get(name)
                        .map(|value| (reference.to_string(), value.clone())),
                    _ => None,
                })
                .collect(),
        ))
    }
}

impl SecretResolver for FunctionEnv {
    fn resolve(&self, reference: &SecretRef) -> Result<SecretString, String> {
        self.0.resolve(reference).map_err(|_| match reference {
            SecretRef::Env(name) => {
                format!("environment variable {name} is not set in the function's configuration")
            }
            other => format!("{other} is fetched at start-up; it was not"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(vars: &[(&str, &str)]) -> FunctionSetup {
        FunctionSetup {
            environment: vars
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ..FunctionSetup::default()
        }
    }

    #[test]
    fn the_names_a_function_reads_come_from_delivery_first() {
        let named = |role, setup| Named {
            role,
            name: role.name().to_owned(),
            setup,
        };
        let named = [
            named(
                Role::Ingress,
                Some(setup(&[
                    ("PLUMBLINE_TABLE", "old"),
                    ("PLUMBLINE_QUEUE_URL", "q-in"),
                    ("PLUMBLINE_DLQ_URL", "ignored"),
                ])),
            ),
            named(
                Role::Delivery,
                Some(setup(&[
                    ("PLUMBLINE_TABLE", "events"),
                    ("PLUMBLINE_QUEUE_URL", ""),
                ])),
            ),
            named(Role::Reconcile, None),
        ];
        assert_eq!(
            named_by_functions(&named, "PLUMBLINE_TABLE").as_deref(),
            Some("events")
        );
        // Delivery's is empty and reconciliation is not there: the ingress's.
        assert_eq!(
            named_by_functions(&named, "PLUMBLINE_QUEUE_URL").as_deref(),
            Some("q-in")
        );
        // The ingress reads no dead-letter queue: what its environment says of one is not used.
        assert_eq!(named_by_functions(&named, "PLUMBLINE_DLQ_URL"), None);
        assert_eq!(named_by_functions(&[], "PLUMBLINE_TABLE"), None);
    }
}
