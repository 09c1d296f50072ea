//! The read models' projectors, fed recorded events by hand: a batch writes what its events
//! write one by one, and a row never goes backwards, on SQLite and on PostgreSQL.

use bank::{AccountEvent, AccountView, ReadModel, SqlProjection, TransferEvent, TransferView};
use cqrs_core::{Cursor, DomainEvent, Metadata, NewEvent, RecordedEvent, StreamId};
use cqrs_postgres::PgProjector;
use cqrs_sqlite::SqliteProjector;
use sqlx::{Connection, PgConnection, SqliteConnection};

use crate::support::{Rng, pg_url};

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

/// 300 account events over five accounts, interleaved; the fifth empties and closes.
fn history() -> Vec<RecordedEvent> {
    let (mut versions, mut balances) = ([0u64; 5], [0u64; 5]);
    let mut rng = Rng::new(42);
    let mut out = Vec::new();
    for n in 0..300u128 {
        let a = rng.below(5) as usize;
        let amount = 1 + rng.below(500);
        let event = match versions[a] {
            0 => AccountEvent::Opened {
                owner: format!("o{a}"),
            },
            30 if a == 4 => {
                let amount = std::mem::take(&mut balances[a]);
                AccountEvent::Withdrawn { amount, balance: 0 }
            }
            31 if a == 4 => AccountEvent::Closed,
            _ if a == 4 && versions[a] > 31 => continue,
            v if v % 7 == 0 => AccountEvent::TransferSettled {
                transfer_id: uuid::Uuid::from_u128(n),
            },
            _ if balances[a] >= amount && rng.below(3) == 0 => {
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

async fn fresh_sqlite() -> SqliteConnection {
    let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
    for model in ReadModel::ALL {
        SqliteProjector::setup(&SqlProjection(model), &mut conn)
            .await
            .unwrap();
    }
    conn
}

const ACCOUNTS: &str = "SELECT id, owner, balance, status, version FROM accounts ORDER BY id";
const TRANSFERS: &str =
    "SELECT id, from_account, to_account, amount, status, reason, version FROM transfers";

#[tokio::test]
async fn a_batch_writes_what_its_events_write_one_by_one() {
    let (events, accounts) = (history(), SqlProjection(ReadModel::Accounts));
    let mut one_by_one = fresh_sqlite().await;
    for e in &events {
        SqliteProjector::handle(&accounts, &mut one_by_one, e)
            .await
            .unwrap();
    }
    let expected: Vec<AccountView> = sqlx::query_as(ACCOUNTS)
        .fetch_all(&mut one_by_one)
        .await
        .unwrap();
    assert_eq!(expected.len(), 5);
    assert!(expected.iter().any(|r| r.status == "closed"));
    for size in [2, 7, 64, events.len()] {
        let mut batched = fresh_sqlite().await;
        for chunk in events.chunks(size) {
            SqliteProjector::handle_batch(&accounts, &mut batched, chunk)
                .await
                .unwrap();
        }
        let rows: Vec<AccountView> = sqlx::query_as(ACCOUNTS)
            .fetch_all(&mut batched)
            .await
            .unwrap();
        assert_eq!(rows, expected, "batches of {size}");
    }
}

#[test]
fn read_models_know_their_names() {
    for m in ReadModel::ALL {
        assert_eq!(ReadModel::from_name(m.name()), Some(m));
    }
    assert_eq!(ReadModel::from_name("nope"), None);
}

/// What `accounts` and `transfers` hold.
type Rows = (Vec<AccountView>, Vec<TransferView>);

/// Delivers an account's and a transfer's events in order, then every older event again, one
/// by one and as a batch (a redelivery, or an event parked and retried late): the rows stay
/// at the newest events. `deliver` hands events to a model's projector; `rows` reads both
/// tables.
async fn never_backwards<C>(
    conn: &mut C,
    deliver: impl AsyncFn(&mut C, ReadModel, &[RecordedEvent]),
    rows: impl AsyncFn(&mut C) -> Rows,
) {
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
    let (from, to) = (uuid::Uuid::from_u128(1), uuid::Uuid::from_u128(2));
    let transfer = [
        TransferEvent::Started {
            from,
            to,
            amount: 5,
        },
        TransferEvent::Debited,
        TransferEvent::Completed,
    ];
    let account: Vec<_> = (1..)
        .zip(&account)
        .map(|(v, e)| recorded("account", "a", v, v, e))
        .collect();
    let transfer: Vec<_> = (1..)
        .zip(&transfer)
        .map(|(v, e)| recorded("transfer", "t", v, 10 + v, e))
        .collect();
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

#[tokio::test]
async fn an_older_event_never_takes_a_row_back_on_sqlite() {
    let mut conn = fresh_sqlite().await;
    never_backwards(
        &mut conn,
        async |conn: &mut SqliteConnection, model, events: &[RecordedEvent]| {
            let projection = SqlProjection(model);
            SqliteProjector::handle_batch(&projection, conn, events)
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
    let url = pg_url();
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
        async |conn: &mut PgConnection, model, events: &[RecordedEvent]| {
            let projection = SqlProjection(model);
            PgProjector::handle_batch(&projection, conn, events)
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
