-- Marketing's durable record of seckill sales, from ordering's events: a row per seckill order
-- (OrderCreated), PAID on OrderPaid, CANCELLED on OrderCancelled. Redis holds the live counters;
-- when Redis loses them, they are rebuilt from this table (never from the configured stock):
-- sold = the rows not CANCELLED, the buyers hash from them, the unpaid ones as releasable.
CREATE TABLE seckill_sales (
    order_id      UUID PRIMARY KEY,
    campaign_id   TEXT NOT NULL REFERENCES campaigns (id),
    buyer_subject TEXT NOT NULL,
    status        TEXT NOT NULL CHECK (status IN ('UNPAID', 'PAID', 'CANCELLED')),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    paid_at       TIMESTAMPTZ,
    cancelled_at  TIMESTAMPTZ,
    -- When Redis gave the cancelled sale's unit back (NULL: still to do; the upkeep job retries).
    released_at   TIMESTAMPTZ,
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((status = 'CANCELLED') = (cancelled_at IS NOT NULL))
);

CREATE INDEX seckill_sales_campaign ON seckill_sales (campaign_id, status);
CREATE INDEX seckill_sales_unreleased ON seckill_sales (cancelled_at)
    WHERE status = 'CANCELLED' AND released_at IS NULL;

-- Sales made before this table existed: the paid ones have a voucher (a revoked voucher was
-- refunded, which never gave the unit back either). Unpaid ones are recorded by their next event.
INSERT INTO seckill_sales (order_id, campaign_id, buyer_subject, status, created_at, paid_at)
SELECT source_order_id, campaign_id, owner_subject, 'PAID', issued_at, issued_at
FROM vouchers
ON CONFLICT (order_id) DO NOTHING;
