//! JSON in and out, with JSON errors for every rejection: axum's plain-text rejections never
//! reach a client.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::BankError;

/// The error body: `{"error": "...", "code": "..."}`.
#[derive(Debug, Serialize)]
struct ErrorBody<'a> {
    error: String,
    code: &'a str,
}

/// A JSON error response.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<BankError> for ApiError {
    fn from(e: BankError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = match &e {
            BankError::Store(inner) => {
                tracing::error!(error = %cqrs_core::error_chain(inner), "storage error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        ApiError {
            status,
            code: e.code(),
            message,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(ErrorBody {
                error: self.message,
                code: self.code,
            }),
        )
            .into_response()
    }
}

/// A JSON request body. Read whatever the content type says: a client that forgets the
/// header still gets a precise 400 rather than a 415.
#[derive(Debug)]
pub(crate) struct Body<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes =
            axum::body::Bytes::from_request(req, state)
                .await
                .map_err(|e: BytesRejection| {
                    ApiError::new(
                        e.status(),
                        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                            "too_large"
                        } else {
                            "bad_body"
                        },
                        e.body_text(),
                    )
                })?;
        // NOTE: two steps, so that any syntax error is `malformed_json` even when the
        // document's shape goes wrong before the error is reached.
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", e.to_string()))?;
        T::deserialize(value)
            .map(Body)
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", e.to_string()))
    }
}

/// The path parameter of a route with one, as text; bad percent-encoding is a JSON 400.
#[derive(Debug)]
pub(crate) struct PathId(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(id) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e: PathRejection| {
                    ApiError::new(StatusCode::BAD_REQUEST, "invalid_id", e.body_text())
                })?;
        Ok(PathId(id))
    }
}

/// Query parameters; a malformed one is a JSON 400.
#[derive(Debug)]
pub(crate) struct Query<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(q) = axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map_err(|e: QueryRejection| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_field", e.body_text())
            })?;
        Ok(Query(q))
    }
}

/// The longest idempotency key accepted.
pub(crate) const MAX_KEY_LEN: usize = 255;

/// The `Idempotency-Key` header, if present; an empty, oversized or non-text one is a 400.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = |why: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_idempotency_key",
            why.to_owned(),
        )
    };
    let key = value
        .to_str()
        .map_err(|_| bad("Idempotency-Key must be visible ASCII"))?;
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(bad("Idempotency-Key must be 1 to 255 characters"));
    }
    Ok(Some(key.to_owned()))
}
