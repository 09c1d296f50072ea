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
