-- Idempotency-Key records (Stripe semantics). A key is scoped to the caller that sent it.
CREATE TABLE idempotency_keys (
    scope            TEXT        NOT NULL,
    idempotency_key  TEXT        NOT NULL,
    fingerprint      BYTEA       NOT NULL,
    state            TEXT        NOT NULL CHECK (state IN ('running', 'done')),
    response_status  SMALLINT,
    response_headers JSONB,
    response_body    BYTEA,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at     TIMESTAMPTZ,
    PRIMARY KEY (scope, idempotency_key)
);

CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
