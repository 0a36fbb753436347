-- Each run's default feature-selection mode for A(L, l) (SPEC §3): one row per run_id with
-- has_origin (any of the run's phrases carries origin_layer and origin_feature) and
-- default_mode, 'origin' when it does, else 'english-topk'. activation_group_scores and
-- xling's Python layer (queries.resolve_mode) both read the default from here. Filter with
-- WHERE run_id = ?. A run without phrase_tokens rows has no row.
CREATE OR REPLACE VIEW run_modes AS
SELECT t.run_id,
       bool_or(p.origin_layer IS NOT NULL AND p.origin_feature IS NOT NULL) AS has_origin,
       CASE WHEN has_origin THEN 'origin' ELSE 'english-topk' END AS default_mode
FROM phrase_tokens t JOIN phrases p USING (phrase_id)
GROUP BY t.run_id;
