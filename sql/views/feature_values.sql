-- Every run's feature rows with act_max and act_mean as floats, whatever the run's encoding
-- (warehouse/encoding.py): lossless runs' rows from feature_acts as stored, compact runs'
-- rows from feature_acts_compact decoded (act_max = 2^(q_max/256), act_mean = 2^(q_max/256 -
-- q_mean/31)). Same columns as feature_acts; filters on run_id, layer, phrase_id and feature
-- reach both scans. The metric views read this instead of feature_acts.
CREATE OR REPLACE VIEW feature_values AS
SELECT run_id, phrase_id, layer, feature, act_mean, act_max, n_active FROM feature_acts
UNION ALL
SELECT run_id, phrase_id, layer, feature,
       pow(2, q_max / 256.0 - q_mean / 31.0)::FLOAT AS act_mean,
       pow(2, q_max / 256.0)::FLOAT AS act_max, n_active
FROM feature_acts_compact;
