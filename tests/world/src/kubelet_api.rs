//! The part of the kubelet's own HTTPS API that `pods/log` reaches: the API server proxies
//! `GET /api/v1/namespaces/NS/pods/NAME/log` to `https://NODE:PORT/containerLogs/NS/NAME/CONTAINER`
//! on the node's address and kubelet port (its status' `daemonEndpoints`). Without
//! `--kubelet-certificate-authority` the API server does not check the kubelet's certificate, as
//! with a kubelet's self-signed one; this one serves the API server's own.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What each container printed, by `namespace/pod`.
pub type Logs = Arc<Mutex<HashMap<String, Arc<Mutex<String>>>>>;

struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let Ok((stream, addr)) = self.tcp.accept().await else {
                continue;
            };
            if let Ok(tls) = self.acceptor.accept(stream).await {
                return (tls, addr);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

#[derive(serde::Deserialize)]
struct LogQuery {
    #[serde(rename = "tailLines")]
    tail_lines: Option<usize>,
}

async fn container_logs(
    State(logs): State<Logs>,
    UrlPath((namespace, pod, _container)): UrlPath<(String, String, String)>,
    Query(query): Query<LogQuery>,
) -> (StatusCode, String) {
    let text = logs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&format!("{namespace}/{pod}"))
        .map(|l| l.lock().unwrap_or_else(|e| e.into_inner()).clone());
    let Some(text) = text else {
        return (
            StatusCode::NOT_FOUND,
            format!("container of pod {namespace}/{pod} not found"),
        );
    };
    let lines: Vec<&str> = text.lines().collect();
    let skip = query
        .tail_lines
        .map(|n| lines.len().saturating_sub(n))
        .unwrap_or(0);
    let mut out = lines[skip..].join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    (StatusCode::OK, out)
}

/// Serves `logs` on a free loopback port with the certificate and key in `certs` (the API
/// server's self-signed pair); the port.
pub fn serve(certs: &Path, logs: Logs) -> Result<u16, String> {
    let cert_file = certs.join("apiserver.crt");
    let key_file = certs.join("apiserver.key");
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_file)
        .map_err(|e| format!("{}: {e}", cert_file.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let key = PrivateKeyDer::from_pem_file(&key_file)
        .map_err(|e| format!("{}: {e}", key_file.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .map_err(|e| e.to_string())?;
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let app = axum::Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            get(container_logs),
        )
        .with_state(logs);
    serve_in_background(|tcp| async move {
        let _ = axum::serve(TlsListener { tcp, acceptor }, app).await;
    })
}

/// Serves on a free loopback port from a thread of its own (the node stand-ins and the world's
/// webhooks run beside the tests' blocking code); the port.
pub(crate) fn serve_in_background<F, Fut>(serve: F) -> Result<u16, String>
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            if let Ok(tcp) = tokio::net::TcpListener::from_std(listener) {
                serve(tcp).await;
            }
        });
    });
    Ok(port)
}
