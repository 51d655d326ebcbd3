//! Where the `--aws` commands find the deployment they work on: each name from its variable
//! (`PLUMBLINE_TABLE`, `PLUMBLINE_QUEUE_URL`, …), or, with `PLUMBLINE_STACK` naming a stack the
//! template deployed, from that stack's outputs.

use std::collections::HashMap;

use anyhow::{Context, bail};
use aws_sdk_cloudformation::Client;
use plumbline::adapters::aws_sdk::SdkConfig;

/// The stack whose outputs name the deployment.
pub const STACK_VAR: &str = "PLUMBLINE_STACK";

/// Each variable the commands read, and the template's output that gives it.
pub const OUTPUTS: [(&str, &str); 6] = [
    ("PLUMBLINE_TABLE", "EventsTableName"),
    ("PLUMBLINE_QUEUE_URL", "DeliveryQueueUrl"),
    ("PLUMBLINE_DLQ_URL", "DeadLetterQueueUrl"),
    ("PLUMBLINE_INGRESS_FUNCTION", "IngressFunctionName"),
    ("PLUMBLINE_DELIVERY_FUNCTION", "DeliveryFunctionName"),
    ("PLUMBLINE_RECONCILE_FUNCTION", "ReconcileFunctionName"),
];

/// The SDK configuration and the names of the deployment's parts.
pub struct Deployment {
    pub aws: SdkConfig,
    /// The stack's name and the variables its outputs give, when `PLUMBLINE_STACK` is set.
    stack: Option<(String, HashMap<&'static str, String>)>,
}

impl Deployment {
    /// The SDK configuration from the environment, and the stack's outputs where
    /// `PLUMBLINE_STACK` names one. A variable set in the environment as well as given by the
    /// stack must agree with it: which of two tables a command works on is not guessed.
    pub async fn load() -> anyhow::Result<Self> {
        let aws = plumbline::adapters::aws_sdk::load_config().await?;
        let Some(name) = env(STACK_VAR) else {
            return Ok(Self { aws, stack: None });
        };
        let given = outputs(&Client::new(&aws), &name).await?;
        for (variable, output) in OUTPUTS {
            if let (Some(ours), Some(theirs)) = (env(variable), given.get(variable))
                && ours != *theirs
            {
                bail!(
                    "{variable} is {ours} in this shell, but stack {name}'s output {output} is \
                     {theirs}: unset one of them"
                );
            }
        }
        Ok(Self {
            aws,
            stack: Some((name, given)),
        })
    }

    /// The value of one of the deployment's variables: from the environment, else from the
    /// stack's outputs.
    pub fn var(&self, variable: &str) -> Option<String> {
        env(variable).or_else(|| {
            self.stack
                .as_ref()
                .and_then(|(_, given)| given.get(variable).cloned())
        })
    }

    /// As [`Deployment::var`], an error naming where it was looked for when it is not set.
    pub fn required(&self, variable: &str) -> anyhow::Result<String> {
        self.var(variable).with_context(|| match &self.stack {
            Some((name, _)) => {
                let output = OUTPUTS
                    .iter()
                    .find(|(v, _)| *v == variable)
                    .map_or("", |(_, o)| o);
                format!("{variable} is not set, and stack {name} has no output {output}")
            }
            None => format!("{variable} is not set (nor {STACK_VAR})"),
        })
    }

    /// Where a variable that is not set was looked for, for a note that says it was not.
    pub fn unset_reason(&self) -> String {
        match &self.stack {
            Some((name, _)) => format!("not set in this shell nor among stack {name}'s outputs"),
            None => "not set in this shell".to_owned(),
        }
    }
}

fn env(variable: &str) -> Option<String> {
    std::env::var(variable).ok().filter(|v| !v.is_empty())
}

/// The variables the stack's outputs give.
async fn outputs(client: &Client, stack: &str) -> anyhow::Result<HashMap<&'static str, String>> {
    let found = match client.describe_stacks().stack_name(stack).send().await {
        Ok(found) => found,
        // CloudFormation answers a stack it does not have with a validation error.
        Err(err)
            if err
                .as_service_error()
                .and_then(aws_sdk_cloudformation::error::ProvideErrorMetadata::message)
                .is_some_and(|m| m.contains("does not exist")) =>
        {
            bail!("{STACK_VAR}: no stack {stack} in this account and region");
        }
        Err(err) => {
            return Err(err).with_context(|| format!("{STACK_VAR}: describing stack {stack}"));
        }
    };
    let outputs = found
        .stacks
        .unwrap_or_default()
        .into_iter()
        .next()
        .and_then(|s| s.outputs)
        .unwrap_or_default();
    Ok(OUTPUTS
        .iter()
        .filter_map(|(variable, output)| {
            outputs
                .iter()
                .find(|o| o.output_key.as_deref() == Some(output))
                .and_then(|o| o.output_value.clone())
                .map(|value| (*variable, value))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_the_stack_lacks_is_an_error_that_says_where_it_was_looked_for() {
        let given = HashMap::from([("PLUMBLINE_DELIVERY_FUNCTION", "delivery-fn".to_owned())]);
        let with_stack = Deployment {
            aws: SdkConfig::builder().build(),
            stack: Some(("plumbline".to_owned(), given)),
        };
        assert_eq!(
            with_stack.var("PLUMBLINE_DELIVERY_FUNCTION").as_deref(),
            Some("delivery-fn")
        );
        assert_eq!(
            with_stack
                .required("PLUMBLINE_RECONCILE_FUNCTION")
                .map_err(|e| e.to_string()),
            Err(
                "PLUMBLINE_RECONCILE_FUNCTION is not set, and stack plumbline has no output \
                 ReconcileFunctionName"
                    .to_owned()
            )
        );
        let without = Deployment {
            aws: SdkConfig::builder().build(),
            stack: None,
        };
        assert_eq!(
            without
                .required("PLUMBLINE_RECONCILE_FUNCTION")
                .map_err(|e| e.to_string()),
            Err("PLUMBLINE_RECONCILE_FUNCTION is not set (nor PLUMBLINE_STACK)".to_owned())
        );
        assert_eq!(without.unset_reason(), "not set in this shell");
        assert_eq!(
            with_stack.unset_reason(),
            "not set in this shell nor among stack plumbline's outputs"
        );
    }

    #[test]
    fn every_variable_comes_from_an_output_the_template_declares() {
        let template = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../infra/template.yaml"
        ))
        .expect("the template");
        let outputs = &template[template.find("\nOutputs:").expect("Outputs")..];
        for (variable, output) in OUTPUTS {
            assert!(
                outputs.contains(&format!("\n  {output}:\n")),
                "{variable}: the template has no output {output}"
            );
        }
    }
}
