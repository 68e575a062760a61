//! One HTTP exchange as both of our HTTP clients make it: the REST client
//! ([`crate::client`], HTTP/1.1 with keep-alive) and the worker's DB client
//! (HTTP/2 with prior knowledge, one multiplexed connection). Both send a
//! whole body, read a whole body, and want a transport failure as one line
//! with every cause in it.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::tls::TlsClient;

/// A pooled HTTP client over TCP with `TCP_NODELAY` (requests are small
/// and latency matters more than packets), speaking `https://` URLs with
/// the given TLS settings. Cheap to clone.
#[derive(Clone)]
pub(crate) struct HttpClient {
    http: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    /// HTTP/1.1 with pooled keep-alive connections.
    pub(crate) fn http1(tls: Option<&TlsClient>) -> Self {
        HttpClient {
            http: Client::builder(TokioExecutor::new()).build(Self::connector(tls, false)),
        }
    }

    /// HTTP/2 with prior knowledge (no upgrade dance; `h2` by ALPN under
    /// TLS): one connection, multiplexed, reopened by the next call when it
    /// breaks.
    #[cfg(feature = "server")]
    pub(crate) fn http2(tls: Option<&TlsClient>) -> Self {
        HttpClient {
            http: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .pool_idle_timeout(std::time::Duration::from_secs(90))
                .build(Self::connector(tls, true)),
        }
    }

    fn connector(tls: Option<&TlsClient>, h2: bool) -> HttpsConnector<HttpConnector> {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.enforce_http(false);
        // Without TLS settings an `https://` URL fails its handshake (no
        // CA is trusted); callers refuse one before it gets here.
        let config = match tls {
            Some(tls) => tls.config(),
            None => std::sync::Arc::new(
                rustls::ClientConfig::builder_with_provider(crate::tls::provider())
                    .with_safe_default_protocol_versions()
                    .expect("ring supports the default protocol versions")
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            ),
        };
        // The builder sets the ALPN protocols to the HTTP version chosen.
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config((*config).clone())
            .https_or_http();
        if h2 {
            builder.enable_http2().wrap_connector(tcp)
        } else {
            builder.enable_http1().wrap_connector(tcp)
        }
    }

    /// Sends `req` and reads the whole answer. The error is the transport
    /// failure with all its causes ("client error (Connect): tcp connect
    /// error: Connection refused ..."), for a person to read.
    #[cfg(feature = "server")]
    pub(crate) async fn exchange(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, Bytes), String> {
        let (status, _, bytes) = self.exchange_with_headers(req).await?;
        Ok((status, bytes))
    }

    /// [`HttpClient::exchange`], keeping the answer's headers.
    pub(crate) async fn exchange_with_headers(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), String> {
        self.exchange_once(req).await.map_err(|e| e.message)
    }

    /// [`HttpClient::exchange_with_headers`], saying on failure whether
    /// the request can have reached the server: what a caller needs to
    /// know before it sends the request again elsewhere.
    pub(crate) async fn exchange_once(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<(StatusCode, hyper::HeaderMap, Bytes), ExchangeError> {
        let res = self.http.request(req).await.map_err(|e| ExchangeError {
            unsent: e.is_connect(),
            message: crate::causes::chain(&e),
        })?;
        let (parts, body) = res.into_parts();
        let bytes = body
            .collect()
            .await
            .map_err(|e| ExchangeError {
                unsent: false,
                message: crate::causes::chain(&e),
            })?
            .to_bytes();
        Ok((parts.status, parts.headers, bytes))
    }
}

/// Why an exchange got no answer.
#[derive(Debug, Clone)]
pub(crate) struct ExchangeError {
    /// The transport failure with all its causes.
    pub message: String,
    /// True when no connection was made, so the server cannot have seen
    /// the request; false when it was (or may have been) sent.
    pub unsent: bool,
}
