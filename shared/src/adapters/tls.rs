//! One TLS stack for every outbound connection: rustls on ring. ring is a fraction of the size
//! of the alternative provider, and binary size is cold-start time on Lambda; the AWS SDK's
//! client is built on the same provider (see `aws_sdk`).
//!
//! Which authorities the HTTP clients (targets, provider APIs) trust: Mozilla's root program,
//! compiled in (`webpki-roots`), unless `SSL_CERT_FILE` or `SSL_CERT_DIR` names a store of the
//! operator's own (a private authority in front of a target), which is then read instead. The
//! system store is not read by default because reading it is about 2 ms of a cold start, and
//! every client built from it used to read it again. The AWS SDK's client reads the system
//! store itself, once per process.

use std::sync::{Arc, LazyLock};

use rustls::RootCertStore;

static AUTHORITIES: LazyLock<Arc<RootCertStore>> = LazyLock::new(|| {
    let own_store = ["SSL_CERT_FILE", "SSL_CERT_DIR"]
        .iter()
        .any(|name| std::env::var_os(name).is_some());
    Arc::new(if own_store {
        configured_store()
    } else {
        RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }
    })
});

/// The store `SSL_CERT_FILE` / `SSL_CERT_DIR` name. Certificates webpki cannot parse are
/// skipped, as rustls's own loaders do; an empty store refuses every server, and says so.
fn configured_store() -> RootCertStore {
    let found = rustls_native_certs::load_native_certs();
    for error in &found.errors {
        tracing::warn!(error = %error, "could not read a certificate authority");
    }
    let mut store = RootCertStore::empty();
    let (_, skipped) = store.add_parsable_certificates(found.certs);
    if skipped > 0 {
        tracing::warn!(
            skipped,
            "certificate authorities that could not be parsed were skipped"
        );
    }
    if store.is_empty() {
        tracing::warn!(
            "no certificate authority in SSL_CERT_FILE / SSL_CERT_DIR: every TLS connection will be refused"
        );
    }
    store
}

/// A `reqwest` client builder whose TLS runs on ring and trusts the authorities above. Every
/// HTTP client in plumbline starts here, because `reqwest` is built without a provider of its
/// own and would refuse to build otherwise.
pub fn http_client() -> reqwest::ClientBuilder {
    install_provider();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(Arc::clone(&AUTHORITIES))
        .with_no_client_auth();
    // What reqwest offers when it builds the configuration itself (HTTP/1 only here).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder().tls_backend_preconfigured(config)
}

/// Makes ring the process's rustls provider; later calls, and a provider installed first by
/// someone else, leave it as it is.
pub fn install_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another thread installing one is fine: a provider is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}
