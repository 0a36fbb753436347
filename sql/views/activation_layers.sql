-- The layers of each run that hold SAE activations: one row per (run_id, layer). Read from
-- run_layers (the layers the run encoded with an SAE) so no scan of feature_acts is needed;
-- a run with no run_layers rows (made by hand) gets the distinct layers of its feature_acts
-- rows. A run that read residuals or neurons only has no row. A layer listed here with no
-- feature_acts row for some (phrase, feature) means activation 0 there, like any absent row.
-- Filter with WHERE run_id = ?.
CREATE OR REPLACE VIEW activation_layers AS
SELECT run_id, layer FROM run_layers WHERE sae_id IS NOT NULL
UNION ALL
SELECT DISTINCT f.run_id, f.layer
FROM feature_values f
WHERE f.run_id NOT IN (SELECT run_id FROM run_layers);
