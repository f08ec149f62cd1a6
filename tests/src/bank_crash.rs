//! Parameters shared by the bank crash test and its child.

/// Accounts: few, so critical sections contend.
pub const ACCOUNTS: u64 = 12;
/// Initial balance of each account.
pub const INITIAL_BALANCE: i64 = 500;
/// Partitions of the hub (accounts are pinned across them).
pub const PARTITIONS: u32 = 4;
