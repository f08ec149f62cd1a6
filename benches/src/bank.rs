//! The `bank` workload (`../shared/reference/workloads.md`): transfers of
//! an amount between two `Account` entities pinned to different
//! partitions, each inside a critical section that locks both; used by
//! `basalt bench bank`, which checks afterwards that the total balance is
//! conserved and no balance is negative.

use basalt_runtime::EntityId;
use basalt_runtime::sdk::{EntityError, OrchestrationError, Registry, RegistryError};
use serde::{Deserialize, Serialize};

/// Orchestration name.
pub const TRANSFER: &str = "transfer";
/// Entity name.
pub const ACCOUNT: &str = "account";

/// A transfer request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    /// Account key to take from.
    pub from: String,
    /// Account key to give to.
    pub to: String,
    /// Amount.
    pub amount: i64,
}

/// The key of account `index`, pinned to partition `index mod partitions`.
pub fn account(index: u64, partitions: u32) -> String {
    format!("a{index}!{}", index % u64::from(partitions.max(1)))
}

/// The `Account` entity of a key.
pub fn account_entity(key: &str) -> Result<EntityId, basalt_runtime::Error> {
    EntityId::new(ACCOUNT, key)
}

/// The registry of the workload.
pub fn registry() -> Result<Registry, RegistryError> {
    Registry::builder()
        .register_entity_typed(ACCOUNT, |ctx, operation| async move {
            let mut balance: i64 = ctx.state()?;
            match operation.name.as_str() {
                "set" => balance = operation.decode_input()?,
                "add" => balance += operation.decode_input::<i64>()?,
                "get" => {}
                other => return Err(EntityError::unknown_operation(other)),
            }
            ctx.set_state(&balance)?;
            Ok(balance)
        })
        .register_orchestration_typed::<Transfer, bool, _, _>(
            TRANSFER,
            |ctx, t: Transfer| async move {
                let bad =
                    |e: basalt_runtime::Error| OrchestrationError::Serialization(e.to_string());
                let from = account_entity(&t.from).map_err(bad)?;
                let to = account_entity(&t.to).map_err(bad)?;
                let mut guard = ctx.lock_entities(&[from.clone(), to.clone()]).await?;
                let balance: i64 = ctx.call_entity(&from, "get", &()).await?;
                let moved = balance >= t.amount;
                if moved {
                    let take = ctx.call_entity::<_, i64>(&from, "add", &(-t.amount));
                    let give = ctx.call_entity::<_, i64>(&to, "add", &t.amount);
                    let (taken, given) = futures::future::join(take, give).await;
                    taken?;
                    given?;
                }
                ctx.unlock(&mut guard);
                Ok::<_, OrchestrationError>(moved)
            },
        )
        .build()
}

/// A deterministic generator of transfers between accounts on different
/// partitions.
pub struct Transfers {
    state: u64,
    accounts: u64,
    partitions: u32,
}

impl Transfers {
    /// Transfers drawn from `seed` among `accounts` accounts.
    pub fn new(seed: u64, accounts: u64, partitions: u32) -> Transfers {
        Transfers {
            state: seed,
            accounts: accounts.max(2),
            partitions: partitions.max(2),
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next transfer: two accounts on different partitions, 1-100.
    pub fn next_transfer(&mut self) -> Transfer {
        let p = u64::from(self.partitions);
        loop {
            let from = self.next_u64() % self.accounts;
            let to = self.next_u64() % self.accounts;
            if from % p != to % p {
                return Transfer {
                    from: account(from, self.partitions),
                    to: account(to, self.partitions),
                    amount: 1 + (self.next_u64() % 100) as i64,
                };
            }
        }
    }
}
