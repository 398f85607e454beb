-- Kafka consumer state, committed in the same transaction as the handler's effects.
CREATE TABLE consumer_offsets (
    group_name  TEXT        NOT NULL,
    topic       TEXT        NOT NULL,
    partition   INT         NOT NULL,
    next_offset BIGINT      NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (group_name, topic, partition)
);

-- Live replicas of a consumer group; partitions are shared among them.
CREATE TABLE consumer_members (
    group_name   TEXT        NOT NULL,
    topic        TEXT        NOT NULL,
    member_id    UUID        NOT NULL,
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (group_name, topic, member_id)
);

-- Events already applied, so a republished event (same id) has no second effect.
CREATE TABLE consumer_processed_events (
    group_name   TEXT        NOT NULL,
    event_id     UUID        NOT NULL,
    processed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (group_name, event_id)
);

CREATE INDEX consumer_processed_events_at ON consumer_processed_events (processed_at);
