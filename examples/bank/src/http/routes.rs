//! The routes and their handlers: each reads its request, calls the [`Bank`], answers JSON.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cqrs_admin::{Admin, ProjectionSource};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use tracing::Instrument;
use uuid::Uuid;

use super::json::{ApiError, Body, PathId, Query, idempotency_key};
use crate::domain::account::{MAX_OWNER_LEN, valid_owner};
use crate::domain::money::Amount;
use crate::error::BankError;
use crate::service::Bank;

type Shared = State<Arc<Bank>>;
type Reply = Result<Response, ApiError>;

/// The HTTP API of `bank`, ready to serve.
///
/// ```
/// # tokio::runtime::Runtime::new()?.block_on(async {
/// use std::sync::Arc;
/// use bank::{Backend, Bank, BankConfig};
///
/// let bank = Arc::new(Bank::start(Backend::open("sqlite::memory:").await?, BankConfig::default()));
/// let app = bank::router(bank.clone());
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// tokio::spawn(async move { axum::serve(listener, app).await });
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn router(bank: Arc<Bank>) -> Router {
    api(bank)
}

/// What `bank serve` serves beside the API.
#[derive(Debug, Default, Clone)]
pub struct Operations {
    /// The token the admin asks for before a mutation (none: anyone may retry and skip).
    pub admin_token: Option<String>,
    /// The installed Prometheus recorder, served at `GET /metrics` (none: no such route).
    pub metrics: Option<PrometheusHandle>,
}

/// [`router`], with the admin ([`cqrs_admin`], mounted at `/admin`: the page, and its JSON
/// under `/admin/api`) asking for the token of `ops`, and `GET /metrics` in the Prometheus text
/// format when `ops` has a recorder.
pub fn router_with(bank: Arc<Bank>, ops: Operations) -> Router {
    api(bank.clone()).merge(operations_router(bank, ops))
}

/// The admin (at `/admin`) and `GET /metrics` alone, to serve on an address of their own
/// (`bank serve --admin-listen`).
pub fn operations_router(bank: Arc<Bank>, ops: Operations) -> Router {
    let backend = bank.backend();
    let mut admin = Admin::new(
        Projections(bank.clone()),
        backend.dead_letters(),
        backend.events(),
    );
    if let Some(token) = ops.admin_token {
        admin = admin.with_token(token);
    }
    let mut app = Router::new().nest("/admin", admin.router());
    if let Some(metrics) = ops.metrics {
        app = app.route("/metrics", get(move || async move { metrics.render() }));
    }
    app
}

/// The bank's projections, as the admin reads them.
struct Projections(Arc<Bank>);

#[cqrs_core::async_trait]
impl ProjectionSource for Projections {
    async fn status(&self) -> cqrs_core::Result<Vec<cqrs_core::SubscriberStatus>> {
        self.0
            .projections()
            .await
            .map_err(cqrs_core::Error::backend)
    }
}

fn api(bank: Arc<Bank>) -> Router {
    Router::new()
        .route("/accounts", post(open_account))
        .route("/accounts/{id}", get(account))
        .route("/accounts/{id}/deposit", post(deposit))
        .route("/accounts/{id}/withdraw", post(withdraw))
        .route("/accounts/{id}/close", post(close))
        .route("/accounts/{id}/statement", get(statement))
        .route("/transfers", post(transfer))
        .route("/transfers/{id}", get(transfer_view))
        .route("/projections", get(projections))
        .route("/large-withdrawals", get(large_withdrawals))
        .fallback(async || ApiError(StatusCode::NOT_FOUND, "not_found", "no such route".into()))
        .method_not_allowed_fallback(async || {
            let message = "method not allowed on this route".into();
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                message,
            )
        })
        .layer(axum::middleware::from_fn(traced))
        .with_state(bank)
}

/// Each request in an `http.request` span that continues the caller's trace (its
/// `traceparent` header), so that the commands it runs and their events join that trace.
async fn traced(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(
            || request.uri().path().to_owned(),
            |p| p.as_str().to_owned(),
        );
    let span = tracing::info_span!(
        "http.request",
        method = %request.method(),
        route,
        status = tracing::field::Empty,
    );
    let parent = request.headers().get("traceparent");
    cqrs_core::trace::continue_from(&span, parent.and_then(|v| v.to_str().ok()));
    let response = next.run(request).instrument(span.clone()).await;
    span.record("status", response.status().as_u16());
    response
}

#[derive(Debug, Deserialize)]
struct OpenRequest {
    owner: String,
}

#[derive(Debug, Deserialize)]
struct AmountRequest {
    amount: Amount,
}

#[derive(Debug, Deserialize)]
struct TransferRequest {
    from: Uuid,
    to: Uuid,
    amount: Amount,
}

#[derive(Debug, Deserialize)]
struct After {
    after: Option<u64>,
}

fn ok(status: StatusCode, body: impl serde::Serialize) -> Reply {
    Ok((status, Json(body)).into_response())
}

async fn open_account(
    State(bank): Shared,
    headers: HeaderMap,
    Body(req): Body<OpenRequest>,
) -> Reply {
    let key = idempotency_key(&headers)?;
    if !valid_owner(&req.owner) {
        let message = format!("owner must be 1 to {MAX_OWNER_LEN} characters, not blank");
        return Err(BankError::invalid(message).into());
    }
    ok(
        StatusCode::CREATED,
        bank.open_account(&req.owner, key.as_deref()).await?,
    )
}

async fn deposit(
    State(bank): Shared,
    PathId(id): PathId,
    headers: HeaderMap,
    Body(req): Body<AmountRequest>,
) -> Reply {
    let key = idempotency_key(&headers)?;
    ok(
        StatusCode::OK,
        bank.deposit(id, req.amount, key.as_deref()).await?,
    )
}

async fn withdraw(
    State(bank): Shared,
    PathId(id): PathId,
    headers: HeaderMap,
    Body(req): Body<AmountRequest>,
) -> Reply {
    let key = idempotency_key(&headers)?;
    ok(
        StatusCode::OK,
        bank.withdraw(id, req.amount, key.as_deref()).await?,
    )
}

async fn close(State(bank): Shared, PathId(id): PathId, headers: HeaderMap) -> Reply {
    let key = idempotency_key(&headers)?;
    ok(StatusCode::OK, bank.close(id, key.as_deref()).await?)
}

async fn transfer(
    State(bank): Shared,
    headers: HeaderMap,
    Body(req): Body<TransferRequest>,
) -> Reply {
    let key = idempotency_key(&headers)?;
    let accepted = bank
        .transfer(req.from, req.to, req.amount, key.as_deref())
        .await?;
    ok(StatusCode::ACCEPTED, accepted)
}

async fn account(State(bank): Shared, PathId(id): PathId, Query(q): Query<After>) -> Reply {
    ok(StatusCode::OK, bank.account(id, q.after).await?)
}

async fn statement(State(bank): Shared, PathId(id): PathId, Query(q): Query<After>) -> Reply {
    let lines = bank.statement(id, q.after).await?;
    ok(
        StatusCode::OK,
        serde_json::json!({ "account": id, "lines": lines }),
    )
}

async fn transfer_view(State(bank): Shared, PathId(id): PathId, Query(q): Query<After>) -> Reply {
    ok(StatusCode::OK, bank.transfer_view(id, q.after).await?)
}

async fn projections(State(bank): Shared) -> Reply {
    ok(StatusCode::OK, bank.projections().await?)
}

async fn large_withdrawals(State(bank): Shared, Query(q): Query<After>) -> Reply {
    ok(StatusCode::OK, bank.large_withdrawals(q.after).await?)
}
