//! A TLS front on loopback: a certificate authority made for the test, a server certificate for
//! `localhost` signed by it, and a proxy that ends TLS and passes each request to a plain HTTP
//! upstream (moto's server, a recording target). Processes that trust the authority through
//! `SSL_CERT_FILE` then talk real TLS to real services.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::response::Response;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::unique;

pub struct TlsProxy {
    /// `https://localhost:{port}`
    pub url: String,
    /// The authority's certificate (PEM), for `SSL_CERT_FILE`.
    pub ca_file: PathBuf,
}

struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            // A client that refuses the certificate ends its handshake here; wait for the next.
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

impl TlsProxy {
    /// Serves `https://localhost:{port}` in front of `upstream` (`http://…`).
    pub async fn start(upstream: &str) -> Self {
        plumbline::adapters::tls::install_provider();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate().expect("ca key");
        let ca_cert = ca_params.self_signed(&ca_key).expect("ca certificate");
        let issuer = Issuer::new(ca_params, ca_key);
        let server_key = KeyPair::generate().expect("server key");
        let server_cert = CertificateParams::new(vec!["localhost".to_owned()])
            .expect("server params")
            .signed_by(&server_key, &issuer)
            .expect("server certificate");

        let ca_file = std::env::temp_dir().join(format!("{}.pem", unique("plumbline-test-ca")));
        std::fs::write(&ca_file, ca_cert.pem()).expect("write the authority");

        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(server_cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
            )
            .expect("server config");
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = tcp.local_addr().expect("addr").port();
        let listener = TlsListener {
            tcp,
            acceptor: TlsAcceptor::from(Arc::new(config)),
        };
        let app = Router::new()
            .fallback(forward)
            .with_state(Arc::new(upstream.trim_end_matches('/').to_owned()));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("https://localhost:{port}"),
            ca_file,
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        std::fs::remove_file(&self.ca_file).ok();
    }
}

/// The DynamoDB operation a request asks for, which DynamoDB names in a header
/// (`DynamoDB_20120810.BatchGetItem`): `BatchGetItem`.
pub fn dynamodb_operation(request: &Request) -> Option<&str> {
    request
        .headers()
        .get("x-amz-target")
        .and_then(|t| t.to_str().ok())
        .and_then(|t| t.rsplit_once('.'))
        .map(|(_, operation)| operation)
}

/// Passes the request on as it came (method, path, headers, body) and its answer back.
pub async fn forward(State(upstream): State<Arc<String>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = to_bytes(body, 16 << 20).await.expect("request body");
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut outbound = super::http()
        .request(parts.method, format!("{upstream}{path}"))
        .body(body);
    for (name, value) in &parts.headers {
        if name != http::header::HOST {
            outbound = outbound.header(name, value);
        }
    }
    let answer = outbound.send().await.expect("upstream answers");
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    response
        .body(Body::from(answer.bytes().await.expect("upstream body")))
        .expect("response")
}
