//! An admin any service built on the framework mounts: an axum [`Router`] with an HTML page for
//! people and the same data as JSON for scripts.
//!
//! - `GET /` (the mount point itself, `/admin` say): the page (projections, dead letters with
//!   retry and skip buttons, which post forms and come back to the page).
//! - `GET /api/projections`: every subscriber's [`SubscriberStatus`] (position, lag, whether
//!   this process runs it, last error, parked and blocked counts).
//! - `GET /api/dead-letters`: every [`DeadLetter`], oldest first (`?subscriber=` for one).
//! - `POST /api/dead-letters/{id}/retry` and `.../skip`: ask the running subscriber to try the
//!   letter again, or remove it (the stream's held events then follow).
//! - `GET /api/streams/{category}/{id}`: a stream's events with their metadata
//!   (`?from=` version, `?limit=`, at most 1,000).
//!
//! Mutations are POST only. With a token configured ([`Admin::with_token`]) they need it, as
//! `Authorization: Bearer <token>` (JSON) or the form field `token` (the page): without it
//! they answer 401 and change nothing. An id that is not a UUID is 400, an unknown one 404.
//!
//! ```no_run
//! use std::sync::Arc;
//! use cqrs_admin::Admin;
//! use cqrs_core::{InMemoryDeadLetterStore, InMemoryEventStore, Runner};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(InMemoryEventStore::new());
//! let dead_letters = Arc::new(InMemoryDeadLetterStore::new());
//! let runner = Arc::new(Runner::new(store.clone(), dead_letters.clone()).start());
//! let admin = Admin::new(runner, dead_letters, store).with_token("s3cret");
//! let app = axum::Router::new().nest("/admin", admin.router());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await?;
//! # Ok(()) }
//! ```

use std::fmt::Write as _;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Form, OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cqrs_core::{
    DeadLetter, DeadLetterStatus, DeadLetterStore, Error, EventStore, RunnerHandle, StreamId,
    StreamReaderExt, SubscriberStatus,
};
use serde::Deserialize;
use uuid::Uuid;

/// Where the admin reads the projections' status: a [`RunnerHandle`] (shared in an `Arc`), or
/// whatever a service keeps its runner behind.
#[async_trait]
pub trait ProjectionSource: Send + Sync + 'static {
    /// Every subscriber's status.
    async fn status(&self) -> cqrs_core::Result<Vec<SubscriberStatus>>;
}

#[async_trait]
impl ProjectionSource for RunnerHandle {
    async fn status(&self) -> cqrs_core::Result<Vec<SubscriberStatus>> {
        RunnerHandle::status(self).await
    }
}

#[async_trait]
impl<P: ProjectionSource + ?Sized> ProjectionSource for Arc<P> {
    async fn status(&self) -> cqrs_core::Result<Vec<SubscriberStatus>> {
        (**self).status().await
    }
}

/// The admin of one service: build it, then mount its [`router`](Admin::router).
#[derive(Clone)]
pub struct Admin {
    projections: Arc<dyn ProjectionSource>,
    dead_letters: Arc<dyn DeadLetterStore>,
    events: Arc<dyn EventStore>,
    token: Option<String>,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

impl Admin {
    /// An admin over the runner's status, the dead letters and the event store.
    pub fn new(
        projections: impl ProjectionSource,
        dead_letters: Arc<dyn DeadLetterStore>,
        events: Arc<dyn EventStore>,
    ) -> Self {
        Admin {
            projections: Arc::new(projections),
            dead_letters,
            events,
            token: None,
        }
    }

    /// Requires `token` for every mutation (retry, skip).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into()).filter(|t| !t.is_empty());
        self
    }

    /// The routes, to mount where the service likes (`Router::nest("/admin", ...)`).
    pub fn router(self) -> Router {
        Router::new()
            .route("/", get(page))
            .route("/api/projections", get(projections))
            .route("/api/dead-letters", get(dead_letters))
            .route("/api/dead-letters/{id}/{action}", post(act_json))
            .route("/dead-letters/{id}/{action}", post(act_form))
            .route("/api/streams/{category}/{id}", get(stream))
            .with_state(Arc::new(self))
    }

    fn allowed(&self, given: Option<&str>) -> bool {
        match &self.token {
            None => true,
            Some(token) => given.is_some_and(|g| g == token),
        }
    }

    async fn act(&self, id: &str, action: &str) -> Result<&'static str, Failure> {
        let id = Uuid::parse_str(id).map_err(|_| {
            Failure(
                StatusCode::BAD_REQUEST,
                format!("{id:?} is not a dead letter id"),
            )
        })?;
        match action {
            "retry" => {
                self.dead_letters
                    .set_status(id, DeadLetterStatus::RetryRequested)
                    .await?;
                Ok("retry_requested")
            }
            "skip" => {
                self.dead_letters.remove(id).await?;
                Ok("skipped")
            }
            other => Err(Failure(
                StatusCode::NOT_FOUND,
                format!("no action {other:?}: retry or skip"),
            )),
        }
    }
}

type Shared = State<Arc<Admin>>;

/// An error answer: its status and message, as JSON.
#[derive(Debug)]
struct Failure(StatusCode, String);

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        match e {
            Error::NotFound(what) => Failure(StatusCode::NOT_FOUND, format!("not found: {what}")),
            other => Failure(
                StatusCode::INTERNAL_SERVER_ERROR,
                cqrs_core::error_chain(&other),
            ),
        }
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

async fn projections(State(admin): Shared) -> Result<Json<Vec<SubscriberStatus>>, Failure> {
    Ok(Json(admin.projections.status().await?))
}

#[derive(Debug, Deserialize)]
struct Subscriber {
    subscriber: Option<String>,
}

async fn dead_letters(
    State(admin): Shared,
    Query(q): Query<Subscriber>,
) -> Result<Json<Vec<DeadLetter>>, Failure> {
    Ok(Json(
        admin.dead_letters.list(q.subscriber.as_deref()).await?,
    ))
}

async fn act_json(
    State(admin): Shared,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, Failure> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !admin.allowed(bearer) {
        return Err(Failure(
            StatusCode::UNAUTHORIZED,
            "a valid token is needed".into(),
        ));
    }
    let status = admin.act(&id, &action).await?;
    Ok(Json(serde_json::json!({ "id": id, "status": status })))
}

#[derive(Debug, Deserialize)]
struct TokenForm {
    token: Option<String>,
}

async fn act_form(
    State(admin): Shared,
    OriginalUri(uri): OriginalUri,
    Path((id, action)): Path<(String, String)>,
    Form(form): Form<TokenForm>,
) -> Response {
    // NOTE: the page is where this form's path ends in `/dead-letters/<id>/<action>`, wherever
    // the admin is mounted.
    let root = uri
        .path()
        .strip_suffix(&format!("/dead-letters/{id}/{action}"))
        .unwrap_or("");
    let page = if root.is_empty() { "/" } else { root }.to_owned();
    if !admin.allowed(form.token.as_deref()) {
        let html = notice("A valid token is needed.", &page);
        return (StatusCode::UNAUTHORIZED, Html(html)).into_response();
    }
    match admin.act(&id, &action).await {
        Ok(_) => (StatusCode::SEE_OTHER, [(header::LOCATION, page)]).into_response(),
        Err(Failure(status, message)) => (status, Html(notice(&message, &page))).into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct Range {
    from: Option<u64>,
    limit: Option<usize>,
}

async fn stream(
    State(admin): Shared,
    Path((category, id)): Path<(String, String)>,
    Query(range): Query<Range>,
) -> Result<Json<serde_json::Value>, Failure> {
    let stream = StreamId::new(category, id);
    let limit = range.limit.unwrap_or(100).clamp(1, 1_000);
    let events = admin
        .events
        .read_stream(&stream, range.from.unwrap_or(1).max(1), limit)
        .await?;
    let version = admin.events.stream_version(&stream).await?;
    Ok(Json(serde_json::json!({
        "stream": stream.to_string(),
        "version": version,
        "events": events,
    })))
}

async fn page(
    State(admin): Shared,
    OriginalUri(uri): OriginalUri,
) -> Result<Html<String>, Failure> {
    let root = escape(uri.path().trim_end_matches('/'));
    let projections = admin.projections.status().await?;
    let letters = admin.dead_letters.list(None).await?;
    let mut html = String::from(HEAD);
    html.push_str("<h1>Projections</h1><table id=\"projections\"><tr><th>name</th><th>position</th><th>lag</th><th>here</th><th>parked</th><th>blocked streams</th><th>last error</th></tr>");
    for p in &projections {
        let _ = write!(
            html,
            "<tr data-name=\"{name}\"><td>{name}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"parked\">{}</td><td>{}</td><td>{}</td></tr>",
            p.position,
            p.lag,
            if p.active { "yes" } else { "no" },
            p.parked,
            p.blocked_streams,
            escape(p.last_error.as_deref().unwrap_or("")),
            name = escape(&p.name),
        );
    }
    html.push_str("</table><h1>Dead letters</h1>");
    if letters.is_empty() {
        html.push_str("<p id=\"no-letters\">No dead letters.</p>");
    } else {
        html.push_str("<table id=\"dead-letters\"><tr><th>subscriber</th><th>event</th><th>status</th><th>attempts</th><th>error</th><th></th></tr>");
    }
    let token_field = if admin.token.is_some() {
        "<input type=\"password\" name=\"token\" placeholder=\"token\" required>"
    } else {
        ""
    };
    for l in &letters {
        let e = &l.event;
        let status = match l.status {
            DeadLetterStatus::Parked => "parked",
            DeadLetterStatus::Held => "held",
            _ => "retry requested",
        };
        let _ = write!(
            html,
            "<tr data-id=\"{id}\"><td>{}</td><td>{} v{} {} (position {})</td><td class=\"status\">{status}</td><td>{}</td><td>{}</td>\
             <td><form method=\"post\" action=\"{root}/dead-letters/{id}/retry\">{token_field}<button class=\"retry\">retry</button></form>\
             <form method=\"post\" action=\"{root}/dead-letters/{id}/skip\">{token_field}<button class=\"skip\">skip</button></form></td></tr>",
            escape(&l.subscriber),
            escape(&e.stream.to_string()),
            e.stream_version,
            escape(&e.event_type),
            e.cursor.position,
            l.attempts,
            escape(&l.error),
            id = l.id,
        );
    }
    if !letters.is_empty() {
        html.push_str("</table>");
    }
    html.push_str("</body></html>");
    Ok(Html(html))
}

const HEAD: &str = "<!doctype html><html><head><meta charset=\"utf-8\"><title>Admin</title>\
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}\
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}form{display:inline}</style>\
</head><body>";

fn notice(message: &str, page: &str) -> String {
    format!(
        "{HEAD}<p class=\"error\">{}</p><p><a href=\"{}\">Back</a></p></body></html>",
        escape(message),
        escape(page)
    )
}

/// Text as HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn text_is_escaped() {
        assert_eq!(
            super::escape("<b a='1'>&\"</b>"),
            "&lt;b a=&#39;1&#39;&gt;&amp;&quot;&lt;/b&gt;"
        );
    }
}
