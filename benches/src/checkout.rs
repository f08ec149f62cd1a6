//! The `checkout` workload (`../shared/reference/workloads.md`): each
//! checkout takes 2 items (a product from a pool, quantity 1-3), calls the
//! `Stock` entity of each product to reserve the quantity (refused when
//! stock is short), waits for both (fan-in), then runs a `receipt` activity
//! and completes with the receipt. Used by `basalt bench checkout` and by
//! the engine crash test, which both check the invariant: per product,
//! initial stock - final stock = the sum of reserved quantities in the
//! receipts, and stock never goes negative.

use basalt_runtime::EntityId;
use basalt_runtime::sdk::{
    ActivityError, EntityError, OrchestrationError, Registry, RegistryError,
};
use futures::future::join_all;
use serde::{Deserialize, Serialize};

/// Orchestration name.
pub const CHECKOUT: &str = "checkout";
/// Entity name.
pub const STOCK: &str = "stock";
/// Activity name.
pub const RECEIPT: &str = "receipt";
/// The error type of a reservation refused for lack of stock.
pub const OUT_OF_STOCK: &str = "OutOfStock";

/// One line of a checkout request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Product id (the `Stock` entity's key).
    pub product: String,
    /// Quantity, 1-3.
    pub quantity: i64,
}

/// What a checkout completes with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The lines that were reserved.
    pub reserved: Vec<Item>,
    /// The lines refused for lack of stock.
    pub refused: Vec<Item>,
    /// Text produced by the receipt activity.
    pub text: String,
}

/// The `Stock` entity of a product.
pub fn stock_entity(product: &str) -> Result<EntityId, basalt_runtime::Error> {
    EntityId::new(STOCK, product)
}

/// Product ids of a pool of `size`.
pub fn product(index: u64) -> String {
    format!("p{index}")
}

/// The registry of the workload.
pub fn registry() -> Result<Registry, RegistryError> {
    Registry::builder()
        .register_entity_typed(STOCK, |ctx, operation| async move {
            let mut left: i64 = ctx.state()?;
            match operation.name.as_str() {
                "set" => left = operation.decode_input()?,
                "reserve" => {
                    let want: i64 = operation.decode_input()?;
                    if want > left {
                        return Err(EntityError::new(
                            OUT_OF_STOCK,
                            format!("{want} wanted, {left} left"),
                        ));
                    }
                    left -= want;
                }
                "get" => {}
                other => return Err(EntityError::unknown_operation(other)),
            }
            ctx.set_state(&left)?;
            Ok(left)
        })
        .register_orchestration_typed::<Vec<Item>, Receipt, _, _>(
            CHECKOUT,
            |ctx, items: Vec<Item>| async move {
                let mut calls = Vec::new();
                for item in &items {
                    let stock = stock_entity(&item.product)
                        .map_err(|e| OrchestrationError::Serialization(e.to_string()))?;
                    calls.push(ctx.call_entity::<_, i64>(&stock, "reserve", &item.quantity));
                }
                let mut receipt = Receipt {
                    reserved: Vec::new(),
                    refused: Vec::new(),
                    text: String::new(),
                };
                for (item, result) in items.into_iter().zip(join_all(calls).await) {
                    match result {
                        Ok(_) => receipt.reserved.push(item),
                        // Only a lack of stock refuses a line; any other
                        // failure fails the checkout.
                        Err(OrchestrationError::EntityFailed { details, .. })
                            if details.error_type == OUT_OF_STOCK =>
                        {
                            receipt.refused.push(item)
                        }
                        Err(other) => return Err(other),
                    }
                }
                receipt.text = ctx
                    .call_activity::<_, String>(RECEIPT, &receipt.reserved)
                    .await?;
                Ok::<_, OrchestrationError>(receipt)
            },
        )
        .register_activity_typed::<Vec<Item>, String, _, _>(
            RECEIPT,
            |_ctx, items: Vec<Item>| async move {
                let units: i64 = items.iter().map(|i| i.quantity).sum();
                Ok::<_, ActivityError>(format!("{} lines, {units} units", items.len()))
            },
        )
        .build()
}

/// A deterministic generator of checkout requests.
pub struct Requests {
    state: u64,
    /// Products in the pool.
    pub pool: u64,
}

impl Requests {
    /// Requests drawn from `seed` over a pool of `pool` products.
    pub fn new(seed: u64, pool: u64) -> Requests {
        Requests {
            state: seed,
            pool: pool.max(1),
        }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// The next request: 2 items, random products, quantity 1-3.
    pub fn next_request(&mut self) -> Vec<Item> {
        (0..2)
            .map(|_| Item {
                product: product(self.next_u64() % self.pool),
                quantity: 1 + (self.next_u64() % 3) as i64,
            })
            .collect()
    }
}
