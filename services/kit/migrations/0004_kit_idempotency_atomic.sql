-- Idempotency records are now written with the effect they answer for, in its transaction, and
-- only once complete: claims of running requests (and their lease) are gone.
DELETE FROM idempotency_keys WHERE state = 'running';
