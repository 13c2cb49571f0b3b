//! The HTTP/2 server under Flight: accepting connections, TLS, connection settings and
//! graceful shutdown, on hyper directly rather than tonic's `Server`.
//!
//! tonic's server only takes response bodies whose data is `Bytes`, and hyper sends every
//! chunk of a body as its own HTTP/2 DATA frame. A `DoGet` message whose body is a batch's own
//! buffers would go out as dozens of small frames, which costs the client more than the copy it
//! saves. Here the bodies are [`ResponseBody`], whose data is a [`Rope`](crate::rope::Rope): a
//! whole message is one chunk, cut by h2 into frames of the size the client accepts and
//! written with vectored writes. The calls themselves are still tonic's (see
//! [`FlightRoutes`]); each request carries tonic's [`TcpConnectInfo`], so the client's address
//! is known to the authenticator as before.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use hyper::body::Incoming;
use hyper::server::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::server::TcpConnectInfo;
use tower::ServiceExt;

use crate::TlsFiles;
use crate::doget::ResponseBody;
use crate::error::FlightServeError;
use crate::routes::FlightRoutes;
use dataport_engine::telemetry::TracedBody;

/// Pings an idle connection this often, and drops it when a ping goes unanswered this long.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Calls one connection may run at once.
const MAX_CONCURRENT_STREAMS: u32 = 256;

/// A TLS handshake that takes longer than this is abandoned.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// After an accept error other than a refused connection (out of file descriptors, say),
/// wait this long before accepting again rather than spinning.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The TLS acceptor for `files`: the certificate chain and private key, PEM, offering HTTP/2.
pub(crate) fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, FlightServeError> {
    let cert_pem = read(&files.cert)?;
    let key_pem = read(&files.key)?;
    let pem_error = |path: &Path, what: &'static str, detail: String| FlightServeError::TlsPem {
        path: path.to_path_buf(),
        what,
        detail,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(&files.cert, "certificate", e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(
            &files.cert,
            "certificate",
            "no CERTIFICATE block".to_string(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| pem_error(&files.key, "private key", e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(FlightServeError::Tls)?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(FlightServeError::Tls)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn read(path: &Path) -> Result<Vec<u8>, FlightServeError> {
    std::fs::read(path).map_err(|source| FlightServeError::TlsFile {
        path: path.to_path_buf(),
        source,
    })
}

/// Serve `routes` on every connection `listener` accepts until `shutdown` resolves; then stop
/// accepting, let running calls finish, and return once every connection has closed.
pub(crate) async fn serve(
    listener: TcpListener,
    routes: FlightRoutes,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS);
    // every connection holds a receiver; the sender learns when the last one is gone
    let (stop, stopped) = watch::channel(());
    drop(stopped);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, remote)) => {
                let connection = Connection {
                    routes: routes.clone(),
                    builder: builder.clone(),
                    stop: stop.subscribe(),
                };
                tokio::spawn(connection.run(stream, remote, tls.clone()));
            }
            Err(e) if is_connection_error(&e) => {
                tracing::debug!(error = %e, "a Flight connection failed while being accepted");
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a Flight connection failed; retrying");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
    // closing the listening socket now refuses new clients instead of leaving them waiting
    drop(listener);
    // no connection may be waiting for the signal: a send error only means there are none
    let _ = stop.send(());
    stop.closed().await;
}

fn is_connection_error(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::ConnectionReset
    )
}

/// One accepted connection and what it needs to serve calls.
struct Connection {
    routes: FlightRoutes,
    builder: http2::Builder<TokioExecutor>,
    stop: watch::Receiver<()>,
}

impl Connection {
    async fn run(mut self, stream: TcpStream, remote: SocketAddr, tls: Option<TlsAcceptor>) {
        // without it, Nagle's algorithm and delayed ACKs add ~40 ms to every call
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a Flight connection");
        }
        let calls = Calls {
            routes: self.routes.clone(),
            connection: TcpConnectInfo {
                local_addr: stream.local_addr().ok(),
                remote_addr: Some(remote),
            },
        };
        let Some(tls) = tls else {
            return self.serve(TokioIo::new(stream), calls).await;
        };
        let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(stream));
        let stream = tokio::select! {
            // the server is stopping: a connection still in its handshake has no calls to finish
            _ = self.stop.changed() => return,
            handshake = handshake => match handshake {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%remote, error = %e, "a Flight TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%remote, "a Flight TLS handshake timed out");
                    return;
                }
            },
        };
        self.serve(TokioIo::new(stream), calls).await;
    }

    async fn serve<I>(mut self, io: I, calls: Calls)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let connection = self.builder.serve_connection(io, calls);
        tokio::pin!(connection);
        let finished = tokio::select! {
            finished = connection.as_mut() => finished,
            _ = self.stop.changed() => {
                // refuse new calls, let the running ones finish
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(e) = finished {
            tracing::debug!(error = %e, "a Flight connection ended with an error");
        }
    }
}

/// The calls of one connection, handed to [`FlightRoutes`] as tonic requests.
#[derive(Clone)]
struct Calls {
    routes: FlightRoutes,
    connection: TcpConnectInfo,
}

impl hyper::service::Service<http::Request<Incoming>> for Calls {
    type Response = http::Response<TracedBody<ResponseBody>>;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        let mut request = request.map(tonic::body::Body::new);
        request.extensions_mut().insert(self.connection.clone());
        Box::pin(self.routes.clone().oneshot(request))
    }
}
