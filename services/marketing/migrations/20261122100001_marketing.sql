-- Marketing: seckill campaigns and the vouchers in users' wallets.

-- A campaign sells `stock` vouchers between starts_at and ends_at. Its live counters (sold,
-- remaining, buyers) are in Redis; this row is its definition.
CREATE TABLE campaigns (
    -- `<namespace>/<name>` of the operator's SeckillCampaign, or a UUID.
    id                  TEXT PRIMARY KEY CHECK (id ~ '^[A-Za-z0-9._/-]{1,300}$'),
    voucher_title       TEXT NOT NULL,
    voucher_value_minor BIGINT NOT NULL CHECK (voucher_value_minor > 0),
    currency            TEXT NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    price_minor         BIGINT NOT NULL CHECK (price_minor >= 0),
    stock               INT NOT NULL CHECK (stock > 0),
    per_user_limit      INT NOT NULL DEFAULT 1 CHECK (per_user_limit >= 1),
    starts_at           TIMESTAMPTZ NOT NULL,
    ends_at             TIMESTAMPTZ NOT NULL,
    closed_at           TIMESTAMPTZ,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);

CREATE INDEX campaigns_ends_at ON campaigns (ends_at);

-- A voucher is issued when a seckill order is paid (one per order); an order of products may
-- use it: it is HELD for the order being placed, USED once the order exists, AVAILABLE again if
-- the order dies, REVOKED if its own purchase is refunded.
CREATE TABLE vouchers (
    id              UUID PRIMARY KEY,
    owner_subject   TEXT NOT NULL,
    campaign_id     TEXT NOT NULL REFERENCES campaigns (id),
    -- The seckill order that bought it: issuing twice for one order is impossible.
    source_order_id UUID NOT NULL UNIQUE,
    title           TEXT NOT NULL,
    value_minor     BIGINT NOT NULL CHECK (value_minor > 0),
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('AVAILABLE', 'HELD', 'USED', 'REVOKED')),
    -- The order holding or using it.
    order_id        UUID,
    held_at         TIMESTAMPTZ,
    used_at         TIMESTAMPTZ,
    issued_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK ((status IN ('HELD', 'USED')) = (order_id IS NOT NULL))
);

CREATE INDEX vouchers_wallet ON vouchers (owner_subject, issued_at DESC);
CREATE INDEX vouchers_holds ON vouchers (held_at) WHERE status = 'HELD';
