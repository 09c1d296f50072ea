//! Tests of the module above.
use cqrs_core::{Cursor, Metadata, NewEvent, StreamId};
use sqlx::{Connection, SqliteConnection};

use super::*;

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
        let new = NewEvent::from_domain(&event, Metadata::default()).unwrap();
        out.push(RecordedEvent {
            event_id: new.event_id,
            stream: StreamId::new("account", format!("acc-{a}")),
            stream_version: versions[a],
            cursor: Cursor::new(0, out.len() as u64 + 1),
            recorded_at: chrono::Utc::now(),
            event_type: new.event_type,
            schema_version: 1,
            payload: new.payload,
            metadata: new.metadata,
        });
    }
    out
}

async fn apply(conn: &mut SqliteConnection, writes: Vec<Write>) {
    for Write { sql, args } in writes {
        let mut q = sqlx::query(sql);
        for a in args {
            q = match a {
                Arg::Text(s) => q.bind(s),
                Arg::Int(n) => q.bind(n),
                Arg::NullText => q.bind(None::<String>),
                Arg::NullInt => q.bind(None::<i64>),
            };
        }
        q.execute(&mut *conn).await.unwrap();
    }
}

async fn fresh() -> SqliteConnection {
    let mut conn = SqliteConnection::connect("sqlite::memory:").await.unwrap();
    for ddl in sql::SCHEMA {
        sqlx::query(*ddl).execute(&mut conn).await.unwrap();
    }
    conn
}

async fn table(conn: &mut SqliteConnection) -> Vec<(String, String, i64, String, i64)> {
    sqlx::query_as(sql::SELECT_ACCOUNTS)
        .fetch_all(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_batch_writes_what_its_events_write_one_by_one() {
    let events = history();
    let mut one_by_one = fresh().await;
    for e in &events {
        apply(&mut one_by_one, ReadModel::Accounts.writes(e).unwrap()).await;
    }
    let expected = table(&mut one_by_one).await;
    assert_eq!(expected.len(), 5);
    assert!(expected.iter().any(|r| r.3 == "closed"));
    for size in [1, 2, 7, 64, events.len()] {
        let mut batched = fresh().await;
        for chunk in events.chunks(size) {
            let writes = ReadModel::Accounts.batch_writes(chunk).unwrap();
            assert!(writes.len() <= chunk.len().min(5));
            apply(&mut batched, writes).await;
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
