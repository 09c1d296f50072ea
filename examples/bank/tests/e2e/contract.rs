//! The HTTP contract, every error code, idempotency keys and read-your-writes, on the embedded
//! store and on PostgreSQL.

use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{Client, Server, pg_db, sqlite_db};

#[tokio::test]
async fn contract_on_the_embedded_store() {
    let (_dir, db) = sqlite_db();
    let server = Server::start(&db);
    contract(&server.client()).await;
}

#[tokio::test]
async fn contract_on_postgres() {
    let Some(db) = pg_db().await else { return };
    {
        let server = Server::start(&db.url);
        contract(&server.client()).await;
    }
    db.drop_db().await;
}

async fn contract(c: &Client) {
    accounts_and_read_your_writes(c).await;
    transfers(c).await;
    errors(c).await;
    idempotency(c).await;
}

async fn accounts_and_read_your_writes(c: &Client) {
    let (s, b) = c.post("/accounts", json!({"owner": "alice"})).await;
    assert_eq!(s, StatusCode::CREATED);
    let id = b["id"].as_str().unwrap().to_owned();
    assert!(Uuid::parse_str(&id).is_ok());
    assert_eq!(b["version"], 1);
    let open_pos = b["position"].as_u64().unwrap();
    assert!(open_pos > 0);

    let (s, b) = c
        .post(&format!("/accounts/{id}/deposit"), json!({"amount": 1000}))
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["version"], 2);
    let pos = b["position"].as_u64().unwrap();
    assert!(pos > open_pos);

    // Read your own write: the row reflects the deposit at once with ?after.
    let (s, b) = c.get(&format!("/accounts/{id}?after={pos}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        b,
        json!({"id": id, "owner": "alice", "balance": 1000, "status": "open", "version": 2})
    );

    let (s, b) = c
        .post(&format!("/accounts/{id}/withdraw"), json!({"amount": 500}))
        .await;
    assert_eq!((s, b["version"].clone()), (StatusCode::OK, json!(3)));
    let (s, b) = c
        .post(&format!("/accounts/{id}/withdraw"), json!({"amount": 501}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(b["code"], "insufficient_funds");
    assert!(b["error"].as_str().unwrap().contains("insufficient"));
    let (s, b) = c.post(&format!("/accounts/{id}/close"), json!({})).await;
    assert_eq!(
        (s, b["code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("balance_not_zero"))
    );

    // Nothing was written by the refusals: the next command is version 4.
    let (s, b) = c
        .post(&format!("/accounts/{id}/withdraw"), json!({"amount": 500}))
        .await;
    assert_eq!((s, b["version"].clone()), (StatusCode::OK, json!(4)));
    let pos = b["position"].as_u64().unwrap();

    let (s, b) = c
        .get(&format!("/accounts/{id}/statement?after={pos}"))
        .await;
    assert_eq!(s, StatusCode::OK);
    let lines = b["lines"].as_array().unwrap();
    let kinds: Vec<_> = lines.iter().map(|l| l["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["deposit", "withdrawal", "withdrawal"]);
    let balances: Vec<_> = lines
        .iter()
        .map(|l| l["balance"].as_i64().unwrap())
        .collect();
    assert_eq!(balances, [1000, 500, 0]);
    assert_eq!(
        lines
            .iter()
            .map(|l| l["amount"].as_i64().unwrap())
            .sum::<i64>(),
        0
    );

    // Closing an empty account works without a body, and then it refuses money.
    let resp = reqwest::Client::new()
        .post(format!("{}/accounts/{id}/close", c.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let pos = resp.json::<Value>().await.unwrap()["position"]
        .as_u64()
        .unwrap();
    let (_, b) = c.get(&format!("/accounts/{id}?after={pos}")).await;
    assert_eq!(
        (b["status"].clone(), b["version"].clone()),
        (json!("closed"), json!(5))
    );
    let (s, b) = c
        .post(&format!("/accounts/{id}/deposit"), json!({"amount": 1}))
        .await;
    assert_eq!(
        (s, b["code"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("account_closed"))
    );

    // GET /projections: name, position, lag and parked count of each projector.
    let (s, b) = c.get("/projections").await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<_> = b
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "accounts",
            "large_withdrawals",
            "statement",
            "transfer_process",
            "transfers"
        ]
    );
    for p in b.as_array().unwrap() {
        assert!(
            p["position"].is_u64() && p["lag"].is_u64() && p["parked"] == 0,
            "{p}"
        );
    }
}

async fn transfers(c: &Client) {
    let (a, b) = (c.open("ann").await, c.open("ben").await);
    c.deposit(&a, 1_000).await;
    let (s, t) = c
        .post("/transfers", json!({"from": a, "to": b, "amount": 300}))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{t}");
    let tid = t["id"].as_str().unwrap().to_owned();
    let pos = t["position"].as_u64().unwrap();
    let (s, row) = c.get(&format!("/transfers/{tid}?after={pos}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (
            row["from"].clone(),
            row["to"].clone(),
            row["amount"].clone()
        ),
        (json!(a), json!(b), json!(300))
    );
    let done = c.finished_transfer(&tid).await;
    assert_eq!(done["status"], "completed");
    c.settle().await;
    let (_, ra) = c.get(&format!("/accounts/{a}")).await;
    let (_, rb) = c.get(&format!("/accounts/{b}")).await;
    assert_eq!(
        (ra["balance"].clone(), rb["balance"].clone()),
        (json!(700), json!(300))
    );

    // A closed target: the source is refunded and the transfer fails.
    let closed = c.open("cid").await;
    let (s, _) = c
        .post(&format!("/accounts/{closed}/close"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, t) = c
        .post(
            "/transfers",
            json!({"from": a, "to": closed, "amount": 200}),
        )
        .await;
    let done = c.finished_transfer(t["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed");
    assert!(
        done["reason"].as_str().unwrap().contains("closed"),
        "{done}"
    );
    c.settle().await;
    let (_, ra) = c.get(&format!("/accounts/{a}")).await;
    assert_eq!(ra["balance"], 700);
    let (_, st) = c.get(&format!("/accounts/{a}/statement")).await;
    let kinds: Vec<_> = st["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["deposit", "transfer_out", "transfer_out", "refund"]);

    // Insufficient funds: the transfer fails without a debit.
    let (_, t) = c
        .post("/transfers", json!({"from": b, "to": a, "amount": 301}))
        .await;
    let done = c.finished_transfer(t["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed");
    assert!(
        done["reason"].as_str().unwrap().contains("insufficient"),
        "{done}"
    );

    // A large withdrawal is flagged by the choreographed reaction.
    let rich = c.open("rich").await;
    c.deposit(&rich, 5_000_000).await;
    let (s, w) = c
        .post(
            &format!("/accounts/{rich}/withdraw"),
            json!({"amount": 2_000_000}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, flags) = c
        .get(&format!("/large-withdrawals?after={}", w["position"]))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        flags
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["account_id"] == json!(rich) && f["amount"] == 2_000_000)
    );
}

async fn errors(c: &Client) {
    let id = c.open("eve").await;
    let unknown = Uuid::new_v4();
    let expect = |s: StatusCode, b: &Value, status: u16, code: &str| {
        assert_eq!(s.as_u16(), status, "{b}");
        assert_eq!(b["code"], code, "{b}");
        assert!(b["error"].is_string(), "{b}");
    };
    // 400: malformed JSON, invalid fields, invalid ids.
    let (s, b) = c.post_raw("/accounts", "{\"owner\":".into(), None).await;
    expect(s, &b, 400, "malformed_json");
    let (s, b) = c.post_raw("/accounts", String::new(), None).await;
    expect(s, &b, 400, "malformed_json");
    let (s, b) = c.post_raw("/accounts", "[1, 2".into(), None).await;
    expect(s, &b, 400, "malformed_json");
    for body in [
        json!({}),
        json!({"owner": 5}),
        json!({"owner": ""}),
        json!({"owner": "   "}),
        json!({"owner": "x".repeat(201)}),
    ] {
        let (s, b) = c.post("/accounts", body).await;
        expect(s, &b, 400, "invalid_field");
    }
    for amount in [
        json!(0),
        json!(-5),
        json!(1.5),
        json!("10"),
        json!(1_000_000_000_001_u64),
        json!(null),
    ] {
        let (s, b) = c
            .post(
                &format!("/accounts/{id}/deposit"),
                json!({ "amount": amount }),
            )
            .await;
        expect(s, &b, 400, "invalid_field");
    }
    let (s, b) = c
        .post(
            &format!("/accounts/{id}/deposit"),
            json!({"amount": 1_000_000_000_000_u64}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "the maximum amount is accepted: {b}");
    let (s, b) = c
        .post("/accounts/not-a-uuid/deposit", json!({"amount": 1}))
        .await;
    expect(s, &b, 400, "invalid_id");
    let (s, b) = c.get("/accounts/not-a-uuid").await;
    expect(s, &b, 400, "invalid_id");
    let (s, b) = c.get(&format!("/accounts/{id}?after=soon")).await;
    expect(s, &b, 400, "invalid_field");
    let (s, b) = c
        .post("/transfers", json!({"from": "x", "to": id, "amount": 1}))
        .await;
    expect(s, &b, 400, "invalid_field");
    let (s, b) = c
        .post_raw("/accounts", json!({"owner": "k"}).to_string(), Some(""))
        .await;
    expect(s, &b, 400, "invalid_idempotency_key");
    // 404: unknown accounts, transfers and routes.
    let (s, b) = c.get(&format!("/accounts/{unknown}")).await;
    expect(s, &b, 404, "not_found");
    let (s, b) = c.get(&format!("/accounts/{unknown}/statement")).await;
    expect(s, &b, 404, "not_found");
    let (s, b) = c.get(&format!("/transfers/{unknown}")).await;
    expect(s, &b, 404, "not_found");
    let (s, b) = c
        .post(
            &format!("/accounts/{unknown}/deposit"),
            json!({"amount": 1}),
        )
        .await;
    expect(s, &b, 404, "not_found");
    let (s, b) = c
        .post(&format!("/accounts/{unknown}/close"), json!({}))
        .await;
    expect(s, &b, 404, "not_found");
    let (s, b) = c
        .post(
            "/transfers",
            json!({"from": id, "to": unknown, "amount": 1}),
        )
        .await;
    expect(s, &b, 404, "not_found");
    let (s, b) = c
        .post(
            "/transfers",
            json!({"from": unknown, "to": id, "amount": 1}),
        )
        .await;
    expect(s, &b, 404, "not_found");
    let (s, b) = c.get("/no/such/route").await;
    expect(s, &b, 404, "not_found");
    // 422: broken rules.
    let (s, b) = c
        .post("/transfers", json!({"from": id, "to": id, "amount": 1}))
        .await;
    expect(s, &b, 422, "same_account");
    let (s, b) = c
        .post(
            &format!("/accounts/{id}/withdraw"),
            json!({"amount": 1_000_000_000_000_u64}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = c
        .post(&format!("/accounts/{id}/withdraw"), json!({"amount": 1}))
        .await;
    expect(s, &b, 422, "insufficient_funds");
    // A position past the end of the log cannot be waited for.
    let (s, b) = c.get(&format!("/accounts/{id}?after=999999999")).await;
    expect(s, &b, 400, "invalid_field");
}

async fn idempotency(c: &Client) {
    let key = Uuid::new_v4().to_string();
    let first = c.post_key("/accounts", json!({"owner": "ida"}), &key).await;
    let again = c.post_key("/accounts", json!({"owner": "ida"}), &key).await;
    assert_eq!(first.0, StatusCode::CREATED);
    assert_eq!(first, again, "the same key gives the same answer");
    let id = first.1["id"].as_str().unwrap().to_owned();

    let dkey = Uuid::new_v4().to_string();
    let d1 = c
        .post_key(
            &format!("/accounts/{id}/deposit"),
            json!({"amount": 100}),
            &dkey,
        )
        .await;
    let d2 = c
        .post_key(
            &format!("/accounts/{id}/deposit"),
            json!({"amount": 100}),
            &dkey,
        )
        .await;
    assert_eq!((d1.0, &d1.1), (StatusCode::OK, &d2.1));
    let wkey = Uuid::new_v4().to_string();
    let w1 = c
        .post_key(
            &format!("/accounts/{id}/withdraw"),
            json!({"amount": 30}),
            &wkey,
        )
        .await;
    let w2 = c
        .post_key(
            &format!("/accounts/{id}/withdraw"),
            json!({"amount": 30}),
            &wkey,
        )
        .await;
    assert_eq!((w1.0, &w1.1), (StatusCode::OK, &w2.1));

    let other = c.open("ivo").await;
    let tkey = Uuid::new_v4().to_string();
    let t1 = c
        .post_key(
            "/transfers",
            json!({"from": id, "to": other, "amount": 20}),
            &tkey,
        )
        .await;
    let t2 = c
        .post_key(
            "/transfers",
            json!({"from": id, "to": other, "amount": 20}),
            &tkey,
        )
        .await;
    assert_eq!((t1.0, &t1.1), (StatusCode::ACCEPTED, &t2.1));
    c.finished_transfer(t1.1["id"].as_str().unwrap()).await;
    c.settle().await;

    // A refusal is an answer too: the same key gets it again, even once the request could
    // succeed, and nothing is appended.
    let rkey = Uuid::new_v4().to_string();
    let rich = c.open("ira").await;
    let path = format!("/accounts/{rich}/withdraw");
    let r1 = c.post_key(&path, json!({"amount": 1_000}), &rkey).await;
    assert_eq!(
        (r1.0, r1.1["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("insufficient_funds"))
    );
    let pos = c.deposit(&rich, 5_000).await;
    let r2 = c.post_key(&path, json!({"amount": 1_000}), &rkey).await;
    assert_eq!(r1, r2);
    // The key of a refused request, sent again with another request, is refused as reused.
    let r3 = c.post_key(&path, json!({"amount": 999}), &rkey).await;
    assert_eq!(
        (r3.0, r3.1["code"].as_str()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("idempotency_key_reused")
        )
    );
    let (_, b) = c.get(&format!("/accounts/{rich}?after={pos}")).await;
    assert_eq!(
        (b["balance"].as_i64(), b["version"].as_i64()),
        (Some(5_000), Some(2))
    );
    // A fresh key is a fresh request.
    let (s, _) = c
        .post_key(&path, json!({"amount": 1_000}), &Uuid::new_v4().to_string())
        .await;
    assert_eq!(s, StatusCode::OK);
    let missing = Uuid::new_v4();
    let tkey2 = Uuid::new_v4().to_string();
    let m1 = c
        .post_key(
            "/transfers",
            json!({"from": rich, "to": missing, "amount": 1}),
            &tkey2,
        )
        .await;
    let m2 = c
        .post_key(
            "/transfers",
            json!({"from": rich, "to": missing, "amount": 1}),
            &tkey2,
        )
        .await;
    assert_eq!((m1.0, &m1.1), (StatusCode::NOT_FOUND, &m2.1));

    // Nothing new was appended by the repeats: one deposit, one withdrawal, one transfer.
    let (_, a) = c.get(&format!("/accounts/{id}")).await;
    assert_eq!(a["balance"], 100 - 30 - 20);
    let (_, st) = c.get(&format!("/accounts/{id}/statement")).await;
    assert_eq!(st["lines"].as_array().unwrap().len(), 3, "{st}");
    let (_, b) = c.get(&format!("/accounts/{other}")).await;
    assert_eq!(b["balance"], 20);

    // A key used again for another request is refused, not answered with the first result,
    // and appends nothing.
    let reused =
        |r: &(StatusCode, serde_json::Value)| (r.0, r.1["code"].as_str().map(str::to_owned));
    let want = (
        StatusCode::UNPROCESSABLE_ENTITY,
        Some("idempotency_key_reused".to_owned()),
    );
    let d3 = c
        .post_key(
            &format!("/accounts/{id}/deposit"),
            json!({"amount": 999}),
            &dkey,
        )
        .await;
    assert_eq!(reused(&d3), want, "{:?}", d3.1);
    let o2 = c.post_key("/accounts", json!({"owner": "ada"}), &key).await;
    assert_eq!(reused(&o2), want, "{:?}", o2.1);
    let t3 = c
        .post_key(
            "/transfers",
            json!({"from": id, "to": other, "amount": 21}),
            &tkey,
        )
        .await;
    assert_eq!(reused(&t3), want, "{:?}", t3.1);
    // Also when the other request fails the service's own checks (same account, missing
    // account), and the first request still gets its first answer afterwards.
    let same = json!({"from": id, "to": id, "amount": 20});
    let t4 = c.post_key("/transfers", same, &tkey).await;
    assert_eq!(reused(&t4), want, "{:?}", t4.1);
    let first = json!({"from": id, "to": other, "amount": 20});
    let t5 = c.post_key("/transfers", first, &tkey).await;
    assert_eq!((t5.0, &t5.1), (StatusCode::ACCEPTED, &t1.1));
    c.settle().await;
    let (_, a) = c.get(&format!("/accounts/{id}")).await;
    assert_eq!((&a["owner"], &a["balance"]), (&json!("ida"), &json!(50)));
    // The same request with the same key still gets its first answer.
    let d4 = c
        .post_key(
            &format!("/accounts/{id}/deposit"),
            json!({"amount": 100}),
            &dkey,
        )
        .await;
    assert_eq!((d4.0, &d4.1), (StatusCode::OK, &d1.1));

    // Two requests racing with one key: one is carried out, the other refused.
    let racer = c.open("rae").await;
    let path = format!("/accounts/{racer}/deposit");
    let mut total = 0;
    for _ in 0..5 {
        let key = Uuid::new_v4().to_string();
        let (a, b) = tokio::join!(
            c.post_key(&path, json!({"amount": 1}), &key),
            c.post_key(&path, json!({"amount": 2}), &key),
        );
        let mut codes = [reused(&a), reused(&b)];
        codes.sort();
        assert_eq!(codes, [(StatusCode::OK, None), want.clone()], "{a:?} {b:?}");
        total += if a.0 == StatusCode::OK { 1 } else { 2 };
    }
    c.settle().await;
    let (_, r) = c.get(&format!("/accounts/{racer}")).await;
    assert_eq!(r["balance"], total, "one deposit per key");
}
