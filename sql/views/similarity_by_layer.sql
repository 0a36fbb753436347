-- Residual-stream similarity of each language to English per layer (SPEC §3): one row per
-- (run_id, layer, lang), English excluded, with similarity = the mean over groups holding both
-- an English and an l phrase (with residuals in the run) of cos(r(p_en, L), r(p_l, L)), r the
-- mean-pooled residual, and n_groups. Filter with WHERE run_id = ? AND layer = ?. Needs a run
-- made with --residuals; a phrase without a residual row leaves its group out for that layer,
-- and a pair where either vector is all zeros (cosine undefined) is skipped.
CREATE OR REPLACE VIEW similarity_by_layer WITH (DEFER_BINDING) AS
WITH r AS NOT MATERIALIZED (
    SELECT r.run_id, r.layer, p.group_id, p.lang, r.vec
    FROM residuals r JOIN phrases p USING (phrase_id)
)
SELECT x.run_id, x.layer, x.lang, l.resource_group,
       avg(cos) AS similarity, count(*) AS n_groups
FROM (
    SELECT x.run_id, x.layer, x.lang, list_cosine_similarity(e.vec, x.vec) AS cos
    FROM r x
    JOIN r e ON e.run_id = x.run_id AND e.layer = x.layer AND e.group_id = x.group_id
    WHERE e.lang = 'en' AND x.lang <> 'en'
) x
LEFT JOIN languages l USING (lang)
WHERE NOT isnan(cos)
GROUP BY ALL;
