//! Ordering's HTTP API: products, orders (normal sale, polling of seckill orders), payments and
//! the provider's webhook. Handlers authorize, parse, call a flow ([`crate::catalogue`],
//! [`crate::checkout`], [`crate::payments`]) and answer; the flows' errors become problems in
//! `http/problems.rs`, and the bodies are in `http/views.rs`.
//!
//! Authorization comes first: a role extractor (or the [`Principal`]) stands before the body,
//! so refusals always come in the order 401 (no valid token), 403 (no role), then 4xx (invalid
//! input). Every endpoint with an effect builds its answer ([`Answer`]) with one function of the
//! flow's outcome: the flow records it, in the effect's transaction, as the answer to the
//! request's `Idempotency-Key` ([`RecordAnswer`]), and the handler sends it. A retry, or a
//! concurrent duplicate, gets the first answer byte for byte.
//!
//! With the sandbox provider, [`sandbox_routes`] adds its checkout pages (HTML, not API).

mod poll;
mod problems;
mod sandbox_page;
mod views;

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use pulse_kit::auth::{Admin, Principal};
use pulse_kit::config::CountryConfig;
use pulse_kit::idempotency::{Answer, IdempotencyKey, RecordAnswer};
use pulse_kit::problem::{ApiJson, ApiPath, Problem};
use uuid::Uuid;

pub use poll::RESERVATION_LOST_AFTER;
pub use sandbox_page::sandbox_routes;

pub use views::{
    OrderInput, OrderList, OrderView, PaymentStarted, ProductInput, ProductList, WebhookAck,
    WebhookEventBody,
};

use crate::catalogue::Catalogue;
use crate::checkout::Checkout;
use crate::domain::{CancelReason, OrderKind, OrderStatus};
use crate::payments::{Payments, signature};
use crate::store::{OrderError, OrderRow, ProductRow, Store};

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// Tables (reads).
    pub store: Store,
    /// Creating and replacing products.
    pub catalogue: Catalogue,
    /// Placing product orders.
    pub checkout: Checkout,
    /// Paying, cancelling, refunding; webhooks.
    pub payments: Payments,
    /// The country.
    pub country: Arc<CountryConfig>,
}

impl AppState {
    fn view(&self, row: OrderRow) -> OrderView {
        OrderView::from_row(row, self.country.tz())
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

fn parse_id(field: &str, text: &str) -> Result<Uuid, Problem> {
    text.parse().map_err(|_| {
        Problem::bad_request(format!("{field}: `{text}` is not a UUID")).with("field", field)
    })
}

// -------------------------------------------------------------------------------- products

/// Creates a product (role `admin`), priced in the country's currency.
#[utoipa::path(post, path = "/v1/products", tag = "ordering", request_body = ProductInput,
    responses((status = 201, body = ProductRow), (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn create_product(
    State(app): State<AppState>,
    _admin: Admin,
    key: Option<IdempotencyKey>,
    ApiJson(input): ApiJson<ProductInput>,
) -> Result<Answer, Problem> {
    let draft = input.draft()?;
    let answer = |product: &ProductRow| {
        Answer::json(StatusCode::CREATED, product).at(format!("/v1/products/{}", product.id))
    };
    let product = app
        .catalogue
        .create(
            &draft,
            &app.country.currency,
            RecordAnswer::new(key.as_ref(), &answer),
        )
        .await?;
    Ok(answer(&product))
}

/// Replaces a product's name, price and stock (role `admin`).
#[utoipa::path(put, path = "/v1/products/{id}", tag = "ordering", request_body = ProductInput,
    params(("id" = Uuid, Path)),
    responses((status = 200, body = ProductRow), (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 422, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn update_product(
    State(app): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
    key: Option<IdempotencyKey>,
    ApiJson(input): ApiJson<ProductInput>,
) -> Result<Answer, Problem> {
    let id = parse_id("id", &id)?;
    let draft = input.draft()?;
    let answer = |product: &ProductRow| Answer::json(StatusCode::OK, product);
    let product = app
        .catalogue
        .update(id, &draft, RecordAnswer::new(key.as_ref(), &answer))
        .await?;
    Ok(answer(&product))
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

/// Buys a product at the normal price (any signed-in user; `Idempotency-Key` required). With
/// `voucherId`, marketing checks and holds the voucher first (deadline, retries, circuit
/// breaker); then a per-product permit admits the buyer to the stock transaction.
#[utoipa::path(post, path = "/v1/orders", tag = "ordering", request_body = OrderInput,
    params(("Idempotency-Key" = String, Header, description = "unique per operation; reuse it to retry")),
    responses((status = 201, body = OrderView),
              (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "product-not-found, or voucher-not-found (no such voucher)"),
              (status = 409, body = Problem, content_type = "application/problem+json", description = "out-of-stock"),
              (status = 422, body = Problem, content_type = "application/problem+json", description = "voucher-rejected (someone else's, used or held, another currency) or invalid input"),
              (status = 503, body = Problem, content_type = "application/problem+json", description = "product-busy, marketing-unavailable or marketing-circuit-open (Retry-After)")),
    security(("bearer" = [])))]
pub async fn place_order(
    State(app): State<AppState>,
    principal: Principal,
    key: IdempotencyKey,
    ApiJson(input): ApiJson<OrderInput>,
) -> Result<Answer, Problem> {
    let answer = |order: &OrderRow| {
        Answer::json(StatusCode::CREATED, &app.view(order.clone()))
            .at(format!("/v1/orders/{}", order.id))
    };
    let order = app
        .checkout
        .place_product_order(
            principal.subject(),
            &input.request(),
            RecordAnswer::new(Some(&key), &answer),
        )
        .await?;
    Ok(answer(&order))
}

/// One of the caller's orders. A seckill order appears moments after its `202`; until then
/// this answers 404 `order-not-found`. An order id still unknown [`RESERVATION_LOST_AFTER`]
/// after it was made answers 410 `reservation-lost`: the reservation was lost before it became
/// an order, nothing was charged, and the buyer may buy again.
#[utoipa::path(get, path = "/v1/orders/{id}", tag = "ordering", params(("id" = Uuid, Path)),
    responses((status = 200, body = OrderView), (status = 400, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json", description = "order-not-found (a seckill order may still be being created)"),
              (status = 410, body = Problem, content_type = "application/problem+json", description = "reservation-lost: the seckill reservation never became an order; buy again")),
    security(("bearer" = [])))]
pub async fn get_order(
    State(app): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<OrderView>, Problem> {
    let id = parse_id("id", &id)?;
    // Someone else's order answers like no order at all.
    let order = match app.store.order(id).await {
        Ok(order) if order.user_subject == principal.subject() || principal.has_role("admin") => {
            order
        }
        Ok(_) | Err(OrderError::OrderNotFound(_)) => return Err(poll::unknown_order(id)),
        Err(err) => return Err(err.into()),
    };
    Ok(ApiJson(app.view(order)))
}

/// The caller's orders, newest first.
#[utoipa::path(get, path = "/v1/orders", tag = "ordering",
    responses((status = 200, body = OrderList), (status = 401, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn list_orders(
    State(app): State<AppState>,
    principal: Principal,
) -> Result<ApiJson<OrderList>, Problem> {
    let orders = app.store.orders_of(principal.subject(), 200).await?;
    Ok(ApiJson(OrderList {
        items: orders.into_iter().map(|o| app.view(o)).collect(),
    }))
}

/// Cancels one of the caller's unpaid orders; its stock is given back.
#[utoipa::path(post, path = "/v1/orders/{id}/cancel", tag = "ordering", operation_id = "cancel_order", params(("id" = Uuid, Path)),
    responses((status = 200, body = OrderView), (status = 404, body = Problem, content_type = "application/problem+json"),
              (status = 409, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn cancel(
    State(app): State<AppState>,
    principal: Principal,
    ApiPath(id): ApiPath<String>,
    key: Option<IdempotencyKey>,
) -> Result<Answer, Problem> {
    let id = parse_id("id", &id)?;
    let answer = |order: &OrderRow| Answer::json(StatusCode::OK, &app.view(order.clone()));
    let order = app
        .payments
        .cancel(
            id,
            principal.subject(),
            RecordAnswer::new(key.as_ref(), &answer),
        )
        .await?;
    Ok(answer(&order))
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
    key: Option<IdempotencyKey>,
) -> Result<Answer, Problem> {
    let id = parse_id("id", &id)?;
    let answer = |started: &PaymentStarted| Answer::json(StatusCode::OK, started);
    let started = app
        .payments
        .pay(
            id,
            principal.subject(),
            RecordAnswer::new(key.as_ref(), &answer),
        )
        .await?;
    Ok(answer(&started))
}

/// Refunds a paid order in full (role `admin`): `REFUNDED`, with `OrderRefunded`.
#[utoipa::path(post, path = "/v1/orders/{id}/refund", tag = "ordering", params(("id" = Uuid, Path)),
    responses((status = 200, body = OrderView), (status = 401, body = Problem, content_type = "application/problem+json"),
              (status = 403, body = Problem, content_type = "application/problem+json"),
              (status = 404, body = Problem, content_type = "application/problem+json"), (status = 409, body = Problem, content_type = "application/problem+json"),
              (status = 502, body = Problem, content_type = "application/problem+json"), (status = 503, body = Problem, content_type = "application/problem+json")),
    security(("bearer" = [])))]
pub async fn refund(
    State(app): State<AppState>,
    _admin: Admin,
    ApiPath(id): ApiPath<String>,
    key: Option<IdempotencyKey>,
) -> Result<Answer, Problem> {
    let id = parse_id("id", &id)?;
    let answer = |order: &OrderRow| Answer::json(StatusCode::OK, &app.view(order.clone()));
    let order = app
        .payments
        .refund(id, RecordAnswer::new(key.as_ref(), &answer))
        .await?;
    Ok(answer(&order))
}

// -------------------------------------------------------------------------------- webhooks

/// The payment provider's webhook (no token: the `Stripe-Signature` header authenticates it).
/// Idempotent on the provider's event id.
#[utoipa::path(post, path = "/v1/payments/webhook", tag = "ordering",
    params(("Stripe-Signature" = String, Header, pattern = r"^t=[0-9]{1,18}(,v[0-9]=[0-9a-f]{64})+$",
             description = "`t=<unix seconds>,v1=<hex HMAC-SHA256 of `<t>.<body>` with the webhook secret>` (more `v1=` during a secret rotation; `v0=` is ignored)")),
    request_body(content = WebhookEventBody, content_type = "application/json"),
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
    let signature = headers
        .get(signature::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok());
    let outcome = app.payments.handle_webhook(signature, &body).await?;
    Ok(ApiJson(outcome.into()))
}

/// The OpenAPI document of ordering's endpoints.
#[derive(utoipa::OpenApi)]
#[openapi(
    paths(create_product, update_product, list_products, get_product, place_order, get_order, list_orders,
          cancel, pay, refund, webhook),
    components(schemas(Problem, ProductInput, ProductRow, ProductList, OrderInput, OrderView, OrderList,
                       OrderKind, OrderStatus, CancelReason, PaymentStarted, WebhookEventBody, WebhookAck)),
    tags((name = "ordering", description = "Products, orders and payments"))
)]
pub struct OrderingApi;
