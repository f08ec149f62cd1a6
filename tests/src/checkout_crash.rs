//! Parameters shared by the checkout crash test and its child.

/// Products in the pool: few, so reservations contend and some are refused.
pub const POOL: u64 = 10;
/// Initial stock of each product.
pub const INITIAL_STOCK: i64 = 150;
