-- A component table used by the kit's integration tests: one row per applied event.
CREATE TABLE effects (
    event_id   UUID   NOT NULL,
    seq        BIGINT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
