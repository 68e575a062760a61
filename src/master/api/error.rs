//! The API's error answer: a status and `{"error": {"code", "message"}}`,
//! with a stable code for programs. Every failure below the API (the hub,
//! the workers' tenant code, the catalogue, the store) maps to one here.

use crate::master::catalogue::CatalogueError;
use crate::master::db;
use crate::master::store::StoreError;
use crate::mesophyll::hub::HubError;
use crate::mesophyll::message::{ErrorKind, RemoteError};
use crate::rest::{ErrorBody, ErrorDetail};
use axum::Json;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

/// An error answer: a status, a stable code and a message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    detail: ErrorDetail,
}

impl ApiError {
    /// Its stable code (`bad_request`, `timeout`, ...).
    pub fn code(&self) -> &str {
        &self.detail.code
    }

    /// Its message for people.
    pub fn message(&self) -> &str {
        &self.detail.message
    }

    /// The HTTP status it answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            detail: ErrorDetail {
                code: code.to_owned(),
                message: message.into(),
            },
        }
    }

    /// The same error with its message rewritten by `f`.
    pub(crate) fn with_message(mut self, f: impl FnOnce(&str) -> String) -> Self {
        self.detail.message = f(&self.detail.message);
        self
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
}

/// Gives an error answer that is not an [`ErrorBody`] (axum's own
/// refusals: a query or a path that does not parse, a WebSocket upgrade
/// without its headers) the shape every other error has, keeping its
/// status and its text as the message.
pub(super) async fn as_error_body(res: Response) -> Response {
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let status = res.status();
    if json || !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let text = axum::body::to_bytes(res.into_body(), 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UPGRADE_REQUIRED => "upgrade_required",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    ApiError::new(status, code, text).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = (self.status, Json(ErrorBody { error: self.detail })).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("static header"),
            );
        }
        res
    }
}

impl From<RemoteError> for ApiError {
    fn from(e: RemoteError) -> Self {
        let status = match e.kind {
            ErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Memory
            | ErrorKind::Runtime
            | ErrorKind::Syntax
            | ErrorKind::TooLarge
            | ErrorKind::Rejected
            | ErrorKind::Filter => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::NotSubscribed => StatusCode::CONFLICT,
            ErrorKind::NotConfigured => StatusCode::CONFLICT,
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Overloaded | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal | ErrorKind::Unknown => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            detail: e.into(),
        }
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        match e {
            HubError::Remote(remote) => remote.into(),
            HubError::UnknownWorker(_) | HubError::WorkerUnavailable { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "worker_unavailable",
                e.to_string(),
            ),
            HubError::Overloaded(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", e.to_string())
            }
            HubError::DeadlineExceeded { .. } => Self::new(
                StatusCode::GATEWAY_TIMEOUT,
                "deadline_exceeded",
                e.to_string(),
            ),
            HubError::Codec(c) => {
                Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", c.to_string())
            }
        }
    }
}

impl From<db::EndpointError> for ApiError {
    fn from(e: db::EndpointError) -> Self {
        ApiError::new(e.status(), &e.body().code, e.body().message.clone())
    }
}

impl From<CatalogueError> for ApiError {
    fn from(e: CatalogueError) -> Self {
        match e {
            CatalogueError::Invalid(m) => ApiError::bad_request(m),
            CatalogueError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            CatalogueError::FromFolder(m) => ApiError::new(StatusCode::CONFLICT, "from_folder", m),
            CatalogueError::InUse(m) => ApiError::new(StatusCode::CONFLICT, "in_use", m),
            CatalogueError::Store(e) => e.into(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        db::EndpointError::from(e).into()
    }
}
