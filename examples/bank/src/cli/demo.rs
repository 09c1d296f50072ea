//! `bank demo`: a scripted tour on a fresh in-memory store.

use std::time::{Duration, Instant};

use bank::{Amount, Backend, Bank, BankConfig, ReadModel, format_minor};
use cqrs_core::Replay;

use super::CliResult;

/// How long the demo waits for the read models and the process manager.
const SETTLE: Duration = Duration::from_secs(10);

fn money(minor: i64) -> String {
    format_minor(minor.into())
}

fn short(id: impl ToString) -> String {
    id.to_string()[..8].to_owned()
}

/// A row of the demo's `accounts` table.
fn row([id, owner, balance, status, version]: [String; 5]) {
    println!("   {id:<10} {owner:<8} {balance:>12} {status:<7} {version:>7}");
}

pub(crate) async fn demo() -> CliResult {
    let started = Instant::now();
    println!("bank demo: a tour of the example bank on a fresh in-memory store\n");
    let backend = Backend::open("sqlite::memory:").await?;
    let bank = Bank::start(backend.clone(), BankConfig::default());

    println!("1. Open three accounts (POST /accounts)");
    let mut ids = Vec::new();
    for owner in ["alice", "bob", "carol"] {
        let o = bank.open_account(owner, None).await?;
        println!(
            "   {owner:<6} {}  version {}  position {}",
            o.id, o.version, o.position
        );
        ids.push(o.id);
    }
    let (alice, bob, carol) = (ids[0], ids[1], ids[2]);

    println!("\n2. Deposits (POST /accounts/{{id}}/deposit); money is integer cents");
    for (id, name, cents) in [(alice, "alice", 2_500_000), (bob, "bob", 25_000)] {
        let w = bank.deposit(id, Amount::new(cents)?, None).await?;
        let amount = money(cents as i64);
        println!(
            "   {name:<6} +{amount:>10}  version {}  position {}",
            w.version, w.position
        );
    }

    println!("\n3. Rules hold: an overdraft and closing a funded account are refused (422)");
    let e = bank
        .withdraw(bob, Amount::new(1_000_000)?, None)
        .await
        .unwrap_err();
    println!("   bob withdraws 10,000.00  -> {} ({e})", e.code());
    let e = bank.close(alice, None).await.unwrap_err();
    println!("   alice closes her account -> {} ({e})", e.code());

    println!("\n4. A transfer that completes: alice -> bob 300.00 (POST /transfers, 202)");
    let t1 = bank
        .transfer(alice, bob, Amount::new(30_000)?, None)
        .await?;
    bank.settle(SETTLE).await?;
    let v = bank.transfer_view(t1.id, None).await?;
    let path = "start -> debit alice -> credit bob -> completed";
    println!("   transfer {}  {}  ({path})", short(t1.id), v.status);

    println!("\n5. A transfer that fails and is refunded: bob -> carol, whose account is closed");
    bank.close(carol, None).await?;
    println!("   carol closes her empty account");
    let t2 = bank
        .transfer(bob, carol, Amount::new(10_000)?, None)
        .await?;
    bank.settle(SETTLE).await?;
    let v = bank.transfer_view(t2.id, None).await?;
    let reason = v.reason.unwrap_or_default();
    println!("   transfer {}  {}: {reason}", short(t2.id), v.status);
    println!("   (start -> debit bob -> credit refused -> refund bob -> failed)");

    println!("\n6. A choreographed reaction: a withdrawal of 10,000.00 or more is flagged");
    let w = bank.withdraw(alice, Amount::new(1_200_000)?, None).await?;
    for f in bank.large_withdrawals(Some(w.position)).await? {
        let (account, amount) = (short(&f.account_id), money(f.amount));
        println!(
            "   flagged: account {account} withdrew {amount} (position {})",
            f.position
        );
    }

    bank.settle(SETTLE).await?;
    println!("\n7. Read models (SQL tables kept by transactional projectors)");
    println!("   accounts:");
    row(["ACCOUNT", "OWNER", "BALANCE", "STATUS", "VERSION"].map(String::from));
    let before = backend.queries().accounts().await?;
    for id in &ids {
        if let Some(r) = before.iter().find(|r| r.id == id.to_string()) {
            let version = r.version.to_string();
            row([
                short(&r.id),
                r.owner.clone(),
                money(r.balance),
                r.status.clone(),
                version,
            ]);
        }
    }
    println!("\n   statement of bob:");
    println!(
        "   {:>7} {:<13} {:>12} {:>12}",
        "VERSION", "KIND", "AMOUNT", "BALANCE"
    );
    for l in bank.statement(bob, None).await? {
        let (amount, balance) = (money(l.amount), money(l.balance));
        println!(
            "   {:>7} {:<13} {amount:>12} {balance:>12}",
            l.version, l.kind
        );
    }
    println!("\n   transfers:");
    for t in backend.queries().transfers().await? {
        let (id, from, to) = (short(&t.id), short(&t.from), short(&t.to));
        println!(
            "   {id}  {from} -> {to}  {:>10}  {}",
            money(t.amount),
            t.status
        );
    }
    println!("\n   projections (GET /projections):");
    for p in bank.projections().await? {
        let (name, position) = (p.name, p.position);
        println!(
            "   {name:<18} position {position:>3}  lag {}  parked {}",
            p.lag, p.parked
        );
    }

    bank.shutdown().await;
    println!("\n8. Replay: rebuild `accounts` from the first event (bank replay accounts)");
    let report = Replay::new(backend.events(), backend.dead_letters())
        .run(&*backend.read_model(ReadModel::Accounts), |_| {})
        .await?;
    let after = backend.queries().accounts().await?;
    let same = if after == before {
        "identical, row for row"
    } else {
        "DIFFERENT"
    };
    let ms = report.elapsed.as_secs_f64() * 1000.0;
    println!(
        "   {} events in {ms:.1} ms; the rebuilt table is {same}",
        report.events
    );
    backend.close().await;
    if after != before {
        return Err("replay gave another accounts table".into());
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "\ndone in {secs:.2} s. Next: `bank serve` and curl http://127.0.0.1:8080/projections"
    );
    Ok(())
}
