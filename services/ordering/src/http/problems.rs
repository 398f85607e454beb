//! How the flows' errors answer: an RFC 9457 problem, with `Retry-After` when retrying soon
//! helps.

use axum::http::StatusCode;
use pulse_kit::problem::Problem;

use crate::checkout::CheckoutError;
use crate::domain::InvalidInput;
use crate::marketing_client::VoucherCallError;
use crate::payments::signature::SignatureError;
use crate::payments::{PaymentError, PaymentsError, WebhookError};
use crate::store::OrderError;

impl From<InvalidInput> for Problem {
    fn from(err: InvalidInput) -> Self {
        Problem::unprocessable(err.message).with("field", err.field)
    }
}

impl From<OrderError> for Problem {
    fn from(err: OrderError) -> Self {
        match err {
            OrderError::ProductNotFound(_) => Problem::new(
                StatusCode::NOT_FOUND,
                "product-not-found",
                "Product not found",
            )
            .with_detail(err.to_string()),
            OrderError::OutOfStock { available } => {
                Problem::new(StatusCode::CONFLICT, "out-of-stock", "Out of stock")
                    .with_detail(err.to_string())
                    .with("available", available)
            }
            OrderError::OrderNotFound(_) => {
                Problem::new(StatusCode::NOT_FOUND, "order-not-found", "Order not found")
                    .with_detail(err.to_string())
            }
            OrderError::WrongStatus { status, .. } => Problem::new(
                StatusCode::CONFLICT,
                "order-wrong-status",
                "Not possible in this order status",
            )
            .with_detail(err.to_string())
            .with("orderStatus", status.as_str()),
            OrderError::Amount(err) => Problem::unprocessable(err.to_string()),
            // A concurrent request with the same Idempotency-Key recorded its answer first and
            // this one rolled back: not a failure; the idempotency middleware answers with the
            // first request's response (a 5xx is what makes it look).
            OrderError::Db(sqlx::Error::Database(db))
                if db.is_unique_violation() && db.table() == Some("idempotency_keys") =>
            {
                retry_after(
                    Problem::unavailable(
                        "a request with the same Idempotency-Key was answered meanwhile; retry with it to get that answer",
                    ),
                    1,
                )
            }
            // 503 with `Retry-After` when the database is unreachable (nothing was done; a
            // retry can succeed), 500 otherwise.
            OrderError::Db(err) => Problem::from_error(&err),
            OrderError::Outbox(err) => Problem::from_error(&err),
        }
    }
}

impl From<VoucherCallError> for Problem {
    fn from(err: VoucherCallError) -> Self {
        match err {
            VoucherCallError::Rejected(reason) => Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "voucher-rejected",
                "Voucher cannot be used",
            )
            .with_detail(reason)
            .with("field", "voucherId"),
            // Like an unknown product or slot: the named thing is not there.
            VoucherCallError::NotFound(voucher) => Problem::new(
                StatusCode::NOT_FOUND,
                "voucher-not-found",
                "Voucher not found",
            )
            .with_detail(format!(
                "no voucher {voucher}: use the id of one in your wallet (GET /v1/vouchers), or order without a voucher"
            ))
            .with("field", "voucherId"),
            VoucherCallError::Unavailable(why) => retry_after(
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "marketing-unavailable",
                    "Vouchers unavailable",
                )
                .with_detail(format!(
                    "vouchers cannot be checked right now ({why}); retry, or order without a voucher"
                )),
                1,
            ),
            VoucherCallError::CircuitOpen(retry_in) => retry_after(
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "marketing-circuit-open",
                    "Vouchers unavailable",
                )
                .with_detail(
                    "the voucher service keeps failing, so it is not called for a moment; retry later, or order without a voucher",
                ),
                retry_in.as_secs() + 1,
            ),
        }
    }
}

impl From<CheckoutError> for Problem {
    fn from(err: CheckoutError) -> Self {
        match err {
            CheckoutError::Order(err) => err.into(),
            CheckoutError::Invalid(err) => err.into(),
            CheckoutError::Voucher(err) => err.into(),
            CheckoutError::ProductBusy(_) => retry_after(
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "product-busy",
                    "Too many buyers right now",
                )
                .with_detail(
                    "many people are buying this product at this moment; retry in a second",
                ),
                1,
            ),
        }
    }
}

impl From<PaymentError> for Problem {
    fn from(err: PaymentError) -> Self {
        match err {
            PaymentError::Rejected(message) => Problem::new(
                StatusCode::BAD_GATEWAY,
                "payment-provider-error",
                "Payment provider refused",
            )
            .with_detail(message),
            PaymentError::Unavailable(message) => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "payment-provider-unavailable",
                "Payment provider unavailable",
            )
            .with_detail(format!("{message}; retry shortly")),
        }
    }
}

impl From<PaymentsError> for Problem {
    fn from(err: PaymentsError) -> Self {
        match err {
            PaymentsError::Order(err) => err.into(),
            PaymentsError::Provider(err) => err.into(),
            PaymentsError::DeadlinePassed => Problem::new(
                StatusCode::CONFLICT,
                "payment-deadline-passed",
                "Too late to pay",
            )
            .with_detail(err.to_string()),
            PaymentsError::PaymentUnknown => {
                Problem::new(StatusCode::CONFLICT, "payment-unknown", "Payment unknown")
                    .with_detail(err.to_string())
            }
        }
    }
}

impl From<WebhookError> for Problem {
    fn from(err: WebhookError) -> Self {
        let detail = err.to_string();
        let (status, slug, title) = match err {
            WebhookError::Order(err) => return err.into(),
            WebhookError::Signature(SignatureError::Stale { .. }) => (
                StatusCode::BAD_REQUEST,
                "webhook-signature-stale",
                "Invalid webhook signature",
            ),
            WebhookError::MissingSignature | WebhookError::Signature(_) => (
                StatusCode::BAD_REQUEST,
                "webhook-signature-invalid",
                "Invalid webhook signature",
            ),
            WebhookError::Malformed(_) => (
                StatusCode::BAD_REQUEST,
                "webhook-malformed",
                "Malformed webhook",
            ),
            WebhookError::UnknownOrder(_) => (
                StatusCode::NOT_FOUND,
                "webhook-unknown-order",
                "Unknown order",
            ),
        };
        Problem::new(status, slug, title).with_detail(detail)
    }
}

/// `problem`, with a `Retry-After` of at least a second.
fn retry_after(problem: Problem, seconds: u64) -> Problem {
    problem.with_retry_after(seconds.max(1))
}

#[cfg(test)]
mod tests {
    use pulse_kit::outbox::OutboxError;

    use super::*;

    #[test]
    fn an_unreachable_database_is_a_503_to_retry_and_other_database_errors_a_500() {
        let refused =
            || sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        for err in [
            OrderError::Db(sqlx::Error::PoolTimedOut),
            OrderError::Db(refused()),
            OrderError::Outbox(OutboxError::Sql(refused())),
        ] {
            let shown = err.to_string();
            let problem = Problem::from(err);
            assert_eq!(
                (problem.status, problem.retry_after_secs),
                (503, Some(1)),
                "{shown}"
            );
            assert!(problem.detail.is_some(), "{shown}");
        }
        for err in [
            OrderError::Db(sqlx::Error::RowNotFound),
            OrderError::Outbox(OutboxError::Sql(sqlx::Error::RowNotFound)),
        ] {
            let problem = Problem::from(err);
            assert_eq!((problem.status, problem.retry_after_secs), (500, None));
        }
    }
}
