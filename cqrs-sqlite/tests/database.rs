//! Opening a database: pragmas, migrations, locations.

mod support;

use cqrs_core::{EventAppender, ExpectedVersion, NewEvent, StreamId, StreamReaderExt};
use cqrs_sqlite::{MIGRATOR, SqliteConfig, SqliteDatabase};
use serde_json::json;
use support::file_db;

async fn pragma(db: &SqliteDatabase, name: &str) -> String {
    // The pragma's table-valued function names its column after the pragma, except this one.
    let column = if name == "busy_timeout" {
        "timeout"
    } else {
        name
    };
    let sql = sqlx::AssertSqlSafe(format!("SELECT CAST({column} AS TEXT) FROM pragma_{name}"));
    sqlx::query_scalar(sql).fetch_one(db.pool()).await.unwrap()
}

#[tokio::test]
async fn a_file_is_in_wal_mode_with_foreign_keys_and_a_busy_timeout() {
    let (_dir, db) = file_db().await;
    assert_eq!(pragma(&db, "journal_mode").await, "wal");
    assert_eq!(pragma(&db, "foreign_keys").await, "1");
    assert_eq!(pragma(&db, "busy_timeout").await, "5000");
    assert_eq!(pragma(&db, "synchronous").await, "2", "FULL by default");
    let mut tx = db.begin_write().await.unwrap();
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(sync, 2, "the writer commits durably too");
    drop(tx);

    let dir = tempfile::tempdir().unwrap();
    let fast = SqliteConfig {
        durable: false,
        ..Default::default()
    };
    let db = SqliteDatabase::open_path(dir.path().join("fast.db"), fast)
        .await
        .unwrap();
    assert_eq!(
        pragma(&db, "synchronous").await,
        "1",
        "NORMAL when not durable"
    );
}

#[tokio::test]
async fn migrations_are_embedded_and_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("..").join("m.db");
    std::fs::create_dir(dir.path().join("nested")).unwrap();
    for _ in 0..2 {
        let db = SqliteDatabase::open_path(&path, SqliteConfig::default())
            .await
            .unwrap();
        let applied: Vec<i64> =
            sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
                .fetch_all(db.pool())
                .await
                .unwrap();
        let known: Vec<i64> = MIGRATOR.iter().map(|m| m.version).collect();
        assert_eq!(applied, known, "every embedded migration is applied, once");
        db.close().await;
    }
}

#[tokio::test]
async fn each_memory_database_is_private_and_shared_by_its_handle() {
    let a = SqliteDatabase::open("sqlite::memory:").await.unwrap();
    let b = SqliteDatabase::in_memory().await.unwrap();
    let stream = StreamId::new("mem", "1");
    let event = NewEvent::new("Noted", json!({}));
    a.events()
        .append(&stream, ExpectedVersion::NoStream, vec![event], None)
        .await
        .unwrap();
    assert_eq!(
        a.clone().events().stream_version(&stream).await.unwrap(),
        1,
        "clones share the database"
    );
    assert_eq!(
        b.events().stream_version(&stream).await.unwrap(),
        0,
        "another in-memory database is another database"
    );
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(a.pool())
        .await
        .unwrap();
    assert_eq!(n, 1, "the query pool sees the store's writes");
}

#[tokio::test]
async fn plain_paths_and_urls_open_files() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.db");
    let db = SqliteDatabase::open(plain.to_str().unwrap()).await.unwrap();
    db.close().await;
    assert!(plain.exists(), "a plain path is a file, created if missing");
    let url = format!("sqlite://{}?mode=rwc", dir.path().join("url.db").display());
    SqliteDatabase::open(&url).await.unwrap().close().await;
    assert!(dir.path().join("url.db").exists());
    let err = SqliteDatabase::open_path(
        dir.path().join("missing-dir").join("x.db"),
        SqliteConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, cqrs_core::Error::Backend(_)),
        "a file that cannot be created is an error: {err:?}"
    );
}
