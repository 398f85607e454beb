//! Ordering's HTTP API: products, orders (normal sale, polling of seckill orders), payments and
//! the provider's webhook.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use pulse_kit::auth::Principal;
use pulse_kit::config::CountryConfig;
use pulse_kit::idempotency::RequiredIdempotencyKey;
use pulse_kit::problem::{ApiJson, ApiPath, Problem};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{self, OrderKind, OrderStatus};
use crate::marketing_client::{MarketingClient, VoucherCallError};
use crate::payments::signature::{self, SignatureError};
use crate::payments::{CheckoutRequest, PaymentError, PaymentProvider, WebhookEvent};
use crate::permit::{PermitError, Permits};
use crate::store::{NewProductOrder, OrderError, OrderRow, ProductRow, Store, WebhookOutcome};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// Tables.
    pub store: Store,
    /// Per-product permits.
    pub permits: Arc<Permits>,
    /// Marketing's voucher API.
    pub marketing: MarketingClient,
    /// Payment provider.
    pub provider: Arc<dyn PaymentProvider>,
    /// Webhook signing secrets.
    pub webhook_secrets: Arc<Vec<Vec<u8>>>,
    /// The country.
    pub country: Arc<CountryConfig>,
    /// Webhooks refused (bad signature, stale, unknown order).
    pub webhooks_refused: Counter,
}

impl AppState {
    fn payment_timeout(&self) -> Duration {
        Duration::from_secs(u64::from(self.country.ordering.payment_timeout_seconds))
    }
}

/// The routes.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/v1/products", get(list_products).post(create_product))
        .route("/v1/products/{id}", get(get_product).put(update_product))
        .route("/v1/orders", get(list_orders).post(place_order))
        .route("/v1/orders/{id}", get(get_order))
        .route("/v1/orders/{id}/pay", post(pay))
        .route("/v1/orders/{id}/cancel", post(cancel))
        .route("/v1/orders/{id}/refund", post(refund))
        .route("/v1/payments/webhook", post(webhook))
        .with_state(state)
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
            .with("status", status),
            OrderError::Amount(err) => Problem::unprocessable(err.to_string()),
            OrderError::Db(sqlx::Error::PoolTimedOut) => {
                Problem::unavailable("the database is busy; retry shortly")
            }
            OrderError::Db(err) => Problem::internal(&err),
            OrderError::Outbox(err) => Problem::internal(&err),
        }
    }
}

fn parse_id(field: &str, text: &str) -> Result<Uuid, Problem> {
    text.parse().map_err(|_| {
        Problem::bad_request(format!("{field}: `{text}` is not a UUID")).with("field", field)
    })
}

fn with_retry_after(problem: Problem, seconds: u64) -> Response {
    let mut response = problem.into_response();
    if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

fn voucher_problem(err: VoucherCallError) -> Response {
    match err {
        VoucherCallError::Rejected(reason) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "voucher-rejected",
            "Voucher cannot be used",
        )
        .with_detail(reason)
        .with("field", "voucherId")
        .into_response(),
        VoucherCallError::Unavailable(why) => with_retry_after(
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
        VoucherCallError::CircuitOpen(retry_in) => with_retry_after(
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

fn payment_problem(err: PaymentError) -> Problem {
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

// -------------------------------------------------------------------------------- products

/// Body of `POST /v1/products` and `PUT /v1/products/{id}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProductInput {
    /// Name (1 to 200 characters).
    pub name: String,
    /// Price in minor units of the country's currency.
    pub price_minor: i64,
    /// Units in stock.
    pub stock: u32,
}

impl ProductInput {
    fn checked(&self) -> Result<(String, i64, i32), Problem> {
        let name = self.name.trim();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(
                Problem::unprocessable("name: must be 1 to 200 characters").with("field", "name")
            );
        }
        if !(0..=domain::MAX_AMOUNT_MINOR).contains(&self.price_minor) {
            return Err(Problem::unprocessable(format!(
                "priceMinor: must be from 0 to {}",
                domain::MAX_AMOUNT_MINOR
            ))
            .with("field", "priceMinor"));
        }
        let stock = i32::try_from(self.stock).map_err(|_| {
            Problem::unprocessable("stock: must be at most 2147483647").with("field", "stock")
        })?;
        Ok((name.to_owned(), self.price_minor, stock))
    }
}

/// A list of products.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProductList {
    /// By name.
    pub items: Vec<ProductRow>,
}

/// Creates a product (role `admin`), priced in the country's currency.
#[utoipa::path(post, path = "/v1/products", tag = "ordering", request_body = ProductInput,
    responses((status = 201, body = ProductRow), (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create_product(
    State(app): State<AppState>,
    principal: Principal,
    ApiJson(input): ApiJson<ProductInput>,
) -> Result<Response, Problem> {
    principal.require_role("admin")?;
    let (name, price, stock) = input.checked()?;
    let product = app
        .store
        .create_product(&name, price, &app.country.currency, stock)
        .await?;
    let mut response = (StatusCode::CREATED, ApiJson(product.clone())).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/products/{}", product.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// Replaces a product's name, price and stock (role `admin`).
#[utoipa::path(put, path = "/v1/products/{id}", tag = "ordering", request_body = ProductInput,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ProductRow), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn update_product(
    State(app): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(input): ApiJson<ProductInput>,
) -> Result<ApiJson<ProductRow>, Problem> {
    principal.require_role("admin")?;
    let id = parse_id("id", &id)?;
    let (name, price, stock) = input.checked()?;
    Ok(ApiJson(
        app.store.update_product(id, &name, price, stock).await?,
    ))
}

/// Products on sale.
#[utoipa::path(get, path = "/v1/products", tag = "ordering", responses((status = 200, body = ProductList)))]
pub async fn list_products(State(app): State<AppState>) -> Result<ApiJson<ProductList>, Problem> {
    Ok(ApiJson(ProductList {
        items: app.store.products(500).await?,
    }))
}

/// One product, with its stock.
#[utoipa::path(get, path = "/v1/products/{id}", tag = "ordering", params(("id" = Uuid, Path)),
    responses((status = 200, body = ProductRow), (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json")))]
pub async fn get_product(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<ProductRow>, Problem> {
    let id = parse_id("id", &id)?;
    Ok(ApiJson(app.store.product(id).await?))
}

// ---------------------------------------------------------------------------------- orders

/// An order.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    /// Id.
    pub id: Uuid,
    /// What it buys.
    pub kind: OrderKind,
    /// Status.
    pub status: OrderStatus,
    /// Campaign (seckill orders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub campaign_id: Option<String>,
    /// Product (product orders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_id: Option<Uuid>,
    /// Units.
    pub quantity: i32,
    /// Unit price, minor units.
    pub unit_price_minor: i64,
    /// Before the voucher.
    pub subtotal_minor: i64,
    /// What the voucher took off.
    pub discount_minor: i64,
    /// To pay.
    pub amount_minor: i64,
    /// ISO 4217 currency.
    pub currency: String,
    /// Voucher used.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub voucher_id: Option<Uuid>,
    /// Unpaid at this time, the order is cancelled (UTC).
    pub payment_deadline: DateTime<Utc>,
    /// The same in the country's time zone (RFC 3339 with offset).
    pub payment_deadline_local: String,
    /// Created (UTC).
    pub created_at: DateTime<Utc>,
    /// Paid (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<DateTime<Utc>>,
    /// Cancelled (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Why: `payment-timeout` or `cancelled-by-buyer`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
    /// Refunded (UTC).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refunded_at: Option<DateTime<Utc>>,
    /// Where to pay, once a payment was started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkout_url: Option<String>,
}

impl OrderView {
    fn from_row(row: OrderRow, tz: chrono_tz::Tz) -> Self {
        Self {
            kind: row.kind(),
            status: row.status(),
            payment_deadline_local: row
                .payment_deadline
                .with_timezone(&tz)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
            id: row.id,
            campaign_id: row.campaign_id,
            product_id: row.product_id,
            quantity: row.quantity,
            unit_price_minor: row.unit_price_minor,
            subtotal_minor: row.subtotal_minor,
            discount_minor: row.discount_minor,
            amount_minor: row.amount_minor,
            currency: row.currency,
            voucher_id: row.voucher_id,
            payment_deadline: row.payment_deadline,
            created_at: row.created_at,
            paid_at: row.paid_at,
            cancelled_at: row.cancelled_at,
            cancel_reason: row.cancel_reason,
            refunded_at: row.refunded_at,
            checkout_url: row.checkout_url,
        }
    }
}

/// Body of `POST /v1/orders`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrderInput {
    /// The product.
    pub product_id: Uuid,
    /// Units (1 to 100, default 1).
    #[serde(default = "one")]
    pub quantity: u32,
    /// A voucher from the caller's wallet to take off the price.
    #[serde(default)]
    pub voucher_id: Option<Uuid>,
}

fn one() -> u32 {
    1
}

/// A list of orders.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct OrderList {
    /// Newest first.
    pub items: Vec<OrderView>,
}

/// Gives a held voucher back after the order did not happen (best effort: marketing also gives
/// back holds no order confirmed).
async fn release_voucher(app: &AppState, voucher: Option<(Uuid, i64)>, order: Uuid) {
    if let Some((voucher, _)) = voucher
        && let Err(err) = app.marketing.release(voucher, order).await
    {
        tracing::warn!(%voucher, %order, error = %err, "voucher not released now; its hold will expire");
    }
}

/// Buys a product at the normal price (any signed-in user; `Idempotency-Key` required). With
/// `voucherId`, marketing checks and holds the voucher first (deadline, retries, circuit
/// breaker); then a per-product permit admits the buyer to the stock transaction.
#[utoipa::path(post, path = "/v1/orders", tag = "ordering", request_body = OrderInput,
    params(("Idempotency-Key" = String, Header, description = "unique per operation; reuse it to retry")),
    responses((status = 201, body = OrderView),
              (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "product-not-found"),
              (status = 409, body = Problem, content_type = "application/problem+json", description = "out-of-stock"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "voucher-rejected or invalid input"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "product-busy, marketing-unavailable or marketing-circuit-open (Retry-After)")),
    security(("bearer" = [])))]
pub async fn place_order(
    State(app): State<AppState>,
    principal: Principal,
    _key: RequiredIdempotencyKey,
    ApiJson(input): ApiJson<OrderInput>,
) -> Result<Response, Response> {
    let user = principal.subject().to_owned();
    let product = app
        .store
        .product(input.product_id)
        .await
        .map_err(|e| Problem::from(e).into_response())?;
    let before = domain::amounts(product.price_minor, input.quantity, 0).map_err(|e| {
        Problem::unprocessable(e.to_string())
            .with("field", "quantity")
            .into_response()
    })?;
    let order_id = pulse_kit::new_id();
    let mut voucher = None;
    if let Some(voucher_id) = input.voucher_id {
        let validation = app
            .marketing
            .validate(voucher_id, &user, before.subtotal_minor, &product.currency)
            .await
            .map_err(voucher_problem)?;
        if !validation.valid {
            return Err(voucher_problem(VoucherCallError::Rejected(
                validation.rejection,
            )));
        }
        let discount = app
            .marketing
            .redeem(
                voucher_id,
                &user,
                order_id,
                before.subtotal_minor,
                &product.currency,
            )
            .await
            .map_err(voucher_problem)?;
        voucher = Some((voucher_id, discount));
    }
    let permit = match app.permits.acquire(product.id).await {
        Ok(permit) => permit,
        Err(PermitError::Busy) => {
            release_voucher(&app, voucher, order_id).await;
            return Err(with_retry_after(
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "product-busy",
                    "Too many buyers right now",
                )
                .with_detail(
                    "many people are buying this product at this moment; retry in a second",
                ),
                1,
            ));
        }
    };
    let placed = app
        .store
        .place_product_order(&NewProductOrder {
            id: order_id,
            user,
            product_id: product.id,
            quantity: input.quantity,
            voucher,
            payment_timeout: app.payment_timeout(),
        })
        .await;
    permit.release().await;
    let row = match placed {
        Ok(row) => row,
        Err(err) => {
            release_voucher(&app, voucher, order_id).await;
            return Err(Problem::from(err).into_response());
        }
    };
    let mut headers = HeaderMap::new();
    if let Ok(location) = HeaderValue::from_str(&format!("/v1/orders/{}", row.id)) {
        headers.insert(header::LOCATION, location);
    }
    Ok((
        StatusCode::CREATED,
        headers,
        ApiJson(OrderView::from_row(row, app.country.tz())),
    )
        .into_response())
}

async fn own_order(app: &AppState, principal: &Principal, id: &str) -> Result<OrderRow, Problem> {
    let id = parse_id("id", id)?;
    let row = app.store.order(id).await?;
    if row.user_subject == principal.subject() || principal.has_role("admin") {
        Ok(row)
    } else {
        Err(OrderError::OrderNotFound(id).into())
    }
}

/// One of the caller's orders. A seckill order appears moments after its `202`; until then
/// this answers 404 `order-not-found`.
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "ordering", params(("id" = Uuid, Path)),
    responses((status = 200, body = OrderView), (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn get_order(
    State(app): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<OrderView>, Problem> {
    let row = own_order(&app, &principal, &id).await?;
    Ok(ApiJson(OrderView::from_row(row, app.country.tz())))
}

/// The caller's orders, newest first.
#[utoipa::path(get, path = "/v1/orders", tag = "ordering",
    responses((status = 200, body = OrderList), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn list_orders(
    State(app): State<AppState>,
    principal: Principal,
) -> Result<ApiJson<OrderList>, Problem> {
    let tz = app.country.tz();
    let rows = app.store.orders_of(principal.subject(), 200).await?;
    Ok(ApiJson(OrderList {
        items: rows
            .into_iter()
            .map(|r| OrderView::from_row(r, tz))
            .collect(),
    }))
}

/// Cancels one of the caller's unpaid orders; its stock is given back.
#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "ordering", params(("id" = Uuid, Path)),
    responses((status = 200, body = OrderView), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn cancel(
    State(app): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<OrderView>, Problem> {
    let id = parse_id("id", &id)?;
    let row = app.store.cancel(id, principal.subject()).await?;
    if let Some(session) = &row.checkout_session_id
        && let Err(err) = app.provider.expire_checkout(session).await
    {
        tracing::warn!(order = %row.id, error = %err, "could not expire the checkout");
    }
    Ok(ApiJson(OrderView::from_row(row, app.country.tz())))
}

/// A started payment.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentStarted {
    /// The order.
    pub order_id: Uuid,
    /// Provider (`stripe`, `sandbox`).
    pub provider: String,
    /// Checkout session.
    pub session_id: String,
    /// Where the buyer pays.
    pub checkout_url: String,
    /// Pay before this time (UTC).
    pub payment_deadline: DateTime<Utc>,
}

/// Starts (or returns the already started) payment of one of the caller's unpaid orders.
#[utoipa::path(post, path = "/v1/orders/{id}/pay", tag = "ordering", params(("id" = Uuid, Path)),
    responses((status = 200, body = PaymentStarted), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json"),
              (status = 502, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn pay(
    State(app): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<PaymentStarted>, Problem> {
    let row = own_order(&app, &principal, &id).await?;
    if row.user_subject != principal.subject() {
        return Err(OrderError::OrderNotFound(row.id).into());
    }
    let started = |row: &OrderRow| -> Option<PaymentStarted> {
        Some(PaymentStarted {
            order_id: row.id,
            provider: row.payment_provider.clone()?,
            session_id: row.checkout_session_id.clone()?,
            checkout_url: row.checkout_url.clone().unwrap_or_default(),
            payment_deadline: row.payment_deadline,
        })
    };
    if row.status() != OrderStatus::PendingPayment {
        return Err(OrderError::WrongStatus {
            id: row.id,
            status: row.status().as_str(),
            action: "paying",
        }
        .into());
    }
    if let Some(already) = started(&row) {
        return Ok(ApiJson(already));
    }
    if row.payment_deadline <= Utc::now() {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            "payment-deadline-passed",
            "Too late to pay",
        )
        .with_detail("the time to pay this order is over; it is being cancelled"));
    }
    let description = match (&row.campaign_id, &row.product_id) {
        (Some(campaign), _) => format!("Seckill voucher ({campaign})"),
        (None, Some(product)) => format!("{} × product {product}", row.quantity),
        _ => "Pulse order".to_owned(),
    };
    let checkout = app
        .provider
        .create_checkout(&CheckoutRequest {
            order_id: row.id,
            amount_minor: row.amount_minor,
            currency: row.currency.clone(),
            description,
        })
        .await
        .map_err(payment_problem)?;
    let row = match app
        .store
        .attach_checkout(
            row.id,
            app.provider.name(),
            &checkout.session_id,
            &checkout.url,
        )
        .await
    {
        Ok(row) => row,
        Err(err) => {
            app.provider
                .expire_checkout(&checkout.session_id)
                .await
                .ok();
            return Err(err.into());
        }
    };
    started(&row)
        .map(ApiJson)
        .ok_or_else(|| Problem::internal(&"the checkout was not stored"))
}

/// Refunds a paid order in full (role `admin`): `REFUNDED`, with `OrderRefunded`.
#[utoipa::path(post, path = "/v1/orders/{id}/refund", tag = "ordering", params(("id" = Uuid, Path)),
    responses((status = 200, body = OrderView), (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"),
              (status = 502, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn refund(
    State(app): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<OrderView>, Problem> {
    principal.require_role("admin")?;
    let id = parse_id("id", &id)?;
    let row = app.store.order(id).await?;
    let tz = app.country.tz();
    match row.status() {
        OrderStatus::Refunded => return Ok(ApiJson(OrderView::from_row(row, tz))),
        OrderStatus::Paid => {}
        other => {
            return Err(OrderError::WrongStatus {
                id,
                status: other.as_str(),
                action: "refunding",
            }
            .into());
        }
    }
    let refund = match &row.payment_intent_id {
        Some(intent) => {
            app.provider
                .refund(id, intent)
                .await
                .map_err(payment_problem)?
                .refund_id
        }
        // Paid without a payment (nothing to pay): nothing to send back.
        None if row.amount_minor == 0 => "nothing-to-refund".to_owned(),
        None => {
            return Err(Problem::new(
                StatusCode::CONFLICT,
                "payment-unknown",
                "Payment unknown",
            )
            .with_detail("the provider's payment for this order is not known; refund it from the provider's dashboard"));
        }
    };
    let row = app.store.mark_refunded(id, &refund).await?;
    Ok(ApiJson(OrderView::from_row(row, tz)))
}

// -------------------------------------------------------------------------------- webhooks

/// The webhook's answer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAck {
    /// Always true.
    pub received: bool,
    /// What happened: `paid`, `refunded`, `duplicate`, `already-paid`, `late-payment`,
    /// `amount-mismatch`, `not-paid-yet`, `ignored`.
    pub outcome: String,
}

fn ack(outcome: &str) -> ApiJson<WebhookAck> {
    ApiJson(WebhookAck {
        received: true,
        outcome: outcome.to_owned(),
    })
}

/// The payment provider's webhook (no token: the `Stripe-Signature` header authenticates it).
/// Idempotent on the provider's event id.
#[utoipa::path(post, path = "/v1/payments/webhook", tag = "ordering",
    params(("Stripe-Signature" = String, Header, description = "t=<unix>,v1=<hex HMAC-SHA256 of `t.body`>")),
    request_body(content = String, content_type = "application/json"),
    responses((status = 200, body = WebhookAck),
              (status = 400, body = Problem, content_type = "application/problem+json", description = "webhook-signature-invalid, webhook-signature-stale or webhook-malformed"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "webhook-unknown-order")))]
pub async fn webhook(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<ApiJson<WebhookAck>, Problem> {
    let body = body.map_err(|rejection| {
        Problem::new(rejection.status(), "webhook-malformed", "Malformed webhook")
            .with_detail(rejection.body_text())
    })?;
    let refused = |problem: Problem| {
        app.webhooks_refused.inc();
        tracing::warn!(problem = %problem, "webhook refused");
        problem
    };
    let header = headers
        .get(signature::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            refused(
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    "webhook-signature-invalid",
                    "Invalid webhook signature",
                )
                .with_detail("the Stripe-Signature header is missing"),
            )
        })?;
    signature::verify(header, &body, &app.webhook_secrets, Utc::now().timestamp()).map_err(
        |err| {
            let slug = match err {
                SignatureError::Stale { .. } => "webhook-signature-stale",
                _ => "webhook-signature-invalid",
            };
            refused(
                Problem::new(StatusCode::BAD_REQUEST, slug, "Invalid webhook signature")
                    .with_detail(err.to_string()),
            )
        },
    )?;
    let event = WebhookEvent::parse(&body).map_err(|err| {
        refused(
            Problem::new(
                StatusCode::BAD_REQUEST,
                "webhook-malformed",
                "Malformed webhook",
            )
            .with_detail(err.to_string()),
        )
    })?;
    let outcome = match &event {
        WebhookEvent::CheckoutCompleted {
            event_id,
            event_type,
            order,
            paid,
            payment_intent,
            amount_minor,
            currency,
            ..
        } => {
            app.store
                .apply_checkout_completed(
                    event_id,
                    event_type,
                    order,
                    *paid,
                    payment_intent.as_deref(),
                    *amount_minor,
                    currency.as_deref(),
                )
                .await?
        }
        WebhookEvent::Refunded {
            event_id,
            event_type,
            order,
        } => {
            app.store
                .apply_refunded(event_id, event_type, order)
                .await?
        }
        WebhookEvent::Other { .. } => return Ok(ack("ignored")),
    };
    match outcome {
        WebhookOutcome::Applied(row) => Ok(ack(match row.status() {
            OrderStatus::Refunded => "refunded",
            _ => "paid",
        })),
        WebhookOutcome::Duplicate => Ok(ack("duplicate")),
        WebhookOutcome::NoChange(why) => Ok(ack(why)),
        WebhookOutcome::UnknownOrder => Err(refused(
            Problem::new(
                StatusCode::NOT_FOUND,
                "webhook-unknown-order",
                "Unknown order",
            )
            .with_detail(format!("event {} names no known order", event.id())),
        )),
        WebhookOutcome::LatePayment {
            order,
            payment_intent,
        } => {
            // Paid after the order was cancelled: send the money back now (the sweeper retries
            // if the provider is down).
            match app.provider.refund(order, &payment_intent).await {
                Ok(refund) => {
                    app.store
                        .record_late_refund(order, &refund.refund_id)
                        .await?;
                    Ok(ack("late-payment-refunded"))
                }
                Err(err) => {
                    tracing::warn!(%order, error = %err, "late payment not refunded yet; the sweeper retries");
                    Ok(ack("late-payment"))
                }
            }
        }
    }
}

/// The OpenAPI document of ordering's endpoints.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(create_product, update_product, list_products, get_product, place_order, get_order, list_orders,
          cancel, pay, refund, webhook),
    components(schemas(Problem, ProductInput, ProductRow, ProductList, OrderInput, OrderView, OrderList,
                       OrderKind, OrderStatus, PaymentStarted, WebhookAck)),
    tags((name = "ordering", description = "Products, orders and payments"))
)]
pub struct OrderingApi;
