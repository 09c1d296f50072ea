//! The operator commands: `bank projections`, `bank dead-letters list|retry|skip`, and the
//! refusals of `bank replay`.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bank::Backend;
use cqrs_core::{ExpectedVersion, NewEvent, StreamId};

use crate::support::{Server, sqlite_db};

fn bank(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_bank"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run bank")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test]
async fn projections_and_dead_letters_from_the_command_line() {
    let (_dir, db) = sqlite_db();
    // A poison event: an account event of a type no projector knows.
    let backend = Backend::open(&db).await.unwrap();
    let stream = StreamId::new("account", uuid::Uuid::new_v4().to_string());
    let poison = NewEvent::new("Bogus", serde_json::json!({"x": 1}));
    backend
        .events()
        .append(&stream, ExpectedVersion::NoStream, vec![poison], None)
        .await
        .unwrap();
    backend.close().await;

    let server = Server::start(&db);
    let c = server.client();
    let id = c.open("olga").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, p) = c.get("/projections").await;
        let parked: u64 = p
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["parked"].as_u64().unwrap())
            .sum();
        if parked == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the poison event was not parked: {p}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A read of the parked event is refused rather than answered without it.
    let (s, b) = c.get(&format!("/accounts/{}?after=1", stream.id)).await;
    assert_eq!(s, reqwest::StatusCode::INTERNAL_SERVER_ERROR, "{b}");
    // The poison event stopped nothing: later events are handled.
    let pos = c.deposit(&id, 10).await;
    let (_, a) = c.get(&format!("/accounts/{id}?after={pos}")).await;
    assert_eq!(a["balance"], 10);

    let out = bank(&["projections", "--database", &db]);
    assert!(out.status.success());
    let table = stdout(&out);
    for name in [
        "accounts",
        "statement",
        "transfers",
        "large_withdrawals",
        "transfer_process",
    ] {
        assert!(table.contains(name), "{table}");
    }
    assert!(table.contains("head position"), "{table}");

    let out = bank(&["dead-letters", "list", "--database", &db]);
    let list = stdout(&out);
    assert!(out.status.success() && list.contains("Bogus"), "{list}");
    let ids: Vec<String> = list
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    assert_eq!(ids.len(), 3, "{list}");

    let out = bank(&["dead-letters", "retry", &ids[0], "--database", &db]);
    assert!(out.status.success() && stdout(&out).contains("retry requested"));
    for id in &ids {
        let out = bank(&["dead-letters", "skip", id, "--database", &db]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The retried one may have been parked again meanwhile (it still fails): skip what is left.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = stdout(&bank(&["dead-letters", "list", "--database", &db]));
        if list.contains("no dead letters") {
            break;
        }
        for id in list
            .lines()
            .filter(|l| !l.starts_with(' '))
            .filter_map(|l| l.split_whitespace().next())
        {
            bank(&["dead-letters", "skip", id, "--database", &db]);
        }
        assert!(Instant::now() < deadline, "dead letters left: {list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let out = bank(&["dead-letters", "skip", &ids[1], "--database", &db]);
    assert!(
        !out.status.success(),
        "skipping an unknown dead letter fails"
    );

    drop(server);
    let out = bank(&["replay", "transfer_process", "--database", &db]);
    assert!(!out.status.success());
    let out = bank(&["replay", "nope", "--database", &db]);
    assert!(
        !out.status.success()
            && String::from_utf8_lossy(&out.stderr).contains("unknown projection")
    );
}

#[test]
fn demo_runs_and_tells_the_story() {
    let out = bank(&["demo"]);
    let text = stdout(&out);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "completed",
        "failed",
        "refund",
        "flagged",
        "identical, row for row",
        // Refusals in major units, like the amounts beside them.
        "balance 250.00, requested 10,000.00",
    ] {
        assert!(
            text.contains(needle),
            "demo output lacks {needle:?}:\n{text}"
        );
    }
}

#[tokio::test]
async fn serve_honours_database_url_and_stops_cleanly_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let (dir, _) = sqlite_db();
    let db = dir
        .path()
        .join("elsewhere.db")
        .to_string_lossy()
        .into_owned();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bank"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", &db)
        .env("RUST_LOG", "error")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = format!(
        "http://{}",
        line.split("http://")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
    );
    let c = crate::support::Client::new(&base);
    let id = c.open("tess").await;
    c.deposit(&id, 42).await;

    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "bank serve exits 0 on SIGTERM: {status}");

    // The events went to DATABASE_URL, not to ./bank.db.
    assert!(
        !dir.path().join("bank.db").exists(),
        "the default ./bank.db was not used"
    );
    let backend = Backend::open(&db).await.unwrap();
    assert_eq!(backend.events().head_position().await.unwrap(), 2);
    backend.close().await;
}

/// The poison scenario of sequenced dead letters: an account's v3 fails in two read models, so
/// v4 and v5 wait behind it (held) instead of passing it; retried once the cause is gone, the
/// account ends at its latest balance and version and its statement is complete, in order.
#[tokio::test]
async fn a_parked_event_holds_back_its_account_until_retried_then_the_read_models_catch_up() {
    let (_dir, db) = sqlite_db();
    let server = Server::start(&db);
    let c = server.client();
    let id = c.open("petra").await;
    c.deposit(&id, 100).await;
    // The read models refuse v3 of this account (a fault of their database, say).
    let pool = sqlx::SqlitePool::connect(&format!("sqlite:{db}"))
        .await
        .unwrap();
    let poison = format!(
        "CREATE TRIGGER poison_accounts BEFORE UPDATE ON accounts \
         WHEN NEW.id = '{id}' AND OLD.version < 3 AND NEW.version >= 3 \
         BEGIN SELECT RAISE(ABORT, 'poisoned'); END; \
         CREATE TRIGGER poison_statement BEFORE INSERT ON statement \
         WHEN NEW.account_id = '{id}' AND NEW.version = 3 BEGIN SELECT RAISE(ABORT, 'poisoned'); END;"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(poison))
        .execute(&pool)
        .await
        .unwrap();
    for amount in [200, 300, 400] {
        c.deposit(&id, amount).await;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let list = loop {
        let list = stdout(&bank(&["dead-letters", "list", "--database", &db]));
        if list.matches("held behind it").count() == 4 {
            break list;
        }
        assert!(Instant::now() < deadline, "v4 and v5 not held: {list}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Parked v3 in each read model, with v4 and v5 listed under it.
    let blockers: Vec<&str> = list
        .lines()
        .filter(|l| !l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(blockers.len(), 2, "{list}");
    assert!(list.contains(" v3 ") && list.contains("parked"), "{list}");
    let (_, a) = c.get(&format!("/accounts/{id}")).await;
    assert_eq!(
        (a["balance"].as_i64(), a["version"].as_i64()),
        (Some(100), Some(2)),
        "{a}"
    );
    let (_, p) = c.get("/projections").await;
    let accounts = p
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "accounts")
        .unwrap();
    assert_eq!(accounts["blocked_streams"], 1, "{p}");

    // The cause removed, the parked events retried: v3, then v4 and v5, in order.
    sqlx::raw_sql("DROP TRIGGER poison_accounts; DROP TRIGGER poison_statement;")
        .execute(&pool)
        .await
        .unwrap();
    for blocker in &blockers {
        let out = bank(&["dead-letters", "retry", blocker, "--database", &db]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !stdout(&bank(&["dead-letters", "list", "--database", &db])).contains("no dead letters") {
        assert!(
            Instant::now() < deadline,
            "the account's stream was not released"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (_, a) = c.get(&format!("/accounts/{id}")).await;
    assert_eq!(
        (a["balance"].as_i64(), a["version"].as_i64()),
        (Some(1000), Some(5)),
        "{a}"
    );
    let (_, lines) = c.get(&format!("/accounts/{id}/statement")).await;
    let lines: Vec<(i64, i64)> = lines["lines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["version"].as_i64().unwrap(),
                l["balance"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(lines, [(2, 100), (3, 300), (4, 600), (5, 1000)]);
    pool.close().await;
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_span_fields() {
    use std::io::{BufRead, BufReader};
    let (_dir, db) = sqlite_db();
    let mut child = Command::new(env!("CARGO_BIN_EXE_bank"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database", &db])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info,cqrs_core=debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = format!(
        "http://{}",
        line.split("http://")
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
    );
    let c = crate::support::Client::new(&base);
    let id = c.open("ida").await;
    // A refused withdrawal: the command span logs its failure at debug.
    c.post(
        &format!("/accounts/{id}/withdraw"),
        serde_json::json!({ "amount": 5 }),
    )
    .await;
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .all(|l| l["level"].is_string() && l["fields"].is_object())
    );
    let refused = lines
        .iter()
        .find(|l| l["fields"]["message"] == "command failed")
        .unwrap_or_else(|| panic!("no command failure logged: {lines:#?}"));
    assert_eq!(refused["span"]["name"], "command");
    assert_eq!(refused["span"]["stream_id"], id.as_str());
    assert_eq!(refused["fields"]["outcome"], "rejected");
}
