-- Every run's feature rows with act_max and act_mean as floats, whatever the run's encoding
-- (warehouse/encoding.py): lossless runs' rows from feature_acts as stored; lean runs' rows
-- from feature_acts plus feature_acts_single, whose act_mean is act_max / n_tokens in float32
-- (the ingest's own division, so bit for bit) and n_active 1; compact runs' rows from
-- feature_acts_compact decoded (act_max = 2^(q_max/256), act_mean = 2^(q_max/256 -
-- q_mean/31)). Same columns as feature_acts; filters on run_id, layer, phrase_id and feature
-- reach every scan. The metric views read this instead of feature_acts.
CREATE OR REPLACE VIEW feature_values AS
SELECT run_id, phrase_id, layer, feature, act_mean, act_max, n_active FROM feature_acts
UNION ALL
SELECT s.run_id, s.phrase_id, s.layer, s.feature,
       (s.act_max / t.n_tokens)::FLOAT AS act_mean, s.act_max, 1::SMALLINT AS n_active
FROM feature_acts_single s JOIN phrase_tokens t USING (run_id, phrase_id)
UNION ALL
SELECT run_id, phrase_id, layer, feature,
       pow(2, q_max / 256.0 - q_mean / 31.0)::FLOAT AS act_mean,
       pow(2, q_max / 256.0)::FLOAT AS act_max, n_active
FROM feature_acts_compact;
