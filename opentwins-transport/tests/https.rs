//! The HTTP API over TLS on a real socket (127.0.0.1:0), with certificates made here by OpenSSL:
//! a client that trusts the CA gets answers, one that does not (or speaks plain HTTP, or
//! stalls the handshake) gets none, and with `client_ca` only clients with a certificate of that
//! CA get in.

use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use openssl::ssl::{SslConnector, SslFiletype, SslMethod};
use opentwins_core::engine::{EngineConfig, Twins};
use opentwins_transport::http::{
    HttpConfig, HttpState, ServeLimits, ServerTlsConfig, TlsAcceptor, app, serve_tls,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_openssl::SslStream;

mod tls_helpers;
use tls_helpers::Pki;

const LIMIT: Duration = Duration::from_secs(30);

struct Server {
    addr: std::net::SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    async fn start(tls: &ServerTlsConfig, limits: ServeLimits) -> Server {
        let state = HttpState::new(
            Twins::in_memory(EngineConfig::default()),
            HttpConfig::default(),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async {
            let _ = stopped.await;
        };
        let acceptor = TlsAcceptor::new(tls).unwrap();
        let task = tokio::spawn(serve_tls(listener, app(state), shutdown, limits, acceptor));
        Server {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

/// `GET /health` over TLS trusting `ca`, with a client certificate if given: the status, or
/// why there was none.
async fn health(
    addr: std::net::SocketAddr,
    ca: &Path,
    client: Option<(&Path, &Path)>,
) -> Result<u16, String> {
    let mut b = SslConnector::builder(SslMethod::tls_client()).unwrap();
    b.set_ca_file(ca).unwrap();
    if let Some((cert, key)) = client {
        b.set_certificate_file(cert, SslFiletype::PEM).unwrap();
        b.set_private_key_file(key, SslFiletype::PEM).unwrap();
    }
    let ssl = b
        .build()
        .configure()
        .unwrap()
        .into_ssl("127.0.0.1")
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut stream = SslStream::new(ssl, tcp).unwrap();
    Pin::new(&mut stream)
        .connect()
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (mut send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("http: {e}"))?;
    tokio::spawn(connection);
    let request = axum::http::Request::get("/health")
        .header("host", addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = send
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    Ok(response.status().as_u16())
}

#[tokio::test]
async fn https_answers_clients_that_trust_its_ca_only() {
    tokio::time::timeout(LIMIT, async {
        let pki = Pki::new();
        let limits = ServeLimits {
            header_read_timeout: Duration::from_millis(500),
            ..ServeLimits::default()
        };
        let server = Server::start(&pki.server(false), limits).await;
        assert_eq!(
            health(server.addr, &pki.path("ca.crt"), None).await,
            Ok(200)
        );
        let wrong = health(server.addr, &pki.path("other-ca.crt"), None).await;
        assert!(wrong.is_err(), "a client trusting another CA: {wrong:?}");

        // Plain HTTP on the TLS port gets no HTTP answer.
        let mut plain = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        plain
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        let _ = plain.read_to_end(&mut answer).await;
        assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");

        // A client that never starts the handshake is closed after the head timeout.
        let mut idle = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        let started = std::time::Instant::now();
        let n = idle.read(&mut [0u8; 16]).await.unwrap_or(0);
        assert_eq!(n, 0);
        assert!(started.elapsed() < Duration::from_secs(5));
        // The server still answers.
        assert_eq!(
            health(server.addr, &pki.path("ca.crt"), None).await,
            Ok(200)
        );
        server.stop().await;
    })
    .await
    .expect("timed out");
}

#[tokio::test]
async fn mutual_tls_admits_clients_with_a_certificate_of_the_client_ca() {
    tokio::time::timeout(LIMIT, async {
        let pki = Pki::new();
        let server = Server::start(&pki.server(true), ServeLimits::default()).await;
        let ca = pki.path("ca.crt");
        let none = health(server.addr, &ca, None).await;
        assert!(none.is_err(), "no client certificate: {none:?}");
        let (other_cert, other_key) = (
            pki.path("other-ca-client.crt"),
            pki.path("other-ca-client.key"),
        );
        let foreign = health(server.addr, &ca, Some((&other_cert, &other_key))).await;
        assert!(foreign.is_err(), "a certificate of another CA: {foreign:?}");
        let (cert, key) = (pki.path("ca-client.crt"), pki.path("ca-client.key"));
        assert_eq!(health(server.addr, &ca, Some((&cert, &key))).await, Ok(200));
        server.stop().await;
    })
    .await
    .expect("timed out");
}

#[test]
fn tls_files_that_do_not_load_are_configuration_errors() {
    let pki = Pki::new();
    let mismatched = ServerTlsConfig {
        certificate: pki.path("ca-server.crt"),
        private_key: pki.path("other-ca-server.key"),
        client_ca: None,
    };
    let missing = ServerTlsConfig {
        certificate: pki.path("nope.crt"),
        ..pki.server(false)
    };
    for config in [mismatched, missing] {
        let e = TlsAcceptor::new(&config).err().expect("refused");
        assert!(e.to_string().contains("tls."), "{e}");
    }
}
