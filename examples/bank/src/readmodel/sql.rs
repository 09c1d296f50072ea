//! The read models' SQL, shared by SQLite and PostgreSQL: only what both dialects agree on
//! (`TEXT` and `BIGINT` columns, `$n` parameters numbered in order of appearance,
//! `ON CONFLICT DO NOTHING`).

/// Creates the read-model tables; run once at start (idempotent).
pub(crate) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, owner TEXT NOT NULL, balance BIGINT NOT NULL, \
     status TEXT NOT NULL, version BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS statement (account_id TEXT NOT NULL, version BIGINT NOT NULL, position BIGINT NOT NULL, \
     kind TEXT NOT NULL, amount BIGINT NOT NULL, balance BIGINT NOT NULL, transfer_id TEXT, recorded_at TEXT NOT NULL, \
     PRIMARY KEY (account_id, version))",
    "CREATE TABLE IF NOT EXISTS transfers (id TEXT PRIMARY KEY, from_account TEXT NOT NULL, to_account TEXT NOT NULL, \
     amount BIGINT NOT NULL, status TEXT NOT NULL, reason TEXT, version BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS large_withdrawals (account_id TEXT NOT NULL, version BIGINT NOT NULL, \
     amount BIGINT NOT NULL, position BIGINT NOT NULL, recorded_at TEXT NOT NULL, PRIMARY KEY (account_id, version))",
    "CREATE TABLE IF NOT EXISTS idempotent_refusals (id TEXT PRIMARY KEY, status BIGINT NOT NULL, \
     code TEXT NOT NULL, message TEXT NOT NULL)",
    // NOTE: a table beside `idempotent_refusals` rather than a column of it, so that databases
    // made before it need no migration (their refusals have no request, and are answered by key).
    "CREATE TABLE IF NOT EXISTS idempotent_refusal_requests (id TEXT PRIMARY KEY, request TEXT NOT NULL)",
];

/// Remembers the refusal of a request sent with an idempotency key (by its derived command id).
pub(crate) const RECORD_REFUSAL: &str = "INSERT INTO idempotent_refusals (id, status, code, message) \
     VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING";
/// The request a refusal answered.
pub(crate) const RECORD_REFUSAL_REQUEST: &str = "INSERT INTO idempotent_refusal_requests (id, request) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING";
pub(crate) const SELECT_REFUSAL: &str = "SELECT r.status, r.code, r.message, q.request \
     FROM idempotent_refusals r LEFT JOIN idempotent_refusal_requests q ON q.id = r.id WHERE r.id = $1";

pub(crate) const ACCOUNT_OPENED: &str = "INSERT INTO accounts (id, owner, balance, status, version) \
     VALUES ($1, $2, 0, 'open', $3) ON CONFLICT (id) DO NOTHING";
pub(crate) const ACCOUNT_BALANCE: &str =
    "UPDATE accounts SET balance = $1, version = $2 WHERE id = $3";
pub(crate) const ACCOUNT_VERSION: &str = "UPDATE accounts SET version = $1 WHERE id = $2";
pub(crate) const ACCOUNT_CLOSED: &str =
    "UPDATE accounts SET status = 'closed', version = $1 WHERE id = $2";
/// A batch's net effect on one account that opened within the batch.
pub(crate) const ACCOUNT_ROW: &str = "INSERT INTO accounts (id, owner, balance, status, version) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (id) DO NOTHING";
/// A batch's net effect on one account opened before it (NULL leaves a column as it is).
pub(crate) const ACCOUNT_NET: &str = "UPDATE accounts SET balance = COALESCE($1, balance), \
     status = COALESCE($2, status), version = $3 WHERE id = $4";
pub(crate) const STATEMENT_LINE: &str = "INSERT INTO statement \
     (account_id, version, position, kind, amount, balance, transfer_id, recorded_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (account_id, version) DO NOTHING";
pub(crate) const TRANSFER_STARTED: &str = "INSERT INTO transfers (id, from_account, to_account, amount, status, reason, version) \
     VALUES ($1, $2, $3, $4, 'started', NULL, $5) ON CONFLICT (id) DO NOTHING";
pub(crate) const TRANSFER_STATUS: &str =
    "UPDATE transfers SET status = $1, reason = $2, version = $3 WHERE id = $4";
pub(crate) const LARGE_WITHDRAWAL: &str = "INSERT INTO large_withdrawals (account_id, version, amount, position, recorded_at) \
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (account_id, version) DO NOTHING";

pub(crate) const SELECT_ACCOUNT: &str =
    "SELECT id, owner, balance, status, version FROM accounts WHERE id = $1";
pub(crate) const SELECT_ACCOUNTS: &str =
    "SELECT id, owner, balance, status, version FROM accounts ORDER BY id";
pub(crate) const SELECT_STATEMENT: &str = "SELECT version, position, kind, amount, balance, transfer_id, recorded_at \
     FROM statement WHERE account_id = $1 ORDER BY version";
pub(crate) const SELECT_TRANSFER: &str = "SELECT id, from_account, to_account, amount, status, reason, version FROM transfers WHERE id = $1";
pub(crate) const SELECT_TRANSFERS: &str = "SELECT id, from_account, to_account, amount, status, reason, version FROM transfers ORDER BY id";
pub(crate) const SELECT_LARGE_WITHDRAWALS: &str = "SELECT account_id, version, amount, position, recorded_at FROM large_withdrawals ORDER BY position";

pub(crate) const RESET_ACCOUNTS: &str = "DELETE FROM accounts";
pub(crate) const RESET_STATEMENT: &str = "DELETE FROM statement";
pub(crate) const RESET_TRANSFERS: &str = "DELETE FROM transfers";
pub(crate) const RESET_LARGE_WITHDRAWALS: &str = "DELETE FROM large_withdrawals";
