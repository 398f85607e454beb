-- Booking: practitioners, their weekly schedules, materialised slots and appointments.

CREATE TABLE practitioners (
    id                       UUID PRIMARY KEY,
    name                     TEXT NOT NULL,
    specialty                TEXT NOT NULL,
    city                     TEXT NOT NULL,
    address                  TEXT NOT NULL,
    latitude                 DOUBLE PRECISION NOT NULL CHECK (latitude BETWEEN -90 AND 90),
    longitude                DOUBLE PRECISION NOT NULL CHECK (longitude BETWEEN -180 AND 180),
    languages                TEXT[] NOT NULL DEFAULT '{}',
    consultation_price_minor BIGINT NOT NULL CHECK (consultation_price_minor >= 0),
    currency                 TEXT NOT NULL,
    -- Subject (JWT `sub`) of the practitioner's own account, for their agenda.
    account_subject          TEXT UNIQUE,
    created_at               TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at               TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX practitioners_specialty_city ON practitioners (specialty, city);
CREATE INDEX practitioners_city ON practitioners (city);

-- Weekly working hours (breaks are the gaps between ranges), slot length and days off.
CREATE TABLE schedules (
    practitioner_id UUID PRIMARY KEY REFERENCES practitioners (id) ON DELETE CASCADE,
    slot_minutes    INT NOT NULL CHECK (slot_minutes BETWEEN 5 AND 240),
    weekly          JSONB NOT NULL,
    exceptions      JSONB NOT NULL DEFAULT '[]',
    -- Slots exist up to this local date (inclusive); the slot job extends it every day.
    generated_until DATE,
    -- Set when the schedule changed and future free slots must be rebuilt.
    needs_regeneration BOOLEAN NOT NULL DEFAULT true,
    updated_at      TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX schedules_pending ON schedules (generated_until) ;

CREATE TABLE slots (
    id              UUID PRIMARY KEY,
    practitioner_id UUID NOT NULL REFERENCES practitioners (id) ON DELETE CASCADE,
    starts_at       TIMESTAMPTZ NOT NULL,
    ends_at         TIMESTAMPTZ NOT NULL CHECK (ends_at > starts_at),
    status          TEXT NOT NULL DEFAULT 'free' CHECK (status IN ('free', 'booked')),
    UNIQUE (practitioner_id, starts_at)
);

CREATE INDEX slots_free_by_practitioner ON slots (practitioner_id, starts_at) WHERE status = 'free';

CREATE TABLE appointments (
    id               UUID PRIMARY KEY,
    slot_id          UUID NOT NULL REFERENCES slots (id),
    practitioner_id  UUID NOT NULL REFERENCES practitioners (id),
    patient_subject  TEXT NOT NULL,
    starts_at        TIMESTAMPTZ NOT NULL,
    ends_at          TIMESTAMPTZ NOT NULL,
    -- The slot's day in the country's time zone, for the per-day limit.
    local_day        DATE NOT NULL,
    status           TEXT NOT NULL CHECK (status IN ('booked', 'cancelled')),
    rescheduled_from UUID REFERENCES appointments (id),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    cancelled_at     TIMESTAMPTZ,
    cancelled_by     TEXT
);

-- Two active appointments on one slot are impossible, whatever happens to the Redis lock.
CREATE UNIQUE INDEX appointments_one_active_per_slot ON appointments (slot_id) WHERE status = 'booked';
CREATE INDEX appointments_patient_day ON appointments (patient_subject, local_day) WHERE status = 'booked';
CREATE INDEX appointments_patient ON appointments (patient_subject, starts_at);
CREATE INDEX appointments_practitioner ON appointments (practitioner_id, starts_at);
