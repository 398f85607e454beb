-- One message to one recipient on one channel. A consumer creates it from one event (or the
-- reminder job from one reminder), in the transaction that records the event, so an event
-- becomes its deliveries exactly once; workers then send it. Contact data (addresses, phone
-- numbers, names) is never stored: it is identity's, read when the message is sent.
CREATE TABLE deliveries (
    id              uuid PRIMARY KEY,
    -- The event's id, or for a reminder the appointment's.
    source_id       uuid NOT NULL,
    channel         text NOT NULL CHECK (channel IN ('email', 'sms', 'in_app')),
    -- The user (the `sub` of their tokens).
    recipient       text NOT NULL,
    kind            text NOT NULL,
    -- The user gets it whatever their preferences (a cancellation by the practitioner, a sign-in).
    required        boolean NOT NULL,
    -- What the templates say (domain::Notice), never contact data.
    notice          jsonb NOT NULL,
    -- When the event happened (delivery delay is measured from it).
    occurred_at     timestamptz NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'skipped', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL,
    -- Why it was skipped or died (`opted_out`, `no_address`, `no_provider`, the last error).
    outcome         text,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    UNIQUE (source_id, channel, recipient)
);

CREATE INDEX deliveries_due ON deliveries (channel, next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_dead ON deliveries (finished_at DESC) WHERE status = 'dead';

-- In-app notifications, per user. `seq` orders a user's stream and is its SSE event id.
CREATE TABLE inbox (
    seq         bigserial PRIMARY KEY,
    -- The delivery that wrote it.
    id          uuid NOT NULL UNIQUE REFERENCES deliveries (id),
    user_id     text NOT NULL,
    kind        text NOT NULL,
    title       text NOT NULL,
    body        text NOT NULL,
    required    boolean NOT NULL,
    created_at  timestamptz NOT NULL,
    read_at     timestamptz
);

CREATE INDEX inbox_by_user ON inbox (user_id, seq DESC);
CREATE INDEX inbox_unread ON inbox (user_id) WHERE read_at IS NULL;

-- What a user wants. No row: every channel on, no quiet hours.
CREATE TABLE preferences (
    user_id        text PRIMARY KEY,
    email_enabled  boolean NOT NULL,
    sms_enabled    boolean NOT NULL,
    in_app_enabled boolean NOT NULL,
    -- Quiet hours in the country's local time; both set or both null. start > end spans midnight.
    quiet_start    time,
    quiet_end      time,
    updated_at     timestamptz NOT NULL,
    CHECK ((quiet_start IS NULL) = (quiet_end IS NULL))
);

-- The day-before reminder of each appointment, worked by the reminder job with
-- `FOR UPDATE SKIP LOCKED`. A cancellation before the booking arrives leaves a `cancelled` row,
-- so a late `AppointmentBooked` cannot bring it back.
CREATE TABLE reminders (
    appointment_id uuid PRIMARY KEY,
    user_id        text NOT NULL,
    starts_at      timestamptz NOT NULL,
    due_at         timestamptz NOT NULL,
    status         text NOT NULL CHECK (status IN ('scheduled', 'sent', 'cancelled', 'too_late')),
    updated_at     timestamptz NOT NULL
);

CREATE INDEX reminders_due ON reminders (due_at) WHERE status = 'scheduled';
