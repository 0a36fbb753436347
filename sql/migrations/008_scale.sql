-- Compact feature rows and the summaries the metric views read (warehouse/encoding.py,
-- warehouse/summaries.py). Summaries are kept per committed chunk, in the chunk's own
-- transaction, as partial rows that readers sum; finishing a run folds them to one row per key.

-- A compact run's feature rows: act_max and act_mean quantised on a log scale (read them
-- through the feature_values view, which decodes them).
CREATE TABLE feature_acts_compact (
    run_id    INTEGER NOT NULL,
    phrase_id BIGINT NOT NULL,
    layer     SMALLINT NOT NULL,
    feature   INTEGER NOT NULL,
    q_max     INTEGER NOT NULL,
    q_mean    UTINYINT NOT NULL,
    n_active  SMALLINT NOT NULL
);

-- Per (run, layer, language, feature): sums over the language's phrases of the run (written
-- at finish in one pass; partials per chunk would be nearly as many rows as the chunks).
CREATE TABLE summary_feature_lang (
    run_id           INTEGER NOT NULL,
    layer            SMALLINT NOT NULL,
    lang             VARCHAR NOT NULL,
    feature          INTEGER NOT NULL,
    s_max            DOUBLE NOT NULL,
    s_mean           DOUBLE NOT NULL,
    n_active_phrases BIGINT NOT NULL,
    n_active_tokens  BIGINT NOT NULL
);

-- Origin mode: per (run, origin layer, language, origin feature) the activations of the
-- language's phrases at their group's origin (absent rows add 0) and how many phrases.
CREATE TABLE summary_origin (
    run_id    INTEGER NOT NULL,
    layer     SMALLINT NOT NULL,
    lang      VARCHAR NOT NULL,
    feature   INTEGER NOT NULL,
    s_max     DOUBLE NOT NULL,
    s_mean    DOUBLE NOT NULL,
    n_targets BIGINT NOT NULL
);

-- English top-k mode: the k_max highest features of each group's English phrase per layer
-- and statistic (rank 1 = highest; ties by lower feature id).
CREATE TABLE summary_topk (
    run_id   INTEGER NOT NULL,
    layer    SMALLINT NOT NULL,
    group_id VARCHAR NOT NULL,
    stat     VARCHAR NOT NULL,
    rank     SMALLINT NOT NULL,
    feature  INTEGER NOT NULL
);

-- ... and per (run, layer, language, statistic, rank): the summed activation of the
-- language's phrases at their group's rank-r English feature, over n_units such pairs.
CREATE TABLE summary_topk_hits (
    run_id  INTEGER NOT NULL,
    layer   SMALLINT NOT NULL,
    lang    VARCHAR NOT NULL,
    stat    VARCHAR NOT NULL,
    rank    SMALLINT NOT NULL,
    act_sum DOUBLE NOT NULL,
    n_units BIGINT NOT NULL
);

-- Bookkeeping per run: the k the top-k summaries hold, partial rows since the last fold, and
-- whether the run's finish completed them (summary_feature_lang is written at finish).
CREATE TABLE summary_runs (
    run_id       INTEGER PRIMARY KEY,
    k_max        INTEGER NOT NULL,
    partial_rows BIGINT NOT NULL,
    folded_rows  BIGINT NOT NULL,
    finished     BOOLEAN NOT NULL
);
