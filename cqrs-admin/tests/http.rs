//! The admin served over real HTTP, mounted at `/admin` as a service would: projections and
//! dead letters as JSON and on the page, retry and skip, a stream's events, and bad input (no
//! token, a malformed id, an unknown one) answered with a clear 4xx that changes nothing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cqrs_admin::Admin;
use cqrs_core::*;
use reqwest::StatusCode;
use serde_json::Value;

/// Refuses every event of stream `poison` while `poisoned` is set, with an error that needs
/// escaping on a page.
#[derive(Debug)]
struct Picky(Arc<AtomicBool>);

#[async_trait]
impl Projector for Picky {
    fn name(&self) -> &str {
        "picky"
    }
    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        if event.stream.id == "poison" && self.0.load(Ordering::SeqCst) {
            return Err("<b>refused</b> & kept".into());
        }
        Ok(())
    }
}

async fn until(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_and_drains_a_dead_letter_over_http() {
    let store = Arc::new(InMemoryEventStore::new());
    let dead = Arc::new(InMemoryDeadLetterStore::new());
    let poisoned = Arc::new(AtomicBool::new(true));
    let config = RunnerConfig {
        max_attempts: 1,
        dead_letter_interval: Duration::from_millis(20),
        ..RunnerConfig::default()
    };
    let runner = Arc::new(
        Runner::new(store.clone(), dead.clone())
            .with_config(config)
            .with(Checkpointed::new(
                Picky(poisoned.clone()),
                InMemoryCheckpointStore::new(),
            ))
            .start(),
    );
    let admin = Admin::new(runner.clone(), dead.clone(), store.clone()).with_token("s3cret");
    let app = axum::Router::new().nest("/admin", admin.router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/admin", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move {
            let resp = http.get(url).send().await.unwrap();
            let status = resp.status();
            (status, resp.text().await.unwrap())
        }
    };
    let json = |text: &str| serde_json::from_str::<Value>(text).unwrap();

    let stream = StreamId::new("account", "poison");
    let e = NewEvent::new("Deposited", serde_json::json!({ "amount": 5 }));
    store
        .append(&stream, ExpectedVersion::NoStream, vec![e], None)
        .await
        .unwrap();
    until("the event parked", async || {
        json(&get("/api/dead-letters").await.1)
            .as_array()
            .unwrap()
            .len()
            == 1
    })
    .await;
    let (s, p) = get("/api/projections").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (json(&p)[0]["name"].clone(), json(&p)[0]["parked"].clone()),
        ("picky".into(), 1.into())
    );
    let letters = json(&get("/api/dead-letters?subscriber=picky").await.1);
    let id = letters[0]["id"].as_str().unwrap().to_owned();
    let (s, page) = get("").await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("picky") && page.contains(&id), "{page}");
    assert!(
        page.contains("&lt;b&gt;refused&lt;/b&gt; &amp; kept"),
        "escaped: {page}"
    );
    let (s, events) = get("/api/streams/account/poison").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(json(&events)["events"][0]["payload"]["amount"], 5);

    // Bad input: answered with a clear 4xx, nothing changed.
    let post = |path: String, token: Option<&'static str>| {
        let (http, url) = (http.clone(), format!("{base}{path}"));
        async move {
            let mut req = http.post(url);
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status();
            (status, resp.text().await.unwrap())
        }
    };
    let (s, b) = post(format!("/api/dead-letters/{id}/retry"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    let (s, _) = post(format!("/api/dead-letters/{id}/retry"), Some("wrong")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, b) = post("/api/dead-letters/not-a-uuid/retry".into(), Some("s3cret")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert!(
        json(&b)["error"].as_str().unwrap().contains("not-a-uuid"),
        "{b}"
    );
    let unknown = uuid::Uuid::new_v4();
    let (s, _) = post(format!("/api/dead-letters/{unknown}/skip"), Some("s3cret")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = post(format!("/api/dead-letters/{id}/explode"), Some("s3cret")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = get(&format!("/dead-letters/{id}/retry")).await;
    assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "mutations are POST only");
    let form = http
        .post(format!("{base}/dead-letters/{id}/skip"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        dead.list(None).await.unwrap()[0].status,
        DeadLetterStatus::Parked
    );

    // The cause fixed, a retry drains the letter.
    poisoned.store(false, Ordering::SeqCst);
    let (s, b) = post(format!("/api/dead-letters/{id}/retry"), Some("s3cret")).await;
    assert_eq!(
        (s, json(&b)["status"].clone()),
        (StatusCode::OK, "retry_requested".into())
    );
    until("the letter drained", async || {
        dead.list(None).await.unwrap().is_empty()
    })
    .await;
    assert!(get("").await.1.contains("No dead letters."));

    // The page's form skips, then sends the browser back to the page.
    poisoned.store(true, Ordering::SeqCst);
    let e = NewEvent::new("Deposited", serde_json::json!({ "amount": 6 }));
    store
        .append(&stream, ExpectedVersion::Exact(1), vec![e], None)
        .await
        .unwrap();
    until("parked again", async || {
        dead.list(None).await.unwrap().len() == 1
    })
    .await;
    let id = dead.list(None).await.unwrap()[0].id;
    let form = http
        .post(format!("{base}/dead-letters/{id}/skip"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("token=s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::SEE_OTHER);
    assert_eq!(form.headers()["location"], "/admin");
    assert!(dead.list(None).await.unwrap().is_empty());
}
