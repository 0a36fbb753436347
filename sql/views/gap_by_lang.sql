-- The activation gap of each language against the reference language (English by default)
-- per layer (SPEC §3): one row per (run_id, layer, lang) with score = A(L, l), ref,
-- en_score = A(L, ref) and gap_vs_en_pct = 100·(A(L, ref) − A(L, l))/A(L, ref) (the
-- reference's own row: 0). The column names keep "en" because English is the reference unless
-- `ref` says otherwise. Filter with WHERE run_id = ? AND layer = ?. Scores treat absent
-- feature_acts rows as 0 (see activation_scores); a layer where the run has no score for the
-- reference has no rows. The paper's Appendix D table (mean and std across layers) is
-- gap_by_lang_summary.
--
--   gap_by_lang(mode := NULL, stat := 'max', k := 16, ref := 'en', at_run := NULL,
--               at_layer := NULL): see activation_scores; the view gap_by_lang uses the
--   defaults.
CREATE OR REPLACE MACRO gap_by_lang(mode := NULL, stat := 'max', k := 16, ref := 'en',
                                    at_run := NULL, at_layer := NULL,
                                    from_summaries := false) AS TABLE
SELECT g.run_id, g.layer, g.lang, g.resource_group, g.mode, g.ref, g.score, g.n_phrases,
       g.en_score, 100 * (g.en_score - g.score) / nullif(g.en_score, 0) AS gap_vs_en_pct
FROM (
    SELECT s.*, max(s.score) FILTER (WHERE s.lang = ref)
                    OVER (PARTITION BY s.run_id, s.layer) AS en_score
    FROM activation_scores(mode := mode, stat := stat, k := k, ref := ref, at_run := at_run,
                           at_layer := at_layer,
                           from_summaries := from_summaries) s
) g
WHERE g.en_score IS NOT NULL;

CREATE OR REPLACE VIEW gap_by_lang WITH (DEFER_BINDING) AS
SELECT * FROM gap_by_lang();
