//! The real binary's TLS, end to end: its AWS SDK client and its HTTP client both run rustls on
//! ring, trust the authorities `SSL_CERT_FILE` names, and refuse a server whose certificate no
//! trusted authority signed; without it, both trust Mozilla's root program only. Everything else in the suite talks plain HTTP on
//! loopback, so this is where a broken TLS stack would show before a deployment does.

use std::process::{Command, Output};

use crate::helpers::dev::binary;
use crate::helpers::recorder::Recorder;
use crate::helpers::tls::TlsProxy;
use crate::helpers::{aws, create_table};

/// The binary with `args`, trusting no store of the shell's own: only what `envs` names.
fn run(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env_remove("PLUMBLINE_CONFIG")
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR");
    for (name, value) in envs {
        command.env(name, value);
    }
    command.output().expect("run plumbline")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A new table on moto, and moto's address (for a TLS proxy to stand in front of).
async fn table_on_moto() -> (String, String) {
    let ddb = aws_sdk_dynamodb::Client::new(&aws().await);
    let table = create_table(&ddb).await;
    (table, crate::helpers::moto_url())
}

/// `plumbline events list --aws --json` on `table` through `proxy`, trusting the authority of
/// `ca` when one is given (its file as `SSL_CERT_FILE`), else only the built-in roots.
async fn list_events(proxy: &TlsProxy, table: &str, ca: Option<&TlsProxy>) -> Output {
    let (url, table) = (proxy.url.clone(), table.to_owned());
    let ca = ca.map(|p| p.ca_file.to_str().expect("path").to_owned());
    tokio::task::spawn_blocking(move || {
        let mut envs = vec![
            ("AWS_ENDPOINT_URL", url.as_str()),
            ("PLUMBLINE_TABLE", &table),
        ];
        if let Some(ca) = &ca {
            envs.push(("SSL_CERT_FILE", ca));
        }
        run(&["events", "list", "--aws", "--json"], &envs)
    })
    .await
    .expect("run")
}

#[tokio::test]
async fn aws_requests_go_over_tls_and_an_untrusted_certificate_is_refused() {
    let (table, moto) = table_on_moto().await;
    let proxy = TlsProxy::start(&moto).await;
    let stranger = TlsProxy::start(&moto).await;

    let trusted = list_events(&proxy, &table, Some(&proxy)).await;
    assert!(trusted.status.success(), "{}", stderr(&trusted));
    assert_eq!(String::from_utf8_lossy(&trusted.stdout).trim(), "[]");

    let untrusted = list_events(&proxy, &table, Some(&stranger)).await;
    assert!(
        !untrusted.status.success(),
        "a certificate from an authority it does not trust was accepted"
    );
    assert!(
        stderr(&untrusted).to_lowercase().contains("certificate"),
        "{}",
        stderr(&untrusted)
    );
}

#[tokio::test]
async fn webhooks_sent_by_the_cli_go_over_tls_and_an_untrusted_certificate_is_refused() {
    let target = Recorder::start().await;
    let proxy = TlsProxy::start(&target.url).await;
    let stranger = TlsProxy::start(&target.url).await;
    let send = |ca: &str| {
        let (url, ca) = (proxy.url.clone(), ca.to_owned());
        tokio::task::spawn_blocking(move || {
            run(
                &["send", "stripe", "payment_intent.succeeded", "--url", &url],
                &[("SSL_CERT_FILE", &ca)],
            )
        })
    };

    let trusted = send(proxy.ca_file.to_str().expect("path"))
        .await
        .expect("run");
    assert!(trusted.status.success(), "{}", stderr(&trusted));
    let received = target.requests();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/webhooks/stripe");
    assert!(received[0].header("stripe-signature").is_some());

    let untrusted = send(stranger.ca_file.to_str().expect("path"))
        .await
        .expect("run");
    assert!(!untrusted.status.success());
    assert_eq!(target.count(), 1, "nothing reached the target");
}

#[tokio::test]
async fn without_ssl_cert_file_a_private_authority_is_not_trusted() {
    let target = Recorder::start().await;
    let proxy = TlsProxy::start(&target.url).await;
    let url = proxy.url.clone();
    let out = tokio::task::spawn_blocking(move || {
        run(
            &["send", "stripe", "payment_intent.succeeded", "--url", &url],
            &[],
        )
    })
    .await
    .expect("run");
    assert!(
        !out.status.success(),
        "a certificate from an authority outside the built-in roots was accepted"
    );
    assert_eq!(target.count(), 0, "nothing reached the target");
}

#[tokio::test]
async fn without_ssl_cert_file_the_aws_client_does_not_trust_a_private_authority() {
    // The SDK's client is given the built-in roots as its trust store: it still verifies.
    let (table, moto) = table_on_moto().await;
    let proxy = TlsProxy::start(&moto).await;
    let out = list_events(&proxy, &table, None).await;
    assert!(
        !out.status.success(),
        "a certificate from an authority outside the built-in roots was accepted: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        stderr(&out).contains("invalid peer certificate: UnknownIssuer"),
        "{}",
        stderr(&out)
    );
}
