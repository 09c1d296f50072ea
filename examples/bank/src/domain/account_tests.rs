//! Given/when/then tests of the account aggregate.
use cqrs_core::testkit::AggregateTest;

use super::*;
use crate::domain::money::MAX_AMOUNT;

type T = AggregateTest<Account>;
use AccountCommand as C;
use AccountEvent as E;

fn amt(n: u64) -> Amount {
    Amount::new(n).unwrap()
}
fn opened() -> E {
    E::Opened {
        owner: "alice".into(),
    }
}
fn deposited(amount: u64, balance: u64) -> E {
    E::Deposited { amount, balance }
}
fn tid() -> Uuid {
    Uuid::from_u128(7)
}
fn debit(amount: u64) -> C {
    C::DebitForTransfer {
        transfer_id: tid(),
        amount: amt(amount),
    }
}
fn credit(amount: u64) -> C {
    C::CreditFromTransfer {
        transfer_id: tid(),
        amount: amt(amount),
    }
}
fn debited(amount: u64, balance: u64) -> E {
    E::TransferDebited {
        transfer_id: tid(),
        amount,
        balance,
    }
}

#[test]
fn open_once_with_a_real_name() {
    let state = T::given_nothing()
        .when(C::Open {
            owner: "alice".into(),
        })
        .then([opened()]);
    assert_eq!(
        (state.status, state.owner.as_str(), state.balance),
        (AccountStatus::Open, "alice", 0)
    );
    T::given([opened()])
        .when(C::Open {
            owner: "bob".into(),
        })
        .then_error(|e| *e == AccountError::AlreadyOpen);
    for owner in ["  ".to_owned(), "x".repeat(201)] {
        T::given_nothing()
            .when(C::Open { owner })
            .then_error(|e| *e == AccountError::InvalidOwner);
    }
}

#[test]
fn deposits_and_withdrawals_carry_the_balance() {
    let s = T::given([opened()])
        .when(C::Deposit { amount: amt(1000) })
        .then([deposited(1000, 1000)]);
    assert_eq!(s.balance, 1000);
    T::given([opened(), deposited(1000, 1000)])
        .when(C::Withdraw { amount: amt(1000) })
        .then([E::Withdrawn {
            amount: 1000,
            balance: 0,
        }]);
}

#[test]
fn no_overdraft() {
    let refused = AccountError::InsufficientFunds {
        balance: 100,
        requested: 101,
    };
    T::given([opened(), deposited(100, 100)])
        .when(C::Withdraw { amount: amt(101) })
        .then_error(|e| *e == refused);
    T::given([opened()])
        .when(debit(1))
        .then_error(|e| matches!(e, AccountError::InsufficientFunds { .. }));
}

#[test]
fn balance_never_overflows() {
    let near = MAX_BALANCE - 5;
    T::given([opened(), deposited(near, near)])
        .when(C::Deposit {
            amount: amt(MAX_AMOUNT),
        })
        .then_error(|e| *e == AccountError::BalanceLimit);
    T::given([opened(), deposited(near, near)])
        .when(credit(6))
        .then_error(|e| *e == AccountError::BalanceLimit);
}

#[test]
fn missing_and_closed_accounts_refuse_money() {
    T::given_nothing()
        .when(C::Deposit { amount: amt(1) })
        .then_error(|e| *e == AccountError::NotFound);
    T::given([opened(), E::Closed])
        .when(C::Deposit { amount: amt(1) })
        .then_error(|e| *e == AccountError::Closed);
    T::given([opened(), E::Closed])
        .when(credit(1))
        .then_error(|e| *e == AccountError::Closed);
    T::given_nothing()
        .when(credit(1))
        .then_error(|e| *e == AccountError::NotFound);
}

#[test]
fn close_only_at_zero_without_transfers_in_flight() {
    T::given([opened()]).when(C::Close).then([E::Closed]);
    T::given([opened(), deposited(5, 5)])
        .when(C::Close)
        .then_error(|e| *e == AccountError::BalanceNotZero { balance: 5 });
    T::given([opened(), deposited(5, 5), debited(5, 0)])
        .when(C::Close)
        .then_error(|e| *e == AccountError::TransfersInFlight(1));
    let settled = E::TransferSettled { transfer_id: tid() };
    T::given([opened(), deposited(5, 5), debited(5, 0), settled])
        .when(C::Close)
        .then([E::Closed]);
    T::given([opened(), E::Closed])
        .when(C::Close)
        .then_error(|e| *e == AccountError::Closed);
}

#[test]
fn transfer_steps() {
    let funded = [opened(), deposited(50, 50)];
    let s = T::given(funded.clone())
        .when(debit(20))
        .then([debited(20, 30)]);
    assert_eq!(s.outgoing.get(&tid()), Some(&20));
    let with_debit = [opened(), deposited(50, 50), debited(20, 30)];
    // A repeated debit of the same transfer takes nothing more.
    T::given(with_debit.clone()).when(debit(20)).then([]);
    let refunded = E::TransferRefunded {
        transfer_id: tid(),
        amount: 20,
        balance: 50,
    };
    let s = T::given(with_debit.clone())
        .when(C::RefundTransfer { transfer_id: tid() })
        .then([refunded]);
    assert!(s.outgoing.is_empty());
    T::given(funded.clone())
        .when(C::RefundTransfer { transfer_id: tid() })
        .then_error(|e| *e == AccountError::UnknownTransfer(tid()));
    T::given(with_debit)
        .when(C::SettleTransfer { transfer_id: tid() })
        .then([E::TransferSettled { transfer_id: tid() }]);
    T::given(funded)
        .when(C::SettleTransfer { transfer_id: tid() })
        .then([]);
    let credited = E::TransferCredited {
        transfer_id: tid(),
        amount: 20,
        balance: 20,
    };
    T::given([opened()]).when(credit(20)).then([credited]);
}

#[test]
fn refusals_speak_in_major_units_like_the_amounts_beside_them() {
    let overdraft = AccountError::InsufficientFunds {
        balance: 25_000,
        requested: 1_000_000,
    };
    assert_eq!(
        overdraft.to_string(),
        "insufficient funds: balance 250.00, requested 10,000.00"
    );
    let funded = AccountError::BalanceNotZero { balance: 2_470_000 };
    assert_eq!(funded.to_string(), "balance is not zero: 24,700.00");
}
