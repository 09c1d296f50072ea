//! The admin the bank mounts at `/admin` (the `cqrs-admin` crate): its page and JSON over the
//! real server, and its mutations refused without the token `--admin-token` configures.

use reqwest::StatusCode;

use crate::support::{Server, sqlite_db};

#[tokio::test]
async fn the_admin_shows_the_projections_and_guards_its_mutations_with_the_token() {
    let (_dir, db) = sqlite_db();
    let server = Server::start_with(&db, &["--admin-token", "t0ken"]);
    let c = server.client();
    let id = c.open("ada").await;
    c.deposit(&id, 10).await;
    let http = reqwest::Client::new();

    let page = http
        .get(format!("{}/admin", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let page = page.text().await.unwrap();
    for name in ["accounts", "statement", "transfers", "transfer_process"] {
        assert!(page.contains(name), "{name} on the page: {page}");
    }
    let (s, p) = c.get("/admin/api/projections").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        p.as_array()
            .unwrap()
            .iter()
            .any(|p| p["name"] == "accounts"),
        "{p}"
    );
    let (s, letters) = c.get("/admin/api/dead-letters").await;
    assert_eq!((s, letters.as_array().unwrap().len()), (StatusCode::OK, 0));
    let (s, events) = c.get(&format!("/admin/api/streams/account/{id}")).await;
    assert_eq!(
        (s, events["version"].as_u64()),
        (StatusCode::OK, Some(2)),
        "{events}"
    );

    let post = |path: &str, token: Option<&str>| {
        let mut req = http.post(format!("{}{path}", server.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let unknown = uuid::Uuid::new_v4();
    let path = format!("/admin/api/dead-letters/{unknown}/retry");
    assert_eq!(
        post(&path, None).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(&path, Some("nope")).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post(&path, Some("t0ken")).await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let bad = "/admin/api/dead-letters/42/skip";
    assert_eq!(
        post(bad, Some("t0ken")).await.unwrap().status(),
        StatusCode::BAD_REQUEST
    );
}

/// A WebDriver session on a headless Chromium, spoken to over its JSON protocol.
struct Browser {
    driver: std::process::Child,
    http: reqwest::Client,
    session: String,
}

impl Browser {
    /// Starts `chromedriver` (from `CHROMEDRIVER`, else the PATH) and a headless session; `None`
    /// outside CI when there is no driver (under CI=true a missing driver fails the test).
    async fn start() -> Option<Browser> {
        let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let driver = match std::process::Command::new(&bin)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            Ok(d) => d,
            Err(e) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "chromedriver ({bin}) is needed under CI: {e}"
                );
                eprintln!("skipping: no chromedriver ({bin}): {e}");
                return None;
            }
        };
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let caps = serde_json::json!({ "capabilities": { "alwaysMatch": {
            "goog:chromeOptions": { "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"] }
        }}});
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let session = loop {
            if let Ok(r) = http
                .post(format!("{base}/session"))
                .json(&caps)
                .send()
                .await
            {
                let v: serde_json::Value = r.json().await.unwrap();
                let id = v["value"]["sessionId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("no session: {v}"));
                break format!("{base}/session/{id}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "chromedriver did not answer"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        Some(Browser {
            driver,
            http,
            session,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if !body.is_null() {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        r.json::<serde_json::Value>().await.unwrap()["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.call(
            reqwest::Method::POST,
            "/url",
            serde_json::json!({ "url": url }),
        )
        .await;
    }

    async fn source(&self) -> String {
        let v = self
            .call(reqwest::Method::GET, "/source", serde_json::Value::Null)
            .await;
        v.as_str().unwrap_or_default().to_owned()
    }

    async fn click(&self, css: &str) {
        let found = self
            .call(
                reqwest::Method::POST,
                "/element",
                serde_json::json!({ "using": "css selector", "value": css }),
            )
            .await;
        let id = found
            .as_object()
            .and_then(|o| o.values().next())
            .and_then(|v| v.as_str())
            .unwrap_or_else(|| panic!("no element {css}: {found}"))
            .to_owned();
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            serde_json::json!({}),
        )
        .await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_real_browser_a_parked_event_shows_and_a_click_on_retry_drains_it() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let (_dir, db) = sqlite_db();
    let server = Server::start_with(&db, &["--admin-token", "t0ken"]);
    let c = server.client();
    let id = c.open("grace").await;
    // The statement refuses this account's first deposit until the trigger goes.
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{db}"))
        .await
        .unwrap();
    let poison = format!(
        "CREATE TRIGGER poison BEFORE INSERT ON statement WHEN NEW.account_id = '{id}' \
         BEGIN SELECT RAISE(ABORT, 'poisoned <now>'); END;"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(poison))
        .execute(&pool)
        .await
        .unwrap();
    c.deposit(&id, 10).await;

    let admin = format!("{}/admin", server.base);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        browser.open(&admin).await;
        let page = browser.source().await;
        assert!(
            page.contains("transfer_process"),
            "the projections listed: {page}"
        );
        if page.contains("poisoned &lt;now&gt;") && page.contains("class=\"status\">parked<") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no parked event shown: {page}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }

    // Fixed, then retried with a click (the token typed into the form).
    sqlx::raw_sql("DROP TRIGGER poison")
        .execute(&pool)
        .await
        .unwrap();
    let found = browser
        .call(
            reqwest::Method::POST,
            "/element",
            serde_json::json!({ "using": "css selector", "value": "form input[name=token]" }),
        )
        .await;
    let field = found
        .as_object()
        .and_then(|o| o.values().next())
        .and_then(|v| v.as_str())
        .unwrap()
        .to_owned();
    browser
        .call(
            reqwest::Method::POST,
            &format!("/element/{field}/value"),
            serde_json::json!({ "text": "t0ken" }),
        )
        .await;
    browser.click("button.retry").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let page = browser.source().await;
        if page.contains("No dead letters.") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the retry did not drain it: {page}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        browser.open(&admin).await;
    }
    let (_, st) = c.get(&format!("/accounts/{id}/statement")).await;
    let rows: Vec<(String, i64)> = sqlx::query_as("SELECT account_id, version FROM statement")
        .fetch_all(&pool)
        .await
        .unwrap();
    let page = browser.source().await;
    assert_eq!(
        st["lines"].as_array().unwrap().len(),
        1,
        "{st} rows {rows:?} page {page}"
    );
    pool.close().await;
}

#[tokio::test]
async fn metrics_are_scraped_in_the_prometheus_format_and_count_what_was_done() {
    let (_dir, db) = sqlite_db();
    let server = Server::start(&db);
    let c = server.client();
    let id = c.open("hedy").await;
    let mut last = 0;
    for amount in [1, 2, 3] {
        last = c.deposit(&id, amount).await;
    }
    // A refusal: more than the balance.
    let (s, _) = c
        .post(
            &format!("/accounts/{id}/withdraw"),
            serde_json::json!({ "amount": 100 }),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    c.get(&format!("/accounts/{id}?after={last}")).await;

    let text = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
    };
    assert_eq!(
        value("cqrs_commands_total{aggregate=\"account\",outcome=\"ok\"}"),
        4.0
    );
    assert_eq!(
        value("cqrs_commands_total{aggregate=\"account\",outcome=\"rejected\"}"),
        1.0
    );
    assert_eq!(
        value("cqrs_events_appended_total{aggregate=\"account\"}"),
        4.0
    );
    assert!(value("cqrs_subscriber_position{subscriber=\"accounts\"}") >= last as f64);
    assert!(
        text.contains("# TYPE cqrs_commands_total counter"),
        "{text}"
    );
}

#[tokio::test]
async fn the_admin_moves_to_an_address_of_its_own_with_admin_listen() {
    use std::io::{BufRead, BufReader};
    let (_dir, db) = sqlite_db();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_bank"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &db])
        .args(["--admin-listen", "127.0.0.1:0"])
        .env("RUST_LOG", "error")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let url = |line: &str| {
        let rest = line.split("http://").nth(1).unwrap();
        format!("http://{}", rest.split_whitespace().next().unwrap())
    };
    let (mut api, mut admin) = (String::new(), String::new());
    out.read_line(&mut api).unwrap();
    out.read_line(&mut admin).unwrap();
    let (api, admin) = (url(&api), url(&admin));
    assert!(admin.ends_with("/admin"), "{admin}");
    let status = |u: String| async move { reqwest::get(u).await.unwrap().status() };
    assert_eq!(status(admin.clone()).await, StatusCode::OK);
    assert_eq!(
        status(admin.replace("/admin", "/metrics")).await,
        StatusCode::OK
    );
    assert_eq!(
        status(format!("{api}/admin")).await,
        StatusCode::NOT_FOUND,
        "not beside the API"
    );
    assert_eq!(
        status(format!("{api}/metrics")).await,
        StatusCode::NOT_FOUND
    );
    assert_eq!(status(format!("{api}/projections")).await, StatusCode::OK);
    child.kill().unwrap();
    child.wait().unwrap();
}
