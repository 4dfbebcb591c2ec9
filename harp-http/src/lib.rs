//! The health and status server of harp-manager and harp-agent: HTTP, or HTTPS through rustls
//! with an optional client-certificate check, and bounds on what one client may hold — the time
//! to complete its TLS handshake and send its request head, and the size of that head — so a
//! slow or huge request cannot hold the server or starve another client's probe.

mod tls;

use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use harp_core::config::HttpConfig;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

pub use tls::acceptor;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot listen on {addr}: {source} (set http.host/http.port, or http.enable: false)")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("http.{key} {}: {source}", path.display())]
    File {
        key: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("http.{key} {}: {what}", path.display())]
    Pem {
        key: &'static str,
        path: PathBuf,
        what: String,
    },
    #[error("http TLS: {0}")]
    Tls(#[from] tokio_rustls::rustls::Error),
}

/// What one client may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// From accept until the request head is read (TLS handshake included). Health checkers
    /// send a few hundred bytes at once.
    pub head_timeout: Duration,
    /// The largest request head read (hyper's floor is 8 KiB).
    pub max_head_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            head_timeout: Duration::from_secs(5),
            max_head_bytes: 16 * 1024,
        }
    }
}

/// A bound socket, with the TLS setup when `http.secure` is on.
pub struct Listener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
}

impl Listener {
    /// `tcp` served as `http` says (its `tls`); the files are read now, so a bad one is an
    /// error at start.
    pub fn new(tcp: TcpListener, http: &HttpConfig) -> Result<Listener, HttpError> {
        let tls = http.tls.as_ref().map(acceptor).transpose()?;
        Ok(Listener { tcp, tls })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.tcp.local_addr()
    }

    pub fn scheme(&self) -> &'static str {
        match self.tls {
            Some(_) => "https",
            None => "http",
        }
    }
}

/// Reads the TLS files, then binds `http.host:http.port`: a bad file or a taken port is an
/// error before the process joins the cluster.
pub async fn bind(http: &HttpConfig) -> Result<Listener, HttpError> {
    let tls = http.tls.as_ref().map(acceptor).transpose()?;
    let addr = format!("{}:{}", http.host, http.port);
    let tcp = TcpListener::bind(&addr)
        .await
        .map_err(|source| HttpError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let listener = Listener { tcp, tls };
    tracing::info!("health endpoints on {}://{addr}", listener.scheme());
    Ok(listener)
}

/// Serves `app` on every connection, each on its own task, until the process ends.
pub async fn serve(listener: Listener, app: Router, limits: Limits) {
    loop {
        let (stream, peer) = match listener.tcp.accept().await {
            Ok(conn) => conn,
            // Out of file descriptors and the like: the next accept may work.
            Err(e) => {
                tracing::warn!("http accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (app, tls) = (app.clone(), listener.tls.clone());
        tokio::spawn(async move {
            let Some(tls) = tls else {
                return connection(stream, app, limits).await;
            };
            match tokio::time::timeout(limits.head_timeout, tls.accept(stream)).await {
                Ok(Ok(stream)) => connection(stream, app, limits).await,
                Ok(Err(e)) => tracing::debug!("https {peer}: TLS handshake failed: {e}"),
                Err(_) => tracing::debug!("https {peer}: no TLS handshake within the bound"),
            }
        });
    }
}

/// One HTTP/1.1 connection. axum's own `serve` sets no timer on hyper's connections, so it
/// could not bound the head read; this does.
async fn connection<I>(io: I, app: Router, limits: Limits)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.head_timeout)
        .max_buf_size(limits.max_head_bytes.max(8192))
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app));
    if let Err(e) = conn.await {
        tracing::debug!("http connection: {e}");
    }
}
