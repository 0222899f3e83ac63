//! The one error type of the server. Every failure a client can see maps to the spec's error JSON
//! (`errcode`, `error`, HTTP status, `retry_after_ms`); internal failures are logged and answered
//! with `M_UNKNOWN`, never with a panic.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use ruma::api::{
    OutgoingResponse,
    client::uiaa::{UiaaInfo, UiaaResponse},
    error::{ErrorBody, ErrorKind, LimitExceededErrorData, RetryAfter, StandardErrorBody},
};

/// Result type used across the server.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failure, as the client will see it.
#[derive(Debug)]
pub enum Error {
    /// A Matrix error with its status code.
    Matrix {
        status: StatusCode,
        kind: ErrorKind,
        message: String,
    },
    /// User-interactive authentication must continue (401 with the flows).
    Uiaa(Box<UiaaInfo>),
    /// A failure of the server itself (storage, serialization). Logged, answered as M_UNKNOWN.
    Internal(String),
}

impl Error {
    pub fn new(status: StatusCode, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self::Matrix {
            status,
            kind,
            message: message.into(),
        }
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorKind::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorKind::NotFound, message)
    }
    pub fn bad_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::BadJson, message)
    }
    pub fn invalid_param(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidParam, message)
    }
    pub fn unknown_token(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorKind::UnknownToken(Default::default()),
            message,
        )
    }
    pub fn limit_exceeded(retry_after: Duration) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::LimitExceeded({
                let mut data = LimitExceededErrorData::new();
                data.retry_after = Some(RetryAfter::Delay(retry_after));
                data
            }),
            "Too many requests; try again later",
        )
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }

    /// The errcode, for logs and tests.
    pub fn kind(&self) -> Option<&ErrorKind> {
        match self {
            Self::Matrix { kind, .. } => Some(kind),
            _ => None,
        }
    }

    fn into_ruma(self) -> UiaaResponse {
        match self {
            Error::Matrix {
                status,
                kind,
                message,
            } => UiaaResponse::MatrixError(
                ErrorBody::Standard(StandardErrorBody::new(kind, message)).into_error(status),
            ),
            Error::Uiaa(info) => UiaaResponse::AuthResponse(*info),
            Error::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                UiaaResponse::MatrixError(
                    ErrorBody::Standard(StandardErrorBody::new(
                        ErrorKind::Unknown,
                        "Internal server error".into(),
                    ))
                    .into_error(StatusCode::INTERNAL_SERVER_ERROR),
                )
            }
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Matrix {
                status,
                kind,
                message,
            } => {
                write!(f, "{status} {}: {message}", kind.errcode())
            }
            Error::Uiaa(_) => write!(f, "user-interactive authentication required"),
            Error::Internal(detail) => write!(f, "internal: {detail}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Self {
        Error::Internal(e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Internal(format!("json: {e}"))
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match self.into_ruma().try_into_http_response::<Vec<u8>>() {
            Ok(res) => res.map(axum::body::Body::from).into_response(),
            Err(e) => {
                tracing::error!("cannot serialize error response: {e}");
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            }
        }
    }
}
