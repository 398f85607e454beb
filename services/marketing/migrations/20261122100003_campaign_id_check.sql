-- PostgreSQL regular expressions allow at most 255 repetitions: check the length apart.
ALTER TABLE campaigns DROP CONSTRAINT campaigns_id_check;
ALTER TABLE campaigns ADD CONSTRAINT campaigns_id_check
    CHECK (id ~ '^[A-Za-z0-9._/-]+$' AND length(id) <= 300);
