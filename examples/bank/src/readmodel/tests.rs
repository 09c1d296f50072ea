//! Tests of the read models: batches write what their events write one by one, and a row
//! never goes backwards, on SQLite and on PostgreSQL.
use cqrs_core::{Cursor, DomainEvent, Metadata, NewEvent, RecordedEvent, StreamId};
use cqrs_postgres::PgProjector;
use cqrs_sqlite::SqliteProjector;
use sqlx::{Connection, PgConnection, Sqlite, SqliteConnection};

use super::*;
use crate::domain::account::AccountEvent;
use crate::domain::transfer::TransferEvent;

/// `event` as recorded at `version` of stream `kind`/`id`, at global position `position`.
fn recorded(
    kind: &str,
    id: &str,
    version: u64,
    position: u64,
    event: &impl DomainEvent,
) -> RecordedEvent {
    let new = NewEvent::from_domain(event, Metadata::default()).unwrap();
    RecordedEvent {
        event_id: new.event_id,
        stream: StreamId::new(kind, id),
        stream_version: version,
        cursor: Cursor::new(0, position),
        recorded_at: chrono::Utc::now(),
        event_type: new.event_type,
        schema_version: 1,
        payload: new.payload.to_string(),
        metadata: new.metadata,
    }
}

/// An account history over five accounts, interleaved, as recorded events.
fn history() -> Vec<RecordedEvent> {
    let mut versions = [0u64; 5];
    let mut balances = [0u64; 5];
    let mut out = Vec::new();
    let mut seed = 42u64;
    for n in 0..300u64 {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let a = (seed >> 33) as usize % 5;
        let amount = 1 + (seed >> 40) % 500;
        let event = match versions[a] {
            0 => AccountEvent::Opened {
                owner: format!("o{a}"),
            },
            _ if a == 4 && versions[a] == 30 => {
                let amount = balances[a];
                balances[a] = 0;
                AccountEvent::Withdrawn { amount, balance: 0 }
            }
            _ if a == 4 && versions[a] == 31 => AccountEvent::Closed,
            _ if a == 4 && versions[a] > 31 => continue,
            v if v % 7 == 0 => AccountEvent::TransferSettled {
                transfer_id: uuid::Uuid::from_u128(n as u128),
            },
            _ if balances[a] >= amount && seed.is_multiple_of(3) => {
                balances[a] -= amount;
                AccountEvent::Withdrawn {
                    amount,
                    balance: balances[a],
                }
            }
            _ => {
                balances[a] += amount;
                AccountEvent::Deposited {
                    amount,
                    balance: balances[a],
                }
            }
        };
        versions[a] += 1;
        let position = out.len() as u64 + 1;
        out.push(recorded(
            "account",
            &format!("acc-{a}"),
            versions[a],
            position,
            &event,
        ));
    }
    out
}

async fn fresh() -> SqliteConnection {
    let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
    for model in ReadModel::ALL {
        SqliteProjector::setup(&SqlProjection(model), &mut conn)
            .await
            .unwrap();
    }
    conn
}

async fn table(conn: &mut SqliteConnection) -> Vec<AccountView> {
    sqlx::query_as("SELECT id, owner, balance, status, version FROM accounts ORDER BY id")
        .fetch_all(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_writes_what_its_events_write_one_by_one() {
    let events = history();
    let mut one_by_one = fresh().await;
    let accounts = SqlProjection(ReadModel::Accounts);
    for e in &events {
        SqliteProjector::handle(&accounts, &mut one_by_one, e)
            .await
            .unwrap();
    }
    let expected = table(&mut one_by_one).await;
    assert_eq!(expected.len(), 5);
    assert!(expected.iter().any(|r| r.status == "closed"));
    for size in [2, 7, 64, events.len()] {
        let mut batched = fresh().await;
        for chunk in events.chunks(size) {
            ReadModel::Accounts
                .project::<Sqlite>(&mut batched, chunk)
                .await
                .unwrap();
        }
        assert_eq!(table(&mut batched).await, expected, "batches of {size}");
    }
}

#[test]
fn read_models_know_their_names() {
    for m in ReadModel::ALL {
        assert_eq!(ReadModel::from_name(m.name()), Some(m));
    }
    assert_eq!(ReadModel::from_name("nope"), None);
}

/// An account's and a transfer's events, in order.
fn newer_and_older() -> (Vec<RecordedEvent>, Vec<RecordedEvent>) {
    let account = [
        AccountEvent::Opened {
            owner: "ann".into(),
        },
        AccountEvent::Deposited {
            amount: 100,
            balance: 100,
        },
        AccountEvent::Withdrawn {
            amount: 60,
            balance: 40,
        },
        AccountEvent::Closed,
    ];
    let transfer = [
        TransferEvent::Started {
            from: uuid::Uuid::from_u128(1),
            to: uuid::Uuid::from_u128(2),
            amount: 5,
        },
        TransferEvent::Debited,
        TransferEvent::Completed,
    ];
    let a = account.iter().zip(1..);
    let t = transfer.iter().zip(1..);
    (
        a.map(|(e, v)| recorded("account", "a", v, v, e)).collect(),
        t.map(|(e, v)| recorded("transfer", "t", v, 10 + v, e))
            .collect(),
    )
}

/// What `accounts` and `transfers` hold, as text.
type Rows = (Vec<AccountView>, Vec<TransferView>);

/// Delivers each history in order, then every older event again, one by one and as a batch
/// (a redelivery, or an event parked and retried late): the rows stay at the newest events.
/// `deliver` hands events to the projector of a model; `rows` reads both tables.
async fn never_backwards<C>(
    conn: &mut C,
    deliver: impl AsyncFn(&mut C, ReadModel, &[RecordedEvent]),
    rows: impl AsyncFn(&mut C) -> Rows,
) {
    let (account, transfer) = newer_and_older();
    for e in &account {
        deliver(conn, ReadModel::Accounts, std::slice::from_ref(e)).await;
    }
    for e in &transfer {
        deliver(conn, ReadModel::Transfers, std::slice::from_ref(e)).await;
    }
    let newest = rows(conn).await;
    assert_eq!(
        (newest.0[0].balance, newest.0[0].status.as_str()),
        (40, "closed")
    );
    assert_eq!(newest.1[0].status, "completed");
    for late in 0..account.len() - 1 {
        deliver(conn, ReadModel::Accounts, &account[late..late + 1]).await;
        deliver(conn, ReadModel::Accounts, &account[..=late]).await;
        assert_eq!(rows(conn).await, newest, "account event {} again", late + 1);
    }
    for late in 0..transfer.len() - 1 {
        deliver(conn, ReadModel::Transfers, &transfer[late..late + 1]).await;
        assert_eq!(
            rows(conn).await,
            newest,
            "transfer event {} again",
            late + 1
        );
    }
}

const ACCOUNTS: &str = "SELECT id, owner, balance, status, version FROM accounts ORDER BY id";
const TRANSFERS: &str =
    "SELECT id, from_account, to_account, amount, status, reason, version FROM transfers";

#[tokio::test]
async fn an_older_event_never_takes_a_row_back_on_sqlite() {
    let mut conn = fresh().await;
    never_backwards(
        &mut conn,
        async |conn: &mut SqliteConnection, model: ReadModel, events: &[RecordedEvent]| {
            SqliteProjector::handle_batch(&SqlProjection(model), conn, events)
                .await
                .unwrap();
        },
        async |conn: &mut SqliteConnection| {
            let a = sqlx::query_as(ACCOUNTS).fetch_all(&mut *conn).await;
            let t = sqlx::query_as(TRANSFERS).fetch_all(&mut *conn).await;
            (a.unwrap(), t.unwrap())
        },
    )
    .await;
}

#[tokio::test]
async fn an_older_event_never_takes_a_row_back_on_postgres() {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let mut conn = PgConnection::connect(&url)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is not reachable at {url}: {e}"));
    let schema = format!("bank_rows_{}", uuid::Uuid::new_v4().simple());
    let ddl = format!("CREATE SCHEMA {schema}; SET search_path TO {schema}");
    sqlx::raw_sql(sqlx::AssertSqlSafe(ddl))
        .execute(&mut conn)
        .await
        .unwrap();
    for model in ReadModel::ALL {
        sqlx::query(model.schema())
            .execute(&mut conn)
            .await
            .unwrap();
    }
    never_backwards(
        &mut conn,
        async |conn: &mut PgConnection, model: ReadModel, events: &[RecordedEvent]| {
            PgProjector::handle_batch(&SqlProjection(model), conn, events)
                .await
                .unwrap();
        },
        async |conn: &mut PgConnection| {
            let a = sqlx::query_as(ACCOUNTS).fetch_all(&mut *conn).await;
            let t = sqlx::query_as(TRANSFERS).fetch_all(&mut *conn).await;
            (a.unwrap(), t.unwrap())
        },
    )
    .await;
    let drop = format!("DROP SCHEMA {schema} CASCADE");
    sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
        .execute(&mut conn)
        .await
        .unwrap();
}
