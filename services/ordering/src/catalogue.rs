//! The product catalogue: creating and replacing products (an admin's business).

use pulse_kit::idempotency::BeforeCommit;
use uuid::Uuid;

use crate::domain::ProductDraft;
use crate::store::{OrderError, ProductRow, Store};

/// Writes products. Each write owns one transaction, `begin → write → hook → commit`: the
/// caller's [`BeforeCommit`] hook (the request's idempotency record) runs right before the
/// commit, where the code says "before commit", so the product and its answer commit together.
#[derive(Debug, Clone)]
pub struct Catalogue {
    store: Store,
}

impl Catalogue {
    /// The flow over `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Creates a product priced in `currency`.
    #[tracing::instrument(skip_all)]
    pub async fn create(
        &self,
        draft: &ProductDraft,
        currency: &str,
        hook: impl BeforeCommit<ProductRow>,
    ) -> Result<ProductRow, OrderError> {
        let mut tx = self.store.begin().await?;
        let product = self.store.create_product(&mut tx, draft, currency).await?;
        // Before commit.
        hook.run(&mut tx, &product).await?;
        tx.commit().await?;
        Ok(product)
    }

    /// Replaces the name, price and stock of product `id`.
    #[tracing::instrument(skip_all, fields(product = %id))]
    pub async fn update(
        &self,
        id: Uuid,
        draft: &ProductDraft,
        hook: impl BeforeCommit<ProductRow>,
    ) -> Result<ProductRow, OrderError> {
        let mut tx = self.store.begin().await?;
        let product = self.store.update_product(&mut tx, id, draft).await?;
        // Before commit.
        hook.run(&mut tx, &product).await?;
        tx.commit().await?;
        Ok(product)
    }
}
