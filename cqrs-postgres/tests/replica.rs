//! The all-stream on a hot standby and beside prepared (two-phase) transactions, on a
//! throwaway cluster of the machine's PostgreSQL (see `support::cluster`).

mod support;

use std::time::{Duration, Instant};

use cqrs_core::{
    AllStreamReader, Cursor, EventAppender, ExpectedVersion, NewEvent, StreamId, StreamReaderExt,
};
use cqrs_postgres::sqlx::{self, Connection, PgConnection};
use cqrs_postgres::{PgConfig, PgError, PgEventStore};
use support::cluster::Server;

fn event(n: u64) -> NewEvent {
    NewEvent::new("Added", serde_json::json!({ "n": n }))
}

async fn sql(url: &str, statements: &str) {
    let mut conn = PgConnection::connect(url).await.expect("connect");
    sqlx::raw_sql(sqlx::AssertSqlSafe(statements.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{statements}: {e}"));
    let _ = conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_all_stream_is_refused_on_a_hot_standby() {
    let primary = Server::primary();
    let store = PgEventStore::connect(&primary.url("postgres"), PgConfig::default())
        .await
        .expect("connect to the primary");
    let stream = StreamId::new("counter", "1");
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event(1)], None)
        .await
        .unwrap();
    // A writing transaction in flight on the primary: a standby's snapshot does not list it.
    let mut open = PgConnection::connect(&primary.url("postgres"))
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut open).await.unwrap();
    store
        .append_in(
            &mut open,
            &StreamId::new("counter", "2"),
            ExpectedVersion::NoStream,
            vec![event(2)],
            None,
        )
        .await
        .unwrap();
    store
        .append(&stream, ExpectedVersion::Exact(1), vec![event(3)], None)
        .await
        .unwrap();

    let standby = primary.standby();
    let replica =
        PgEventStore::connect(&standby.url("postgres"), PgConfig::default().migrate(false))
            .await
            .expect("connect to the standby");
    let deadline = Instant::now() + Duration::from_secs(20);
    while replica.stream_version(&stream).await.unwrap() < 2 {
        assert!(
            Instant::now() < deadline,
            "the standby did not replay: {}",
            standby.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One stream reads there (as of the standby's replay).
    assert_eq!(replica.read_stream(&stream, 1, 10).await.unwrap().len(), 2);

    let refused = |what: &str, r: Result<String, cqrs_core::Error>| match r {
        Err(e) => assert!(
            matches!(PgError::of(&e), Some(PgError::InRecovery)),
            "{what} on a standby failed otherwise: {e:?}"
        ),
        Ok(v) => panic!("{what} on a hot standby answered {v}: it must refuse"),
    };
    refused(
        "read_all",
        replica
            .read_all(Cursor::START, 100)
            .await
            .map(|e| format!("{} events", e.len())),
    );
    refused(
        "cursor_of",
        replica.cursor_of(1).await.map(|c| format!("{c:?}")),
    );
    refused(
        "diagnostics",
        replica.diagnostics().await.map(|d| format!("{d:?}")),
    );
    let message = replica.read_all(Cursor::START, 1).await.unwrap_err();
    assert!(
        std::error::Error::source(&message).is_some_and(|s| s.to_string().contains("recovery")),
        "the error says why: {message}"
    );

    // The primary still reads its all-stream, up to the open transaction.
    assert_eq!(store.read_all(Cursor::START, 100).await.unwrap().len(), 1);
    sqlx::raw_sql("COMMIT").execute(&mut open).await.unwrap();
    assert_eq!(store.read_all(Cursor::START, 100).await.unwrap().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_transactions_hold_the_watermark_only_in_their_database() {
    let primary = Server::primary();
    let url = primary.url("postgres");
    sql(&url, "CREATE DATABASE other").await;
    // A prepared transaction that wrote in another database.
    sql(
        &primary.url("other"),
        "CREATE TABLE t (x int); BEGIN; INSERT INTO t VALUES (1); PREPARE TRANSACTION 'other_db_tx'",
    )
    .await;
    let store = PgEventStore::connect(&url, PgConfig::default())
        .await
        .unwrap();
    let stream = StreamId::new("counter", "1");
    store
        .append(&stream, ExpectedVersion::NoStream, vec![event(1)], None)
        .await
        .unwrap();
    assert_eq!(
        store.read_all(Cursor::START, 100).await.unwrap().len(),
        1,
        "a prepared transaction of another database held the watermark"
    );
    let d = store.diagnostics().await.unwrap();
    let other = d
        .open_transactions
        .iter()
        .find(|t| t.gid.as_deref() == Some("other_db_tx"))
        .expect("diagnostics list the prepared transaction");
    assert!(!other.holds_watermark && other.pid.is_none());
    assert_eq!(other.database.as_deref(), Some("other"));
    assert!(d.blocker().is_none());

    // A prepared transaction of this database that wrote events holds the watermark, and
    // diagnostics name it.
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::raw_sql("BEGIN").execute(&mut conn).await.unwrap();
    store
        .append_in(
            &mut conn,
            &StreamId::new("counter", "2"),
            ExpectedVersion::NoStream,
            vec![event(2)],
            None,
        )
        .await
        .unwrap();
    sqlx::raw_sql("PREPARE TRANSACTION 'held_here'")
        .execute(&mut conn)
        .await
        .unwrap();
    store
        .append(&stream, ExpectedVersion::Exact(1), vec![event(3)], None)
        .await
        .unwrap();
    let seen = store.read_all(Cursor::START, 100).await.unwrap();
    assert_eq!(seen.len(), 1, "nothing passes the prepared transaction");
    let d = store.diagnostics().await.unwrap();
    assert_eq!(d.held_back, 1);
    let blocker = d.blocker().expect("a blocker is named");
    assert_eq!(
        (
            blocker.gid.as_deref(),
            blocker.pid,
            blocker.database.as_deref()
        ),
        (Some("held_here"), None, Some("postgres"))
    );
    sql(&url, "COMMIT PREPARED 'held_here'").await;
    let all = store.read_all(Cursor::START, 100).await.unwrap();
    assert_eq!(all.len(), 3, "its events arrive once it commits");
    sql(&primary.url("other"), "ROLLBACK PREPARED 'other_db_tx'").await;
}
