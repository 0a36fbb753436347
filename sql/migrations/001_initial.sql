-- The warehouse's core tables (SPEC §2). Absent feature_acts rows mean activation 0.

CREATE TABLE languages (
    lang           VARCHAR PRIMARY KEY,
    name           VARCHAR NOT NULL,
    resource_group VARCHAR NOT NULL
);

INSERT INTO languages VALUES
    ('en', 'English',    'high'),
    ('zh', 'Chinese',    'high'),
    ('ru', 'Russian',    'high'),
    ('es', 'Spanish',    'high'),
    ('it', 'Italian',    'high'),
    ('id', 'Indonesian', 'low'),
    ('ca', 'Catalan',    'low'),
    ('mr', 'Marathi',    'low'),
    ('ml', 'Malayalam',  'low'),
    ('hi', 'Hindi',      'low');

CREATE TABLE phrases (
    phrase_id      BIGINT PRIMARY KEY,
    group_id       VARCHAR NOT NULL,
    lang           VARCHAR NOT NULL,
    text           VARCHAR NOT NULL,
    source         VARCHAR,
    origin_layer   INTEGER,
    origin_feature INTEGER,
    UNIQUE (group_id, lang)
);

CREATE SEQUENCE model_id_seq START 1;
CREATE TABLE models (
    model_id   INTEGER PRIMARY KEY DEFAULT nextval('model_id_seq'),
    name       VARCHAR NOT NULL,
    revision   VARCHAR,
    adapter    VARCHAR,
    n_layers   INTEGER NOT NULL,
    d_model    INTEGER NOT NULL,
    d_mlp      INTEGER,
    arch       VARCHAR,
    source     VARCHAR,
    created_at TIMESTAMP DEFAULT current_timestamp
);

CREATE SEQUENCE sae_id_seq START 1;
CREATE TABLE saes (
    sae_id             INTEGER PRIMARY KEY DEFAULT nextval('sae_id_seq'),
    model_id           INTEGER NOT NULL,
    layer              INTEGER NOT NULL,
    release            VARCHAR,
    sae_name           VARCHAR NOT NULL,
    path               VARCHAR,
    d_in               INTEGER NOT NULL,
    d_sae              INTEGER NOT NULL,
    architecture       VARCHAR,
    hook_name          VARCHAR,
    explained_variance DOUBLE,
    l0                 DOUBLE,
    created_at         TIMESTAMP DEFAULT current_timestamp
);

CREATE SEQUENCE run_id_seq START 1;
CREATE TABLE runs (
    run_id      INTEGER PRIMARY KEY DEFAULT nextval('run_id_seq'),
    model_id    INTEGER NOT NULL,
    status      VARCHAR NOT NULL,       -- running | finished | failed
    config      JSON NOT NULL,
    started_at  TIMESTAMP DEFAULT current_timestamp,
    finished_at TIMESTAMP,
    n_phrases   BIGINT,
    n_rows      BIGINT,
    note        VARCHAR
);

-- One row per committed chunk of an ingest: the progress ledger that --resume reads.
CREATE TABLE run_chunks (
    run_id       INTEGER NOT NULL,
    chunk        INTEGER NOT NULL,
    n_phrases    INTEGER NOT NULL,
    n_rows       BIGINT NOT NULL,
    committed_at TIMESTAMP DEFAULT current_timestamp,
    PRIMARY KEY (run_id, chunk)
);

CREATE TABLE phrase_tokens (
    run_id    INTEGER NOT NULL,
    phrase_id BIGINT NOT NULL,
    n_tokens  INTEGER NOT NULL
);

CREATE TABLE feature_acts (
    run_id    INTEGER NOT NULL,
    phrase_id BIGINT NOT NULL,
    layer     SMALLINT NOT NULL,
    feature   INTEGER NOT NULL,
    act_mean  FLOAT NOT NULL,
    act_max   FLOAT NOT NULL,
    n_active  SMALLINT NOT NULL
);

CREATE TABLE residuals (
    run_id    INTEGER NOT NULL,
    phrase_id BIGINT NOT NULL,
    layer     SMALLINT NOT NULL,
    vec       FLOAT[] NOT NULL
);

CREATE TABLE neuron_stats (
    run_id     INTEGER NOT NULL,
    lang       VARCHAR NOT NULL,
    layer      SMALLINT NOT NULL,
    neuron     INTEGER NOT NULL,
    n_tokens   BIGINT NOT NULL,
    n_positive BIGINT NOT NULL,
    act_sum    DOUBLE NOT NULL
);

CREATE TABLE benchmarks (
    model_id  INTEGER NOT NULL,
    task      VARCHAR NOT NULL,
    lang      VARCHAR NOT NULL,
    metric    VARCHAR NOT NULL,
    value     DOUBLE NOT NULL,
    stderr    DOUBLE,
    n_samples BIGINT,
    source    VARCHAR,
    imported_at TIMESTAMP DEFAULT current_timestamp
);

CREATE TABLE interventions (
    name       VARCHAR PRIMARY KEY,
    kind       VARCHAR NOT NULL,
    config     JSON NOT NULL,
    created_at TIMESTAMP DEFAULT current_timestamp
);
