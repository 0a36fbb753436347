-- The lean encoding (warehouse/encoding.py): a lean run's rows whose feature fired on one
-- pooled token of the phrase, with act_max only. act_mean = (act_max / n_tokens)::FLOAT from
-- phrase_tokens and n_active = 1 there, exactly; read them through the feature_values view.
CREATE TABLE feature_acts_single (
    run_id    INTEGER NOT NULL,
    phrase_id BIGINT NOT NULL,
    layer     SMALLINT NOT NULL,
    feature   INTEGER NOT NULL,
    act_max   FLOAT NOT NULL
);
