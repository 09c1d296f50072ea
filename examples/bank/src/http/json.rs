//! JSON in and out, with a JSON error for every rejection: axum's plain-text rejections never
//! reach a client.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use crate::error::BankError;

/// A JSON error response: `{"error": "...", "code": "..."}`.
#[derive(Debug)]
pub(crate) struct ApiError(
    pub(crate) StatusCode,
    pub(crate) &'static str,
    pub(crate) String,
);

fn bad_request(code: &'static str, message: impl ToString) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, code, message.to_string())
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
        ApiError(status, e.code(), message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.2, "code": self.1 });
        (self.0, axum::Json(body)).into_response()
    }
}

/// A JSON request body, read whatever the content type says: a client that forgets the header
/// still gets a precise 400 rather than a 415.
#[derive(Debug)]
pub(crate) struct Body<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                let code = match e.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => "too_large",
                    _ => "bad_body",
                };
                ApiError(e.status(), code, e.body_text())
            })?;
        // NOTE: two steps, so that any syntax error is `malformed_json` even when the
        // document's shape goes wrong before the error is reached.
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| bad_request("malformed_json", e))?;
        T::deserialize(value)
            .map(Body)
            .map_err(|e| bad_request("invalid_field", e))
    }
}

/// The UUID in the path of a route with one; anything else is a JSON 400.
#[derive(Debug)]
pub(crate) struct PathId(pub(crate) uuid::Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(id) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| bad_request("invalid_id", e.body_text()))?;
        let uuid = id
            .parse()
            .map_err(|_| bad_request("invalid_id", format!("{id:?} is not a UUID")))?;
        Ok(PathId(uuid))
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
            .map_err(|e| bad_request("invalid_field", e.body_text()))?;
        Ok(Query(q))
    }
}

/// The `Idempotency-Key` header, if present; an empty, oversized or non-text one is a 400.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let bad = |why| bad_request("invalid_idempotency_key", why);
    let key = value
        .to_str()
        .map_err(|_| bad("Idempotency-Key must be visible ASCII"))?;
    if key.is_empty() || key.len() > 255 {
        return Err(bad("Idempotency-Key must be 1 to 255 characters"));
    }
    Ok(Some(key.to_owned()))
}
