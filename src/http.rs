//! One HTTP exchange as both of our HTTP clients make it: the REST client
//! ([`crate::client`], HTTP/1.1 with keep-alive) and the worker's DB client
//! (HTTP/2 with prior knowledge, one multiplexed connection). Both send a
//! whole body, read a whole body, and want a transport failure as one line
//! with every cause in it.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A pooled HTTP client over TCP with `TCP_NODELAY` (requests are small
/// and latency matters more than packets). Cheap to clone.
#[derive(Clone)]
pub struct HttpClient {
    http: Client<HttpConnector, Full<Bytes>>,
}

impl HttpClient {
    /// HTTP/1.1 with pooled keep-alive connections.
    pub fn http1() -> Self {
        HttpClient {
            http: Client::builder(TokioExecutor::new()).build(Self::connector()),
        }
    }

    /// HTTP/2 with prior knowledge (no upgrade dance): one connection,
    /// multiplexed, reopened by the next call when it breaks.
    #[cfg(feature = "server")]
    pub fn http2() -> Self {
        HttpClient {
            http: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .pool_idle_timeout(std::time::Duration::from_secs(90))
                .build(Self::connector()),
        }
    }

    fn connector() -> HttpConnector {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector
    }

    /// Sends `req` and reads the whole answer. The error is the transport
    /// failure with all its causes ("client error (Connect): tcp connect
    /// error: Connection refused ..."), for a person to read.
    pub async fn exchange(&self, req: Request<Full<Bytes>>) -> Result<(StatusCode, Bytes), String> {
        let res = self
            .http
            .request(req)
            .await
            .map_err(|e| crate::report::chain(&e))?;
        let status = res.status();
        let bytes = res
            .into_body()
            .collect()
            .await
            .map_err(|e| crate::report::chain(&e))?
            .to_bytes();
        Ok((status, bytes))
    }
}
