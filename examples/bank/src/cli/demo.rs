//! `bank demo`: a scripted tour on a fresh in-memory store.

use std::time::Instant;

use bank::{AccountView, Amount, Backend, Bank, BankConfig, ReadModel, format_minor};
use cqrs_core::Replay;
use uuid::Uuid;

use super::CliResult;
use super::ops::SETTLE;

fn money(minor: i64) -> String {
    format_minor(minor as i128)
}

fn short(id: impl ToString) -> String {
    id.to_string()[..8].to_owned()
}

fn amount(minor: u64) -> Result<Amount, bank::InvalidAmount> {
    Amount::new(minor)
}

fn accounts_table(rows: &[AccountView], names: &[(Uuid, &str)]) {
    println!(
        "   {:<10} {:<8} {:>12} {:<7} {:>7}",
        "ACCOUNT", "OWNER", "BALANCE", "STATUS", "VERSION"
    );
    for (id, _) in names {
        if let Some(r) = rows.iter().find(|r| r.id == id.to_string()) {
            println!(
                "   {:<10} {:<8} {:>12} {:<7} {:>7}",
                short(&r.id),
                r.owner,
                money(r.balance),
                r.status,
                r.version
            );
        }
    }
}

pub(crate) async fn demo() -> CliResult {
    let started = Instant::now();
    println!("bank demo: a tour of the example bank on a fresh in-memory store\n");
    let backend = Backend::open("sqlite::memory:").await?;
    let bank = Bank::start(backend.clone(), BankConfig::default());

    println!("1. Open three accounts (POST /accounts)");
    let mut names = Vec::new();
    for owner in ["alice", "bob", "carol"] {
        let o = bank.open_account(owner, None).await?;
        println!(
            "   {owner:<6} {}  version {}  position {}",
            o.id, o.version, o.position
        );
        names.push((o.id, owner));
    }
    let (alice, bob, carol) = (names[0].0, names[1].0, names[2].0);

    println!("\n2. Deposits (POST /accounts/{{id}}/deposit); money is integer cents");
    for (id, name, cents) in [(alice, "alice", 2_500_000), (bob, "bob", 25_000)] {
        let w = bank.deposit(id, amount(cents)?, None).await?;
        println!(
            "   {name:<6} +{:>10}  version {}  position {}",
            money(cents as i64),
            w.version,
            w.position
        );
    }

    println!("\n3. Rules hold: an overdraft and closing a funded account are refused (422)");
    let e = bank
        .withdraw(bob, amount(1_000_000)?, None)
        .await
        .unwrap_err();
    println!("   bob withdraws 10,000.00  -> {} ({})", e.code(), e);
    let e = bank.close(alice, None).await.unwrap_err();
    println!("   alice closes her account -> {} ({})", e.code(), e);

    println!("\n4. A transfer that completes: alice -> bob 300.00 (POST /transfers, 202)");
    let t1 = bank.transfer(alice, bob, amount(30_000)?, None).await?;
    bank.settle(SETTLE).await?;
    let v = bank.transfer_view(t1.id, None).await?;
    println!(
        "   transfer {}  {}  (start -> debit alice -> credit bob -> completed)",
        short(t1.id),
        v.status
    );

    println!("\n5. A transfer that fails and is refunded: bob -> carol, whose account is closed");
    bank.close(carol, None).await?;
    println!("   carol closes her empty account");
    let t2 = bank.transfer(bob, carol, amount(10_000)?, None).await?;
    bank.settle(SETTLE).await?;
    let v = bank.transfer_view(t2.id, None).await?;
    println!(
        "   transfer {}  {}: {}",
        short(t2.id),
        v.status,
        v.reason.unwrap_or_default()
    );
    println!("   (start -> debit bob -> credit refused -> refund bob -> failed)");

    println!("\n6. A choreographed reaction: a withdrawal of 10,000.00 or more is flagged");
    let w = bank.withdraw(alice, amount(1_200_000)?, None).await?;
    for f in bank.large_withdrawals(Some(w.position)).await? {
        println!(
            "   flagged: account {} withdrew {} (position {})",
            short(&f.account_id),
            money(f.amount),
            f.position
        );
    }

    bank.settle(SETTLE).await?;
    println!("\n7. Read models (SQL tables kept by transactional projectors)");
    println!("   accounts:");
    let before = backend.queries().accounts().await?;
    accounts_table(&before, &names);
    println!("\n   statement of bob:");
    println!(
        "   {:>7} {:<13} {:>12} {:>12}",
        "VERSION", "KIND", "AMOUNT", "BALANCE"
    );
    for l in bank.statement(bob, None).await? {
        println!(
            "   {:>7} {:<13} {:>12} {:>12}",
            l.version,
            l.kind,
            money(l.amount),
            money(l.balance)
        );
    }
    println!("\n   transfers:");
    for t in backend.queries().transfers().await? {
        println!(
            "   {}  {} -> {}  {:>10}  {}",
            short(&t.id),
            short(&t.from),
            short(&t.to),
            money(t.amount),
            t.status
        );
    }
    println!("\n   projections (GET /projections):");
    for p in bank.projections().await? {
        println!(
            "   {:<18} position {:>3}  lag {}  parked {}",
            p.name, p.position, p.lag, p.parked
        );
    }

    bank.shutdown().await;
    println!("\n8. Replay: rebuild `accounts` from the first event (bank replay accounts)");
    let sub = backend.read_model(ReadModel::Accounts);
    let report = Replay::new(backend.events(), backend.dead_letters())
        .run(&*sub, |_| {})
        .await?;
    let after = backend.queries().accounts().await?;
    println!(
        "   {} events in {:.1} ms; the rebuilt table is {}",
        report.events,
        report.elapsed.as_secs_f64() * 1000.0,
        if after == before {
            "identical, row for row"
        } else {
            "DIFFERENT"
        }
    );
    backend.close().await;
    if after != before {
        return Err("replay gave another accounts table".into());
    }
    println!(
        "\ndone in {:.2} s. Next: `bank serve` and curl http://127.0.0.1:8080/projections",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
