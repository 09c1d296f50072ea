//! A small bank-account domain and read model shared by the core's tests.
#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::sync::Mutex;

use cqrs_core::{Aggregate, BoxError, DomainEvent, Projector, RecordedEvent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AccountEvent {
    Opened { owner: String },
    Deposited { amount: u64 },
    Withdrawn { amount: u64 },
}
impl DomainEvent for AccountEvent {}

#[derive(Debug, Clone)]
pub enum AccountCommand {
    Open { owner: String },
    Deposit { amount: u64 },
    Withdraw { amount: u64 },
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AccountError {
    #[error("account already open")]
    AlreadyOpen,
    #[error("account not open")]
    NotOpen,
    #[error("insufficient funds: balance {balance}, asked {asked}")]
    Insufficient { balance: u64, asked: u64 },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Account {
    pub open: bool,
    pub balance: u64,
    pub events: u64,
}

impl Aggregate for Account {
    const TYPE: &'static str = "account";
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Error = AccountError;

    fn handle(&self, cmd: &AccountCommand) -> Result<Vec<AccountEvent>, AccountError> {
        use AccountCommand::*;
        match cmd {
            Open { .. } if self.open => Err(AccountError::AlreadyOpen),
            Open { owner } => Ok(vec![AccountEvent::Opened {
                owner: owner.clone(),
            }]),
            _ if !self.open => Err(AccountError::NotOpen),
            Deposit { amount } => Ok(vec![AccountEvent::Deposited { amount: *amount }]),
            Withdraw { amount } if *amount > self.balance => Err(AccountError::Insufficient {
                balance: self.balance,
                asked: *amount,
            }),
            Withdraw { amount } => Ok(vec![AccountEvent::Withdrawn { amount: *amount }]),
        }
    }

    fn apply(&mut self, event: &AccountEvent) {
        self.events += 1;
        match event {
            AccountEvent::Opened { .. } => self.open = true,
            AccountEvent::Deposited { amount } => self.balance += amount,
            AccountEvent::Withdrawn { amount } => self.balance -= amount,
        }
    }
}

/// Balances by account id, plus the list of handled event ids (to count deliveries).
#[derive(Debug, Default)]
pub struct Balances {
    pub name: String,
    pub rows: Mutex<BTreeMap<String, (String, i64)>>,
    pub deliveries: Mutex<Vec<uuid::Uuid>>,
}

impl Balances {
    pub fn named(name: &str) -> Self {
        Balances {
            name: name.into(),
            ..Default::default()
        }
    }
    pub fn snapshot(&self) -> BTreeMap<String, (String, i64)> {
        self.rows.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl Projector for Balances {
    fn name(&self) -> &str {
        &self.name
    }
    async fn handle(&self, event: &RecordedEvent) -> Result<(), BoxError> {
        self.deliveries.lock().unwrap().push(event.event_id);
        let Some(e) = event.decode_for::<Account>()? else {
            return Ok(());
        };
        let mut rows = self.rows.lock().unwrap();
        let id = e.stream.id.clone();
        match e.payload {
            AccountEvent::Opened { owner } => {
                rows.insert(id, (owner, 0));
            }
            AccountEvent::Deposited { amount } => {
                rows.get_mut(&id).ok_or("deposit before open")?.1 += amount as i64
            }
            AccountEvent::Withdrawn { amount } => {
                rows.get_mut(&id).ok_or("withdrawal before open")?.1 -= amount as i64
            }
        }
        Ok(())
    }
    async fn reset(&self) -> Result<(), BoxError> {
        self.rows.lock().unwrap().clear();
        Ok(())
    }
}
