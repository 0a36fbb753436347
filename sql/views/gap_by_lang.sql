-- The activation gap of each language against English per layer (SPEC §3): one row per
-- (run_id, layer, lang) with score = A(L, l), en_score = A(L, en) and
-- gap_vs_en_pct = 100·(A(L, en) − A(L, l))/A(L, en) (English's own row: 0). Filter with
-- WHERE run_id = ? AND layer = ?. Scores treat absent feature_acts rows as 0 (see
-- activation_scores); a layer where the run has no English score has no rows. The paper's
-- Appendix D table (mean and std across layers) is gap_by_lang_summary.
--
--   gap_by_lang(mode := NULL, stat := 'max', k := 16, at_run := NULL, at_layer := NULL): the
--   same for a selection mode, pooled statistic and top-k, restricted to one run and/or layer
--   (see activation_scores); the view gap_by_lang uses the defaults.
CREATE OR REPLACE MACRO gap_by_lang(mode := NULL, stat := 'max', k := 16, at_run := NULL,
                                    at_layer := NULL) AS TABLE
SELECT g.run_id, g.layer, g.lang, g.resource_group, g.mode, g.score, g.n_phrases, g.en_score,
       100 * (g.en_score - g.score) / nullif(g.en_score, 0) AS gap_vs_en_pct
FROM (
    SELECT s.*, max(s.score) FILTER (WHERE s.lang = 'en')
                    OVER (PARTITION BY s.run_id, s.layer) AS en_score
    FROM activation_scores(mode := mode, stat := stat, k := k, at_run := at_run,
                           at_layer := at_layer) s
) g
WHERE g.en_score IS NOT NULL;

CREATE OR REPLACE VIEW gap_by_lang WITH (DEFER_BINDING) AS
SELECT * FROM gap_by_lang();
