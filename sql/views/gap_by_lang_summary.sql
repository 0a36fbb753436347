-- Each language's gap against the reference language (English by default) across layers, the
-- paper's Appendix D table: one row per (run_id, lang), the reference excluded, with
-- mean_gap_pct and std_gap_pct (the SAMPLE standard deviation, n − 1 in the denominator; NULL
-- for a single layer) of gap_vs_en_pct over the run's layers, their min and max, mean_score
-- (mean of A(L, l)) and n_layers. Filter with WHERE run_id = ?. Absent feature_acts rows count
-- as 0 (see activation_scores).
--
--   gap_by_lang_summary(mode := NULL, stat := 'max', k := 16, ref := 'en', at_run := NULL,
--   at_layer := NULL): see activation_scores; for one run and over one layer when given; the
--   view gap_by_lang_summary uses the defaults. from_summaries: see activation_scores.
CREATE OR REPLACE MACRO gap_by_lang_summary(mode := NULL, stat := 'max', k := 16, ref := 'en',
                                            at_run := NULL, at_layer := NULL,
                                            from_summaries := false) AS TABLE
SELECT g.run_id, g.lang, any_value(g.resource_group) AS resource_group,
       any_value(g.mode) AS mode, any_value(g.ref) AS ref, count(*) AS n_layers,
       avg(g.score) AS mean_score, avg(g.gap_vs_en_pct) AS mean_gap_pct,
       stddev_samp(g.gap_vs_en_pct) AS std_gap_pct, min(g.gap_vs_en_pct) AS min_gap_pct,
       max(g.gap_vs_en_pct) AS max_gap_pct
FROM gap_by_lang(mode := mode, stat := stat, k := k, ref := ref, at_run := at_run,
                 at_layer := at_layer,
                 from_summaries := from_summaries) g
WHERE g.lang <> ref
GROUP BY g.run_id, g.lang;

CREATE OR REPLACE VIEW gap_by_lang_summary WITH (DEFER_BINDING) AS
SELECT * FROM gap_by_lang_summary();
