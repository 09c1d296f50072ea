//! The read models as pure functions from an event to the SQL writes it causes. The two
//! back-ends run the same writes, each in its projector's transaction.

use std::collections::HashMap;

use cqrs_core::{BoxError, RecordedEvent};

use super::sql;
use crate::domain::account::{Account, AccountEvent};
use crate::domain::transfer::{Transfer, TransferEvent};

/// A value bound to a statement parameter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Text(String),
    Int(i64),
    /// A NULL for a text column.
    NullText,
    // NOTE: PostgreSQL types a NULL parameter by what the client binds, so a NULL compared with
    // a BIGINT column (in `COALESCE`) must be bound as a null integer, not a null text.
    /// A NULL for an integer column.
    NullInt,
}

/// One statement with its parameters, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Write {
    pub(crate) sql: &'static str,
    pub(crate) args: Vec<Arg>,
}

fn w(sql: &'static str, args: Vec<Arg>) -> Write {
    Write { sql, args }
}

fn int(n: u64) -> Result<Arg, BoxError> {
    Ok(Arg::Int(i64::try_from(n).map_err(|_| {
        format!("{n} does not fit a BIGINT column")
    })?))
}

fn text(s: impl Into<String>) -> Arg {
    Arg::Text(s.into())
}

/// What a batch did to one account.
#[derive(Debug, Default)]
struct Net {
    opened: Option<String>,
    balance: Option<u64>,
    closed: bool,
    version: u64,
}

/// The read models the service keeps, each a projector of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReadModel {
    /// `accounts`: id, owner, balance, status, version.
    Accounts,
    /// `statement`: one line per movement with the balance after it.
    Statement,
    /// `transfers`: id, from, to, amount, status.
    Transfers,
    /// `large_withdrawals`: the choreographed reaction, a flag on every large withdrawal.
    LargeWithdrawals,
}

/// Withdrawals of at least this many minor units are flagged (10,000.00).
pub const LARGE_WITHDRAWAL: u64 = 1_000_000;

impl ReadModel {
    /// Every read model.
    pub const ALL: [ReadModel; 4] = [
        ReadModel::Accounts,
        ReadModel::Statement,
        ReadModel::Transfers,
        ReadModel::LargeWithdrawals,
    ];

    /// The projector's name (its checkpoint key), which is also its table's name.
    pub fn name(self) -> &'static str {
        match self {
            ReadModel::Accounts => "accounts",
            ReadModel::Statement => "statement",
            ReadModel::Transfers => "transfers",
            ReadModel::LargeWithdrawals => "large_withdrawals",
        }
    }

    /// The read model called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.name() == name)
    }

    pub(crate) fn reset(self) -> &'static str {
        match self {
            ReadModel::Accounts => sql::RESET_ACCOUNTS,
            ReadModel::Statement => sql::RESET_STATEMENT,
            ReadModel::Transfers => sql::RESET_TRANSFERS,
            ReadModel::LargeWithdrawals => sql::RESET_LARGE_WITHDRAWALS,
        }
    }

    /// The writes a batch of events causes in this read model. For `accounts` that is one
    /// statement per account touched (its net change), which makes replays fast; the others
    /// write event by event.
    pub(crate) fn batch_writes(self, events: &[RecordedEvent]) -> Result<Vec<Write>, BoxError> {
        if self != ReadModel::Accounts {
            let mut out = Vec::new();
            for e in events {
                out.extend(self.writes(e)?);
            }
            return Ok(out);
        }
        // Net change per account, in order of first appearance so the SQL is deterministic.
        let mut order: Vec<&str> = Vec::new();
        let mut net: HashMap<&str, Net> = HashMap::new();
        for event in events {
            let Some(e) = event.decode_for::<Account>()? else {
                continue;
            };
            let id = event.stream.id.as_str();
            let n = net.entry(id).or_insert_with(|| {
                order.push(id);
                Net::default()
            });
            n.version = event.stream_version;
            match e.payload {
                AccountEvent::Opened { owner } => n.opened = Some(owner),
                AccountEvent::Deposited { balance, .. }
                | AccountEvent::Withdrawn { balance, .. }
                | AccountEvent::TransferDebited { balance, .. }
                | AccountEvent::TransferCredited { balance, .. }
                | AccountEvent::TransferRefunded { balance, .. } => n.balance = Some(balance),
                AccountEvent::TransferSettled { .. } => {}
                AccountEvent::Closed => n.closed = true,
            }
        }
        let mut out = Vec::with_capacity(order.len());
        for id in order {
            let n = net.remove(id).expect("recorded above");
            let status = if n.closed { "closed" } else { "open" };
            out.push(match n.opened {
                Some(owner) => w(
                    sql::ACCOUNT_ROW,
                    vec![
                        text(id),
                        text(owner),
                        int(n.balance.unwrap_or(0))?,
                        text(status),
                        int(n.version)?,
                    ],
                ),
                None => w(
                    sql::ACCOUNT_NET,
                    vec![
                        n.balance.map_or(Ok(Arg::NullInt), int)?,
                        if n.closed {
                            text(status)
                        } else {
                            Arg::NullText
                        },
                        int(n.version)?,
                        text(id),
                    ],
                ),
            });
        }
        Ok(out)
    }

    /// The writes `event` causes in this read model.
    pub(crate) fn writes(self, event: &RecordedEvent) -> Result<Vec<Write>, BoxError> {
        match self {
            ReadModel::Transfers => transfers(event),
            _ => match event.decode_for::<Account>()? {
                None => Ok(vec![]),
                Some(e) => match self {
                    ReadModel::Accounts => accounts(event, &e.payload),
                    ReadModel::Statement => statement(event, &e.payload),
                    _ => large_withdrawals(event, &e.payload),
                },
            },
        }
    }
}

fn accounts(event: &RecordedEvent, payload: &AccountEvent) -> Result<Vec<Write>, BoxError> {
    let (id, version) = (text(&event.stream.id), int(event.stream_version)?);
    Ok(vec![match payload {
        AccountEvent::Opened { owner } => w(sql::ACCOUNT_OPENED, vec![id, text(owner), version]),
        AccountEvent::Deposited { balance, .. }
        | AccountEvent::Withdrawn { balance, .. }
        | AccountEvent::TransferDebited { balance, .. }
        | AccountEvent::TransferCredited { balance, .. }
        | AccountEvent::TransferRefunded { balance, .. } => {
            w(sql::ACCOUNT_BALANCE, vec![int(*balance)?, version, id])
        }
        AccountEvent::TransferSettled { .. } => w(sql::ACCOUNT_VERSION, vec![version, id]),
        AccountEvent::Closed => w(sql::ACCOUNT_CLOSED, vec![version, id]),
    }])
}

fn statement(event: &RecordedEvent, payload: &AccountEvent) -> Result<Vec<Write>, BoxError> {
    let (kind, amount, balance, transfer) = match payload {
        AccountEvent::Deposited { amount, balance } => ("deposit", *amount as i128, *balance, None),
        AccountEvent::Withdrawn { amount, balance } => {
            ("withdrawal", -(*amount as i128), *balance, None)
        }
        AccountEvent::TransferDebited {
            transfer_id,
            amount,
            balance,
        } => (
            "transfer_out",
            -(*amount as i128),
            *balance,
            Some(transfer_id),
        ),
        AccountEvent::TransferCredited {
            transfer_id,
            amount,
            balance,
        } => ("transfer_in", *amount as i128, *balance, Some(transfer_id)),
        AccountEvent::TransferRefunded {
            transfer_id,
            amount,
            balance,
        } => ("refund", *amount as i128, *balance, Some(transfer_id)),
        _ => return Ok(vec![]),
    };
    let amount = i64::try_from(amount).map_err(|_| "amount does not fit a BIGINT column")?;
    Ok(vec![w(
        sql::STATEMENT_LINE,
        vec![
            text(&event.stream.id),
            int(event.stream_version)?,
            int(event.position())?,
            text(kind),
            Arg::Int(amount),
            int(balance)?,
            transfer.map_or(Arg::NullText, |t| text(t.to_string())),
            text(
                event
                    .recorded_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            ),
        ],
    )])
}

fn large_withdrawals(
    event: &RecordedEvent,
    payload: &AccountEvent,
) -> Result<Vec<Write>, BoxError> {
    match payload {
        AccountEvent::Withdrawn { amount, .. } if *amount >= LARGE_WITHDRAWAL => Ok(vec![w(
            sql::LARGE_WITHDRAWAL,
            vec![
                text(&event.stream.id),
                int(event.stream_version)?,
                int(*amount)?,
                int(event.position())?,
                text(
                    event
                        .recorded_at
                        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                ),
            ],
        )]),
        _ => Ok(vec![]),
    }
}

fn transfers(event: &RecordedEvent) -> Result<Vec<Write>, BoxError> {
    let Some(e) = event.decode_for::<Transfer>()? else {
        return Ok(vec![]);
    };
    let (id, version) = (text(&event.stream.id), int(event.stream_version)?);
    let status = |status: &str, reason: Option<&String>| {
        w(
            sql::TRANSFER_STATUS,
            vec![
                text(status),
                reason.map_or(Arg::NullText, text),
                version.clone(),
                id.clone(),
            ],
        )
    };
    Ok(vec![match &e.payload {
        TransferEvent::Started { from, to, amount } => w(
            sql::TRANSFER_STARTED,
            vec![
                id.clone(),
                text(from.to_string()),
                text(to.to_string()),
                int(*amount)?,
                version.clone(),
            ],
        ),
        TransferEvent::Debited => status("debited", None),
        TransferEvent::Completed => status("completed", None),
        TransferEvent::CreditFailed { reason } => status("credit_failed", Some(reason)),
        TransferEvent::Failed { reason, .. } => status("failed", Some(reason)),
    }])
}

#[cfg(test)]
#[path = "projections_tests.rs"]
mod tests;
