//! The bank-account shape every workload uses: an aggregate, its events, and the `accounts`
//! balance read model kept by a transactional PostgreSQL projector.

use std::collections::BTreeMap;

use cqrs_core::{Aggregate, BoxError, DomainEvent, RecordedEvent, Segment, async_trait};
use cqrs_postgres::PgProjector;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

/// What an account records. A deposit serializes to about 60 bytes of JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) enum AccountEvent {
    /// The account was opened.
    Opened { owner: String, currency: String },
    /// Money came in.
    Deposited {
        amount: u64,
        currency: String,
        reference: String,
    },
}

impl DomainEvent for AccountEvent {}

impl AccountEvent {
    /// The deposit number `n` of account `account`.
    pub(crate) fn deposit(account: usize, n: usize) -> Self {
        AccountEvent::Deposited {
            amount: 100,
            currency: "EUR".into(),
            reference: format!("acct-{account:05}-dep-{n:04}"),
        }
    }

    /// The opening of account `account`.
    pub(crate) fn opened(account: usize) -> Self {
        AccountEvent::Opened {
            owner: format!("owner-{account:05}-of-the-bench"),
            currency: "EUR".into(),
        }
    }
}

/// What an account can be asked to do.
#[derive(Debug)]
pub(crate) enum AccountCommand {
    Open(usize),
    Deposit(usize, usize),
}

/// Why an account refuses.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AccountError {
    #[error("already open")]
    AlreadyOpen,
    #[error("not open")]
    NotOpen,
}

/// The account aggregate.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct Account {
    open: bool,
    balance: u64,
    deposits: u64,
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn handle(&self, cmd: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        match cmd {
            AccountCommand::Open(_) if self.open => Err(AccountError::AlreadyOpen),
            AccountCommand::Open(a) => Ok(vec![AccountEvent::opened(*a)]),
            AccountCommand::Deposit(..) if !self.open => Err(AccountError::NotOpen),
            AccountCommand::Deposit(a, n) => Ok(vec![AccountEvent::deposit(*a, *n)]),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::Opened { .. } => self.open = true,
            AccountEvent::Deposited { amount, .. } => {
                self.balance += amount;
                self.deposits += 1;
            }
        }
    }
}

/// The account id of account number `n`.
pub(crate) fn account_id(n: usize) -> String {
    format!("acct-{n:05}")
}

/// Creates the read-model table in the connection's schema.
pub(crate) const CREATE_ACCOUNTS: &str = "CREATE TABLE IF NOT EXISTS accounts (\
     id TEXT PRIMARY KEY, owner TEXT, balance BIGINT NOT NULL, events BIGINT NOT NULL)";

/// One statement for a whole batch: the per-account changes, folded in memory, go in as arrays.
const UPSERT: &str = "INSERT INTO accounts (id, owner, balance, events) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[]) \
     ON CONFLICT (id) DO UPDATE SET owner = COALESCE(EXCLUDED.owner, accounts.owner), \
     balance = accounts.balance + EXCLUDED.balance, events = accounts.events + EXCLUDED.events";

/// The `accounts` balance read model.
#[derive(Debug, Default)]
pub(crate) struct AccountsProjector {
    name: String,
    segment: Option<Segment>,
}

impl AccountsProjector {
    /// The whole read model, one subscriber.
    pub(crate) fn whole() -> Self {
        AccountsProjector {
            name: "accounts".into(),
            segment: None,
        }
    }

    /// One segment of it: its accounts only, under a name of its own.
    pub(crate) fn segment(segment: Segment) -> Self {
        AccountsProjector {
            name: segment.name("accounts"),
            segment: Some(segment),
        }
    }
}

#[derive(Default)]
struct Change {
    owner: Option<String>,
    balance: i64,
    events: i64,
}

impl Change {
    fn add(&mut self, event: &RecordedEvent) -> Result<(), BoxError> {
        let Some(e) = event.decode_for::<Account>()? else {
            return Ok(());
        };
        match e.payload {
            AccountEvent::Opened { owner, .. } => self.owner = Some(owner),
            AccountEvent::Deposited { amount, .. } => self.balance += i64::try_from(amount)?,
        }
        self.events += 1;
        Ok(())
    }
}

async fn write(tx: &mut PgConnection, changes: BTreeMap<&str, Change>) -> Result<(), BoxError> {
    if changes.is_empty() {
        return Ok(());
    }
    let n = changes.len();
    let (mut ids, mut owners, mut balances, mut counts) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    // NOTE: a BTreeMap hands the rows over in key order, so two writers never deadlock.
    for (id, c) in changes {
        ids.push(id);
        owners.push(c.owner);
        balances.push(c.balance);
        counts.push(c.events);
    }
    sqlx::query(UPSERT)
        .bind(ids)
        .bind(owners)
        .bind(balances)
        .bind(counts)
        .execute(tx)
        .await?;
    Ok(())
}

#[async_trait]
impl PgProjector for AccountsProjector {
    fn name(&self) -> &str {
        &self.name
    }

    fn segment(&self) -> Option<Segment> {
        self.segment
    }

    async fn handle(&self, tx: &mut PgConnection, event: &RecordedEvent) -> Result<(), BoxError> {
        self.handle_batch(tx, std::slice::from_ref(event)).await
    }

    async fn handle_batch(
        &self,
        tx: &mut PgConnection,
        events: &[RecordedEvent],
    ) -> Result<(), BoxError> {
        let mut changes: BTreeMap<&str, Change> = BTreeMap::new();
        for e in events {
            if e.stream.category == Account::TYPE {
                changes.entry(&e.stream.id).or_default().add(e)?;
            }
        }
        write(tx, changes).await
    }

    /// Empties the table; a segment leaves it to whoever rebuilds all segments (a segment's
    /// reset must not remove the other segments' rows).
    async fn reset(&self, tx: &mut PgConnection) -> Result<(), BoxError> {
        if self.segment.is_none() {
            sqlx::query("TRUNCATE accounts").execute(tx).await?;
        }
        Ok(())
    }
}
