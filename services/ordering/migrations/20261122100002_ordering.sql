-- Ordering: products with their stock, orders (seckill vouchers and products) and the payment
-- provider's events already applied.

CREATE TABLE products (
    id          UUID PRIMARY KEY,
    name        TEXT NOT NULL,
    price_minor BIGINT NOT NULL CHECK (price_minor >= 0),
    currency    TEXT NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- Taken by one conditional UPDATE (stock >= n) in the order's transaction: never negative.
    stock       INT NOT NULL CHECK (stock >= 0),
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE orders (
    -- For seckill orders, the id the reservation carried: creating it twice is impossible.
    id                  UUID PRIMARY KEY,
    kind                TEXT NOT NULL CHECK (kind IN ('SECKILL', 'PRODUCT')),
    user_subject        TEXT NOT NULL,
    campaign_id         TEXT,
    product_id          UUID REFERENCES products (id),
    quantity            INT NOT NULL CHECK (quantity > 0),
    unit_price_minor    BIGINT NOT NULL CHECK (unit_price_minor >= 0),
    subtotal_minor      BIGINT NOT NULL CHECK (subtotal_minor >= 0),
    discount_minor      BIGINT NOT NULL DEFAULT 0 CHECK (discount_minor >= 0),
    amount_minor        BIGINT NOT NULL CHECK (amount_minor >= 0),
    currency            TEXT NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    voucher_id          UUID,
    status              TEXT NOT NULL CHECK (status IN ('PENDING_PAYMENT', 'PAID', 'CANCELLED', 'REFUNDED')),
    -- Unpaid at this time, the sweeper cancels it.
    payment_deadline    TIMESTAMPTZ NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    paid_at             TIMESTAMPTZ,
    cancelled_at        TIMESTAMPTZ,
    cancel_reason       TEXT,
    refunded_at         TIMESTAMPTZ,
    payment_provider    TEXT,
    checkout_session_id TEXT,
    checkout_url        TEXT,
    payment_intent_id   TEXT,
    refund_id           TEXT,
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((kind = 'SECKILL') = (campaign_id IS NOT NULL)),
    CHECK ((kind = 'PRODUCT') = (product_id IS NOT NULL)),
    CHECK (amount_minor = subtotal_minor - discount_minor)
);

CREATE INDEX orders_unpaid_by_deadline ON orders (payment_deadline) WHERE status = 'PENDING_PAYMENT';
CREATE INDEX orders_by_user ON orders (user_subject, created_at DESC);
CREATE UNIQUE INDEX orders_by_checkout_session ON orders (checkout_session_id) WHERE checkout_session_id IS NOT NULL;
CREATE INDEX orders_by_payment_intent ON orders (payment_intent_id) WHERE payment_intent_id IS NOT NULL;

-- Webhook events applied, by the provider's event id: the same event twice changes state once.
CREATE TABLE payment_events (
    provider_event_id TEXT PRIMARY KEY,
    event_type        TEXT NOT NULL,
    order_id          UUID NOT NULL REFERENCES orders (id),
    outcome           TEXT NOT NULL,
    received_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);
