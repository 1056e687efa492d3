-- Initial schema. Times are INTEGER microseconds since the Unix epoch (UTC),
-- NULL for none; JSON documents are TEXT.

CREATE TABLE devices (
	id                TEXT PRIMARY KEY,
	reported_labels   TEXT NOT NULL DEFAULT '{}',
	hub_labels        TEXT NOT NULL DEFAULT '{}',
	first_seen        INTEGER NOT NULL,
	last_seen         INTEGER NOT NULL,
	online            INTEGER NOT NULL DEFAULT 0,
	inventory         TEXT,
	sequence          INTEGER NOT NULL DEFAULT 0,
	accepted_sequence INTEGER NOT NULL DEFAULT 0,
	telemetry_time    INTEGER,
	system            TEXT
) STRICT;

-- Effective labels (reported overlaid by hub labels), one row per label, so
-- selectors are plain indexed lookups.
CREATE TABLE device_labels (
	device TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
	key    TEXT NOT NULL,
	value  TEXT NOT NULL,
	PRIMARY KEY (device, key)
) STRICT, WITHOUT ROWID;
CREATE INDEX device_labels_key_value ON device_labels (key, value);

CREATE TABLE device_models (
	device     TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
	model      TEXT NOT NULL,
	version    TEXT NOT NULL DEFAULT '',
	phase      TEXT NOT NULL DEFAULT '',
	pending    TEXT NOT NULL DEFAULT '',
	previous   TEXT NOT NULL DEFAULT '',
	error      TEXT NOT NULL DEFAULT '',
	provider   TEXT NOT NULL DEFAULT '',
	updated_at INTEGER NOT NULL,
	PRIMARY KEY (device, model)
) STRICT, WITHOUT ROWID;
CREATE INDEX device_models_model ON device_models (model, version);

CREATE TABLE releases (
	name      TEXT NOT NULL,
	version   TEXT NOT NULL,
	manifest  BLOB NOT NULL,
	signed    INTEGER NOT NULL,
	created   INTEGER NOT NULL,
	artifacts TEXT NOT NULL DEFAULT '[]',
	PRIMARY KEY (name, version)
) STRICT;

CREATE TABLE rollouts (
	id                INTEGER PRIMARY KEY AUTOINCREMENT,
	model             TEXT NOT NULL,
	version           TEXT NOT NULL,
	selector          TEXT NOT NULL DEFAULT '{}',
	waves             TEXT NOT NULL,
	soak_seconds      INTEGER NOT NULL,
	gates             TEXT NOT NULL DEFAULT '[]',
	mode              TEXT NOT NULL,
	on_failure        TEXT NOT NULL,
	install_timeout_s INTEGER NOT NULL DEFAULT 0,
	status            TEXT NOT NULL,
	wave              INTEGER NOT NULL,
	wave_started      INTEGER,
	previous_versions TEXT NOT NULL DEFAULT '{}',
	history           TEXT NOT NULL DEFAULT '[]',
	state             TEXT,
	created           INTEGER NOT NULL,
	updated           INTEGER NOT NULL,
	revision          INTEGER NOT NULL,
	FOREIGN KEY (model, version) REFERENCES releases (name, version)
) STRICT;
-- At most one unfinished rollout per model.
CREATE UNIQUE INDEX rollouts_unfinished_model ON rollouts (model)
	WHERE status IN ('pending', 'running', 'paused');
CREATE INDEX rollouts_status ON rollouts (status);

-- One row per device, model, version and minute (store.TelemetryRollup):
-- counters add up on conflict, the JSON histograms and error map are merged.
CREATE TABLE telemetry_rollups (
	device              TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
	model               TEXT NOT NULL,
	version             TEXT NOT NULL,
	minute              INTEGER NOT NULL,
	reports             INTEGER NOT NULL DEFAULT 0,
	requests            INTEGER NOT NULL DEFAULT 0,
	errors              INTEGER NOT NULL DEFAULT 0,
	errors_by_kind      TEXT NOT NULL DEFAULT '{}',
	latency             TEXT NOT NULL DEFAULT '{}',
	compute_cpu_ms      REAL NOT NULL DEFAULT 0,
	compute_gpu_ms      REAL NOT NULL DEFAULT 0,
	cold_starts         INTEGER NOT NULL DEFAULT 0,
	cold_start_ms       REAL NOT NULL DEFAULT 0,
	queue_rejections    INTEGER NOT NULL DEFAULT 0,
	mixed_with          TEXT NOT NULL DEFAULT '[]',
	shadow_compared     INTEGER NOT NULL DEFAULT 0,
	shadow_agreed       INTEGER NOT NULL DEFAULT 0,
	shadow_max_abs_diff REAL NOT NULL DEFAULT 0,
	shadow_latency      TEXT NOT NULL DEFAULT '{}',
	PRIMARY KEY (device, model, version, minute)
) STRICT, WITHOUT ROWID;
CREATE INDEX telemetry_rollups_model_minute ON telemetry_rollups (model, version, minute);
CREATE INDEX telemetry_rollups_minute ON telemetry_rollups (minute);

CREATE TABLE events (
	id       INTEGER PRIMARY KEY AUTOINCREMENT,
	device   TEXT NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
	time     INTEGER NOT NULL,
	type     TEXT NOT NULL,
	model    TEXT NOT NULL DEFAULT '',
	version  TEXT NOT NULL DEFAULT '',
	sequence INTEGER NOT NULL DEFAULT 0,
	check_id TEXT NOT NULL DEFAULT '',
	reason   TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX events_device_time ON events (device, time);
CREATE INDEX events_time ON events (time);

CREATE TABLE assignments (
	device   TEXT PRIMARY KEY REFERENCES devices (id) ON DELETE CASCADE,
	sequence INTEGER NOT NULL,
	envelope BLOB NOT NULL,
	saved    INTEGER NOT NULL
) STRICT;
