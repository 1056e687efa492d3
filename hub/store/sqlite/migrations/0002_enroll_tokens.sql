-- One-time enrollment tokens (store.EnrollToken). Only the SHA-256 of the
-- secret is kept. used_at is NULL until a device enrolls with the token; the
-- conditional UPDATE that sets it is what makes a token single-use.
CREATE TABLE enroll_tokens (
	hash      BLOB PRIMARY KEY,
	device_id TEXT NOT NULL DEFAULT '',
	labels    TEXT NOT NULL DEFAULT '{}',
	created   INTEGER NOT NULL,
	expires   INTEGER NOT NULL,
	used_at   INTEGER,
	used_by   TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX enroll_tokens_expires ON enroll_tokens (expires);
