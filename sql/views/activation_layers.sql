-- The layers of each run that hold SAE activations: one row per (run_id, layer). Read from
-- the run's config (the layers of its SAEs, `saes[*].layer`, else its `layers` list) so no
-- scan of feature_acts is needed; a run whose config names neither (made by hand) gets the
-- distinct layers of its feature_acts rows. A layer listed here with no feature_acts row for
-- some (phrase, feature) means activation 0 there, like any absent row. Filter with
-- WHERE run_id = ?.
CREATE OR REPLACE VIEW activation_layers AS
WITH configured AS (
    SELECT run_id, coalesce(
        CASE WHEN json_array_length(config, '$.saes') > 0
             THEN from_json(json_extract(config, '$.saes[*].layer'), '["SMALLINT"]') END,
        CASE WHEN json_array_length(config, '$.layers') > 0
             THEN from_json(json_extract(config, '$.layers'), '["SMALLINT"]') END
    ) AS layers
    FROM runs
)
SELECT DISTINCT run_id, unnest(layers) AS layer FROM configured WHERE layers IS NOT NULL
UNION ALL
SELECT DISTINCT f.run_id, f.layer
FROM feature_acts f
WHERE f.run_id IN (SELECT run_id FROM configured WHERE layers IS NULL);
