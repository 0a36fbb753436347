-- Pairwise residual-stream similarity between languages per layer (SPEC §3): one row per
-- (run_id, layer, lang_a, lang_b), both orders and the diagonal, with similarity = the mean
-- over groups holding both languages (with residuals in the run) of cos(r(p_a, L), r(p_b, L))
-- and n_groups. Filter with WHERE run_id = ? AND layer = ?. Needs a run made with --residuals;
-- pairs where either vector is all zeros (cosine undefined) are skipped.
CREATE OR REPLACE VIEW similarity_matrix WITH (DEFER_BINDING) AS
WITH r AS NOT MATERIALIZED (
    SELECT r.run_id, r.layer, p.group_id, p.lang, r.vec
    FROM residuals r JOIN phrases p USING (phrase_id)
),
half AS (   -- each unordered pair once (lang_a <= lang_b); the mirror is added below
    SELECT run_id, layer, lang_a, lang_b, avg(cos) AS similarity, count(*) AS n_groups
    FROM (
        SELECT a.run_id, a.layer, a.lang AS lang_a, b.lang AS lang_b,
               list_cosine_similarity(a.vec, b.vec) AS cos
        FROM r a
        JOIN r b ON b.run_id = a.run_id AND b.layer = a.layer AND b.group_id = a.group_id
        WHERE a.lang <= b.lang
    )
    WHERE NOT isnan(cos)
    GROUP BY ALL
)
SELECT run_id, layer, lang_a, lang_b, similarity, n_groups FROM half
UNION ALL
SELECT run_id, layer, lang_b, lang_a, similarity, n_groups FROM half WHERE lang_a <> lang_b;
