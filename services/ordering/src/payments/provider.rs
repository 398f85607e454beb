//! The payment provider port: what ordering asks of a payment service provider, and the adapter
//! the settings choose.

use std::sync::Arc;

use async_trait::async_trait;
use pulse_kit::settings::{Secret, SettingError, ordering as vars};
use serde::Deserialize;
use uuid::Uuid;

use super::sandbox::{SandboxCheckout, SandboxProvider, SandboxWebhooks};
use super::stripe::StripeProvider;
use crate::settings::PaymentSettings;
use crate::store::{OrderRow, Store};

/// What to charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutRequest {
    /// The order (also sent as `client_reference_id` and `metadata[order_id]`).
    pub order_id: Uuid,
    /// Amount, minor units.
    pub amount_minor: i64,
    /// ISO 4217 code (upper case; providers that want lower case get it lowered).
    pub currency: String,
    /// What the buyer sees.
    pub description: String,
}

impl CheckoutRequest {
    /// The checkout of `order`: its amount, and a description of what it buys.
    pub fn for_order(order: &OrderRow) -> Self {
        let description = match (&order.campaign_id, &order.product_id) {
            (Some(campaign), _) => format!("Seckill voucher ({campaign})"),
            (None, Some(product)) => format!("{} × product {product}", order.quantity),
            _ => "Pulse order".to_owned(),
        };
        Self {
            order_id: order.id,
            amount_minor: order.amount_minor,
            currency: order.currency.clone(),
            description,
        }
    }
}

/// A started checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkout {
    /// The provider's session id.
    pub session_id: String,
    /// Where the buyer pays.
    pub url: String,
}

/// Where a refund is at the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// The money is on its way back.
    Succeeded,
    /// Accepted, not done yet.
    Pending,
    /// The provider needs something more first.
    RequiresAction,
    /// It failed.
    Failed,
    /// It was cancelled.
    Canceled,
    /// A status this code does not know.
    #[serde(other)]
    Unknown,
}

/// A refund the provider accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refund {
    /// The provider's refund id.
    pub refund_id: String,
    /// Where it is.
    pub status: RefundStatus,
}

/// Why the provider did not do it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// The provider refused the request (its message).
    #[error("the payment provider refused: {0}")]
    Rejected(String),
    /// The provider could not be reached or failed; retry later.
    #[error("the payment provider is unavailable: {0}")]
    Unavailable(String),
}

/// A payment service provider.
#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    /// Short name stored on orders (`stripe`, `sandbox`).
    fn name(&self) -> &'static str;

    /// Starts a hosted checkout for an order. Idempotent per order.
    async fn create_checkout(&self, request: &CheckoutRequest) -> Result<Checkout, PaymentError>;

    /// Refunds the payment of an order in full. Idempotent per order.
    async fn refund(&self, order_id: Uuid, payment_intent: &str) -> Result<Refund, PaymentError>;

    /// Expires a checkout that must not be paid any more (its order was cancelled). Best effort.
    async fn expire_checkout(&self, session_id: &str) -> Result<(), PaymentError>;
}

/// The webhook sender of the sandbox, signing with the first of `webhook_secrets`.
fn sandbox_webhooks(
    webhook_url: &str,
    webhook_secrets: &[Secret],
) -> Result<SandboxWebhooks, SettingError> {
    let secret = webhook_secrets.first().ok_or_else(|| {
        SettingError::new(
            &vars::PAYMENT_WEBHOOK_SECRET,
            "the sandbox needs a secret to sign its webhooks with",
        )
    })?;
    SandboxWebhooks::new(webhook_url, secret.clone())
        .map_err(|err| SettingError::new(&vars::PAYMENT_PROVIDER, err.to_string()))
}

/// The provider `settings` choose; the sandbox signs its webhooks with the first secret. An
/// error names the setting at fault.
pub fn from_settings(
    settings: &PaymentSettings,
    webhook_secrets: &[Secret],
) -> Result<Arc<dyn PaymentProvider>, SettingError> {
    let failed = |setting, err: PaymentError| SettingError::new(setting, err.to_string());
    Ok(match settings {
        PaymentSettings::Sandbox {
            webhook_url,
            auto_pay_after,
            ..
        } => Arc::new(SandboxProvider::new(
            sandbox_webhooks(webhook_url, webhook_secrets)?,
            *auto_pay_after,
        )),
        PaymentSettings::Stripe {
            base_url,
            api_key,
            return_url,
        } => Arc::new(
            StripeProvider::new(base_url, api_key.clone(), return_url)
                .map_err(|err| failed(&vars::PAYMENT_PROVIDER, err))?,
        ),
    })
}

/// The flow behind the sandbox's checkout pages over `store`, when `settings` choose the
/// sandbox (a real provider serves its own pages).
pub fn sandbox_checkout(
    settings: &PaymentSettings,
    webhook_secrets: &[Secret],
    store: Store,
) -> Result<Option<SandboxCheckout>, SettingError> {
    match settings {
        PaymentSettings::Sandbox {
            webhook_url,
            return_url,
            ..
        } => Ok(Some(SandboxCheckout::new(
            store,
            sandbox_webhooks(webhook_url, webhook_secrets)?,
            return_url,
        ))),
        PaymentSettings::Stripe { .. } => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refund_statuses_parse_and_unknown_ones_are_kept_apart() {
        for (text, status) in [
            ("\"succeeded\"", RefundStatus::Succeeded),
            ("\"pending\"", RefundStatus::Pending),
            ("\"requires_action\"", RefundStatus::RequiresAction),
            ("\"something_new\"", RefundStatus::Unknown),
        ] {
            assert_eq!(
                serde_json::from_str::<RefundStatus>(text).ok(),
                Some(status)
            );
        }
    }
}
