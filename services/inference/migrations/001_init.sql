-- 001_init.sql — the inference schema: models, versions (the model files themselves, as
-- UBJSON), aliases, experiments, drift references, the prediction log, feedback and
-- live drift counts. Applied by cn_pg_migrate with search_path set to "inference".

-- A model is a name; its versions are numbered 1, 2, 3 ... in upload order.
-- generation moves on every change that serving must see (a new version, an alias or
-- experiment change, a deleted version), so replicas notice by polling one column.
-- One sequence for every model's generation, so "anything newer than G" is one query.
CREATE SEQUENCE generation_seq;

CREATE TABLE models (
    id              bigserial PRIMARY KEY,
    name            text UNIQUE NOT NULL,
    description     text NOT NULL DEFAULT '',
    log_sample_rate double precision NOT NULL DEFAULT 1 CHECK (log_sample_rate BETWEEN 0 AND 1),
    next_version    integer NOT NULL DEFAULT 1,
    created_by      text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    generation      bigint NOT NULL DEFAULT nextval('generation_seq')
);
CREATE INDEX models_generation ON models (generation);

-- A version's model file, converted to UBJSON after a trial load in a child process,
-- with what was read from the booster. Never updated except reference_* (drift).
CREATE TABLE versions (
    model_id       bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    version        integer NOT NULL,
    ubj            bytea NOT NULL,
    sha256         text NOT NULL,
    size_bytes     bigint NOT NULL,
    source_format  text NOT NULL,
    num_features   integer NOT NULL,
    feature_names  text[] NOT NULL DEFAULT '{}',
    feature_types  text[] NOT NULL DEFAULT '{}',
    objective      text NOT NULL DEFAULT '',
    num_classes    integer NOT NULL DEFAULT 0,
    rounds         integer NOT NULL DEFAULT 0,
    booster        text NOT NULL DEFAULT '',
    description    text NOT NULL DEFAULT '',
    -- Drift reference: per feature, bins (edges or categories) and reference shares, as
    -- written by infer_bins_to_json (inference_drift.c); null until a sample is given.
    reference      jsonb,
    reference_rows bigint NOT NULL DEFAULT 0,
    reference_gen  bigint NOT NULL DEFAULT 0,   -- nextval(generation_seq) when set: replicas reload it
    created_by     text NOT NULL DEFAULT '',
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, version)
);

CREATE TABLE aliases (
    model_id   bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
    alias      text NOT NULL,
    version    integer NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (model_id, alias),
    FOREIGN KEY (model_id, version) REFERENCES versions(model_id, version)
);

-- At most one experiment per model; spec is the Experiment message as JSON (candidates,
-- mirror, sticky_key), already validated by the service.
CREATE TABLE experiments (
    model_id   bigint PRIMARY KEY REFERENCES models(id) ON DELETE CASCADE,
    spec       jsonb NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
);
-- Versions an experiment names directly (aliases are resolved at serving time), so a
-- DELETE of such a version is refused by the foreign key as well as by the service.
CREATE TABLE experiment_versions (
    model_id bigint NOT NULL REFERENCES experiments(model_id) ON DELETE CASCADE,
    version  integer NOT NULL,
    PRIMARY KEY (model_id, version),
    FOREIGN KEY (model_id, version) REFERENCES versions(model_id, version)
);

-- The prediction log: one row per logged predict/infer call (sampled per model), written
-- in batches by the log thread. request_id joins feedback.
CREATE TABLE predictions (
    id          bigserial PRIMARY KEY,
    request_id  text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    model       text NOT NULL,
    version     integer NOT NULL,
    variant     text NOT NULL,
    inputs      jsonb,
    outputs     jsonb,
    latency_us  integer NOT NULL,
    status      text NOT NULL,           -- ok | error
    error       text NOT NULL DEFAULT ''
);
CREATE INDEX predictions_model_at ON predictions (model, at);
CREATE INDEX predictions_request ON predictions (model, request_id);

-- Outcomes, joined to predictions by (model, request_id) when stats are asked for.
CREATE TABLE feedback (
    id         bigserial PRIMARY KEY,
    model      text NOT NULL,
    request_id text NOT NULL,
    label      double precision,
    reward     double precision,
    at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX feedback_model_request ON feedback (model, request_id);

-- Live input histograms per feature, summed by every replica per minute; drift is the
-- PSI of a window of these against the version's reference.
CREATE TABLE drift_counts (
    model   text NOT NULL,
    version integer NOT NULL,
    minute  timestamptz NOT NULL,
    feature integer NOT NULL,
    counts  bigint[] NOT NULL,
    PRIMARY KEY (model, version, minute, feature)
);
