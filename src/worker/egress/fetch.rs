//! One fetch, from the checked request to the read body, redirects
//! followed hop by hop through the same checks (see [`super`] for the
//! order).

use super::guard::ConnectError;
use super::{Active, Egress};
use crate::catalogue::allowed_host::Target;
use crate::catalogue::manifest::Manifest;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, StatusCode};
use std::time::Duration;
use tokio::time::Instant;

/// The most redirects one fetch follows.
pub const MAX_REDIRECTS: usize = 5;

/// Headers a script cannot set: the client sets them from the URL and the
/// body, and a guest-chosen `host` would aim a request past its URL.
pub const RESERVED_HEADERS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "upgrade",
    "te",
    "trailer",
    "proxy-connection",
    "proxy-authorization",
];

/// Headers dropped when a redirect leaves the origin they were meant for.
const CREDENTIALS: &[HeaderName] = &[header::AUTHORIZATION, header::COOKIE];

/// Why a fetch raised, each with its stable code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The URL or the options are wrong.
    #[error("{0}")]
    BadRequest(String),
    /// The manifest, the guard or the fleet's policy refuses it.
    #[error("{0}")]
    Denied(String),
    /// The call made its last fetch already.
    #[error("{0}")]
    TooManyFetches(String),
    /// The tenant's or the worker's fetch slots are all in use.
    #[error("{0}")]
    Overloaded(String),
    /// The answer (or all of its body) did not come in time.
    #[error("{0}")]
    Timeout(String),
    /// The body is over the limit.
    #[error("{0}")]
    TooLarge(String),
    /// Connecting or exchanging failed.
    #[error("{0}")]
    Network(String),
}

impl FetchError {
    /// The code scripts see as `err.code` and metrics as the outcome.
    pub fn code(&self) -> &'static str {
        match self {
            FetchError::BadRequest(_) => "bad_request",
            FetchError::Denied(_) => "egress_denied",
            FetchError::TooManyFetches(_) => "too_many_fetches",
            FetchError::Overloaded(_) => "overloaded",
            FetchError::Timeout(_) => "timeout",
            FetchError::TooLarge(_) => "too_large",
            FetchError::Network(_) => "network",
        }
    }
}

/// A request as a script asked for it, checked for form.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// `GET` unless told.
    pub method: Method,
    /// Where.
    pub target: Target,
    /// What the script set (none of [`RESERVED_HEADERS`]).
    pub headers: HeaderMap,
    /// Sent as it is.
    pub body: Bytes,
    /// Whether 3xx answers are followed (or returned as they are).
    pub follow: bool,
    /// The longest the whole fetch may take.
    pub timeout: Duration,
}

/// What came back.
#[derive(Debug, Clone)]
pub struct FetchResponse {
    /// The status code.
    pub status: u16,
    /// The answer's headers.
    pub headers: HeaderMap,
    /// Its whole body.
    pub body: Bytes,
    /// The URL that answered (after redirects).
    pub url: String,
}

impl Egress {
    /// Fetches `request` for `manifest`'s plugin; counts its outcome.
    pub async fn fetch(
        &self,
        manifest: &Manifest,
        request: FetchRequest,
    ) -> Result<FetchResponse, FetchError> {
        let active = self.active();
        let result = match self.stand_in() {
            Some(stand_in) => {
                checked(&active, manifest, &request).and_then(|()| stand_in.fetch(&request))
            }
            None => fetch(&active, manifest, request).await,
        };
        let outcome = match &result {
            Ok(_) => "response",
            Err(e) => e.code(),
        };
        self.count(&manifest.name, outcome);
        result
    }
}

/// Whether `manifest` lets its plugin reach `target`, and the error that
/// names the line it lacks when not.
pub fn allowed(manifest: &Manifest, target: &Target) -> Result<(), FetchError> {
    if manifest.allowed_host(target).is_some() {
        return Ok(());
    }
    Err(FetchError::Denied(format!(
        "plugin {} may not reach {}: its plugin.toml would need allowed_hosts = [\"{}\"]",
        manifest.name,
        target.origin(),
        target.pattern()
    )))
}

/// The checks before any connection: the fleet's policy, then the
/// manifest.
fn checked(active: &Active, manifest: &Manifest, request: &FetchRequest) -> Result<(), FetchError> {
    if !active.policy.enabled {
        return Err(FetchError::Denied(
            "egress is off on this fleet (serve --no-egress)".into(),
        ));
    }
    allowed(manifest, &request.target)
}

async fn fetch(
    active: &Active,
    manifest: &Manifest,
    mut request: FetchRequest,
) -> Result<FetchResponse, FetchError> {
    checked(active, manifest, &request)?;
    let deadline = Instant::now() + request.timeout;
    let _connection = tokio::time::timeout_at(deadline, active.connections.clone().acquire_owned())
        .await
        .map_err(|_| {
            FetchError::Overloaded(format!(
                "the worker's {} egress connections stayed busy until the timeout",
                active.policy.max_per_worker
            ))
        })?
        .map_err(|_| FetchError::Network("the egress client is closing".into()))?;
    for hop in 0..=MAX_REDIRECTS {
        let response = tokio::time::timeout_at(deadline, send(active, &request))
            .await
            .map_err(|_| timed_out(&request))??;
        let status = response.status();
        let location = redirect_location(&request, &response);
        let Some(location) = location else {
            return read(active, &request, response, deadline).await;
        };
        if hop == MAX_REDIRECTS {
            return Err(FetchError::Network(format!(
                "more than {MAX_REDIRECTS} redirects (the last to {location})"
            )));
        }
        let next = Target::parse(&location).map_err(|e| {
            FetchError::Network(format!("a redirect to a URL that cannot be fetched: {e}"))
        })?;
        allowed(manifest, &next).map_err(|e| {
            FetchError::Denied(format!(
                "a redirect from {} to {}: {e}",
                request.target.origin(),
                next.origin()
            ))
        })?;
        if next.origin() != request.target.origin() {
            for name in CREDENTIALS {
                request.headers.remove(name);
            }
        }
        let keep_method = matches!(
            status,
            StatusCode::TEMPORARY_REDIRECT | StatusCode::PERMANENT_REDIRECT
        );
        if !keep_method && request.method != Method::HEAD {
            request.method = Method::GET;
            request.body = Bytes::new();
            request.headers.remove(header::CONTENT_TYPE);
        }
        request.target = next;
    }
    unreachable!("the loop returns by its last hop")
}

/// The absolute URL a followed redirect goes to, if `response` is one.
fn redirect_location(
    request: &FetchRequest,
    response: &hyper::Response<hyper::body::Incoming>,
) -> Option<String> {
    if !request.follow || !response.status().is_redirection() {
        return None;
    }
    if !matches!(response.status().as_u16(), 301 | 302 | 303 | 307 | 308) {
        return None;
    }
    let location = response.headers().get(header::LOCATION)?.to_str().ok()?;
    Some(resolve(&request.target, location))
}

/// `location` made absolute against `base`, as far as redirects need:
/// absolute URLs, `//host/...`, `/path` and `relative/path`.
fn resolve(base: &Target, location: &str) -> String {
    if location.contains("://") {
        location.to_owned()
    } else if let Some(rest) = location.strip_prefix("//") {
        format!("{}://{rest}", base.scheme.as_str())
    } else if location.starts_with('/') {
        format!("{}{location}", base.origin())
    } else {
        let path = base.path_and_query.split('?').next().unwrap_or("/");
        let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
        format!("{}{dir}{location}", base.origin())
    }
}

async fn send(
    active: &Active,
    request: &FetchRequest,
) -> Result<hyper::Response<hyper::body::Incoming>, FetchError> {
    let mut builder = hyper::Request::builder()
        .method(request.method.clone())
        .uri(request.target.url());
    if let Some(headers) = builder.headers_mut() {
        headers.extend(request.headers.clone());
    }
    let req = builder
        .body(Full::new(request.body.clone()))
        .map_err(|e| FetchError::BadRequest(format!("cannot build the request: {e}")))?;
    active
        .client
        .request(req)
        .await
        .map_err(|e| classify(&request.target, &e))
}

/// A client error as a fetch error: a guard's refusal is `egress_denied`,
/// the rest `network`, with every cause in the message.
fn classify(target: &Target, e: &hyper_util::client::legacy::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(ConnectError::Refused(refusal)) = err.downcast_ref::<ConnectError>() {
            return FetchError::Denied(format!("{}: {refusal}", target.origin()));
        }
        source = err.source();
    }
    FetchError::Network(format!("{}: {}", target.origin(), crate::causes::chain(e)))
}

fn timed_out(request: &FetchRequest) -> FetchError {
    FetchError::Timeout(format!(
        "{} gave no whole answer within {} ms",
        request.target.origin(),
        request.timeout.as_millis()
    ))
}

/// Reads the body, at most the policy's bytes, by `deadline`.
async fn read(
    active: &Active,
    request: &FetchRequest,
    response: hyper::Response<hyper::body::Incoming>,
    deadline: Instant,
) -> Result<FetchResponse, FetchError> {
    let limit = active.policy.max_response_bytes;
    let too_large = || {
        FetchError::TooLarge(format!(
            "{} answered more than {limit} bytes (the fleet's limit per response)",
            request.target.origin()
        ))
    };
    if let Some(length) = response
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && length > limit
    {
        return Err(too_large());
    }
    let (parts, mut body) = response.into_parts();
    let mut bytes = BytesMut::new();
    loop {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .map_err(|_| timed_out(request))?;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| {
            FetchError::Network(format!(
                "{}: the body broke off: {}",
                request.target.origin(),
                crate::causes::chain(&e)
            ))
        })?;
        if let Some(data) = frame.data_ref() {
            if bytes.len() as u64 + data.len() as u64 > limit {
                return Err(too_large());
            }
            bytes.extend_from_slice(data);
        }
    }
    Ok(FetchResponse {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body: bytes.freeze(),
        url: request.target.url(),
    })
}

/// Whether a script may set header `name`.
pub fn settable(name: &HeaderName) -> bool {
    !RESERVED_HEADERS.contains(&name.as_str())
}

/// A header value from a script's string.
pub fn header_value(name: &str, value: &[u8]) -> Result<(HeaderName, HeaderValue), FetchError> {
    let name = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| FetchError::BadRequest(format!("{name:?} is not a header name")))?;
    if !settable(&name) {
        return Err(FetchError::BadRequest(format!(
            "header {name} is set by the host, not by scripts"
        )));
    }
    let value = HeaderValue::from_bytes(value).map_err(|_| {
        FetchError::BadRequest(format!(
            "the value of header {name} holds a line break or a control character"
        ))
    })?;
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redirect_location_is_made_absolute() {
        let base = Target::parse("https://a.io/x/y?q=1").unwrap();
        assert_eq!(resolve(&base, "https://b.io/z"), "https://b.io/z");
        assert_eq!(resolve(&base, "//c.io/z"), "https://c.io/z");
        assert_eq!(resolve(&base, "/z"), "https://a.io:443/z");
        assert_eq!(resolve(&base, "z?k"), "https://a.io:443/x/z?k");
    }

    #[test]
    fn a_script_cannot_set_host_or_smuggle_a_header() {
        assert!(header_value("Host", b"internal").is_err());
        assert!(header_value("content-length", b"1").is_err());
        assert!(header_value("x-a", b"1\r\nx-b: 2").is_err());
        assert!(header_value("bad name", b"1").is_err());
        assert!(header_value("Authorization", b"Bearer t").is_ok());
    }
}
