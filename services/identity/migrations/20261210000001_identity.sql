-- Identity: users and their contact data, sign-in codes, refresh-token families, signing keys.
-- Codes and refresh tokens are stored only as hashes; signing keys only sealed (AEAD) under a
-- subkey of the keyring secret, which never enters the database.

CREATE TABLE users (
    id                UUID        PRIMARY KEY,
    -- E.164, normalised by identity before it gets here.
    phone             TEXT        NOT NULL UNIQUE CHECK (phone ~ '^\+[1-9][0-9]{4,14}$'),
    name              TEXT,
    -- BCP 47 tag; the country's locale until the user chooses.
    language          TEXT        NOT NULL,
    date_of_birth     DATE,
    email             TEXT,
    email_verified_at TIMESTAMPTZ,
    roles             TEXT[]      NOT NULL DEFAULT ARRAY['patient']::TEXT[]
                                  CHECK (roles <@ ARRAY['patient', 'practitioner', 'admin']::TEXT[]),
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (email_verified_at IS NULL OR email IS NOT NULL)
);

-- Sign-in codes: HMAC-SHA256 of (phone, code) under the keyring's code subkey. Only the newest
-- code of a phone counts; sending a new one supersedes the others.
CREATE TABLE otp_codes (
    id            BIGSERIAL   PRIMARY KEY,
    phone         TEXT        NOT NULL,
    code_hash     BYTEA       NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    attempts      INT         NOT NULL DEFAULT 0 CHECK (attempts BETWEEN 0 AND 5),
    consumed_at   TIMESTAMPTZ,
    superseded_at TIMESTAMPTZ
);

CREATE INDEX otp_codes_phone ON otp_codes (phone, id DESC);
CREATE INDEX otp_codes_created_at ON otp_codes (created_at);

-- Every code sent, for the send limits (per phone, per client address).
CREATE TABLE otp_sends (
    id             BIGSERIAL   PRIMARY KEY,
    phone          TEXT        NOT NULL,
    client_address TEXT        NOT NULL,
    sent_at        TIMESTAMPTZ NOT NULL
);

CREATE INDEX otp_sends_phone ON otp_sends (phone, sent_at DESC);
CREATE INDEX otp_sends_client_address ON otp_sends (client_address, sent_at DESC);

-- Refresh tokens: SHA-256 of the opaque token. Each refresh rotates the token inside its
-- family; presenting a rotated one revokes the whole family.
CREATE TABLE refresh_tokens (
    id         UUID        PRIMARY KEY,
    family_id  UUID        NOT NULL,
    user_id    UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash BYTEA       NOT NULL UNIQUE,
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    rotated_at TIMESTAMPTZ,
    revoked_at TIMESTAMPTZ
);

CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_expires_at ON refresh_tokens (expires_at);

-- Token-signing keys. `kid` is the RFC 7638 thumbprint of the public JWK. The private key
-- (PKCS#8) is sealed with ChaCha20-Poly1305 (nonce ‖ ciphertext ‖ tag, the kid as associated
-- data). One key signs at a time (retires_at IS NULL); a replaced key stays published until
-- retires_at, when every token it signed has expired.
CREATE TABLE signing_keys (
    kid                TEXT        PRIMARY KEY,
    algorithm          TEXT        NOT NULL CHECK (algorithm IN ('EdDSA', 'ES256')),
    private_key_sealed BYTEA       NOT NULL,
    public_jwk         JSONB       NOT NULL,
    created_at         TIMESTAMPTZ NOT NULL,
    activates_at       TIMESTAMPTZ NOT NULL,
    retires_at         TIMESTAMPTZ
);

CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys ((true)) WHERE retires_at IS NULL;

-- E-mail verification codes: HMAC-SHA256 of (user, address, code); a code verifies only the
-- address it was sent to.
CREATE TABLE email_verification_codes (
    id            BIGSERIAL   PRIMARY KEY,
    user_id       UUID        NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email         TEXT        NOT NULL,
    code_hash     BYTEA       NOT NULL,
    created_at    TIMESTAMPTZ NOT NULL,
    expires_at    TIMESTAMPTZ NOT NULL,
    attempts      INT         NOT NULL DEFAULT 0 CHECK (attempts BETWEEN 0 AND 5),
    consumed_at   TIMESTAMPTZ,
    superseded_at TIMESTAMPTZ
);

CREATE INDEX email_verification_codes_user ON email_verification_codes (user_id, id DESC);
