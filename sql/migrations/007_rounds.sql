-- Fine-tune rounds (SPEC §6, `xling finetune round`): the held-apart split of a base run's
-- aligned groups, the round that links a tuned run to its base run and artifact, and the
-- capability (token-level NLL) measured before and after.
--
-- splits / split_groups: a seeded partition of the base run's aligned groups (groups holding
-- English and at least one other language) into 'train' (what the fine-tune saw) and 'eval'
-- (held apart: what compare reports on). One row per (split, group).
CREATE SEQUENCE split_id_seq START 1;
CREATE TABLE splits (
    split_id   INTEGER PRIMARY KEY DEFAULT nextval('split_id_seq'),
    base_run   INTEGER NOT NULL,
    seed       INTEGER NOT NULL,
    eval_frac  DOUBLE NOT NULL,       -- share of groups held apart (0.2 = 80/20)
    n_train    INTEGER NOT NULL,
    n_eval     INTEGER NOT NULL,
    created_at TIMESTAMP DEFAULT current_timestamp
);
CREATE TABLE split_groups (
    split_id INTEGER NOT NULL,
    group_id VARCHAR NOT NULL,
    part     VARCHAR NOT NULL,        -- train | eval
    PRIMARY KEY (split_id, group_id)
);

-- One row per round: the tuned run knows its base run, its split and what made it (a
-- `finetunes` row for align/subnetwork, an `interventions` name for steer).
CREATE SEQUENCE round_id_seq START 1;
CREATE TABLE rounds (
    round_id     INTEGER PRIMARY KEY DEFAULT nextval('round_id_seq'),
    base_run     INTEGER NOT NULL,
    tuned_run    INTEGER NOT NULL UNIQUE,
    split_id     INTEGER NOT NULL,
    method       VARCHAR NOT NULL,    -- align | subnetwork | steer
    finetune_id  INTEGER,             -- finetunes row (align, subnetwork)
    intervention VARCHAR,             -- interventions name (steer)
    target_layer INTEGER,
    config       JSON NOT NULL,       -- the RoundConfig as JSON
    seconds      DOUBLE,              -- wall time of the whole round
    created_at   TIMESTAMP DEFAULT current_timestamp
);

-- Token-level NLL of each held-apart phrase under the base and the tuned model: nats summed
-- over the phrase's real tokens, BOS prepended and never predicted (analysis.bpb.phrase_nll).
CREATE TABLE round_nll (
    round_id  INTEGER NOT NULL,
    model     VARCHAR NOT NULL,       -- base | tuned
    phrase_id BIGINT NOT NULL,
    nll       DOUBLE NOT NULL,
    n_tokens  INTEGER NOT NULL,
    PRIMARY KEY (round_id, model, phrase_id)
);
