-- The activation gap between resource groups per layer (SPEC §3): one row per (run_id, layer)
-- with H (high_score, mean of A(L, l) over the run's `high` languages), W (low_score, mean
-- over `low` languages), gap_pct = 100·(H − W)/H, how many languages of each group entered
-- and which (high_langs, low_langs, comma-separated, '' for none). The reference language `ref` (default
-- en) is left out of its group's mean unless include_ref: in the topk modes its own features
-- were picked on it, and in origin mode on English, so its score is high by construction.
-- Filter with WHERE run_id = ? AND layer = ?. Scores treat absent feature_acts rows as 0 (see
-- activation_scores); languages without a resource group, or without phrases in the run, are
-- left out.
--
--   gap_by_layer(mode := NULL, stat := 'max', k := 16, ref := 'en', include_ref := false,
--                at_run := NULL, at_layer := NULL): see activation_scores; the view
--   gap_by_layer uses the defaults. from_summaries: see activation_scores.
CREATE OR REPLACE MACRO gap_by_layer(mode := NULL, stat := 'max', k := 16, ref := 'en',
                                     include_ref := false, at_run := NULL,
                                     at_layer := NULL,
                                     from_summaries := false) AS TABLE
SELECT s.run_id, s.layer, any_value(s.mode) AS mode, ref AS ref,
       avg(s.score) FILTER (WHERE s.resource_group = 'high') AS high_score,
       avg(s.score) FILTER (WHERE s.resource_group = 'low') AS low_score,
       100 * (high_score - low_score) / nullif(high_score, 0) AS gap_pct,
       count(*) FILTER (WHERE s.resource_group = 'high') AS n_high,
       count(*) FILTER (WHERE s.resource_group = 'low') AS n_low,
       coalesce(string_agg(s.lang, ',' ORDER BY s.lang)
                    FILTER (WHERE s.resource_group = 'high'), '') AS high_langs,
       coalesce(string_agg(s.lang, ',' ORDER BY s.lang)
                    FILTER (WHERE s.resource_group = 'low'), '') AS low_langs
FROM activation_scores(mode := mode, stat := stat, k := k, ref := ref, at_run := at_run,
                       at_layer := at_layer,
                       from_summaries := from_summaries) s
WHERE include_ref OR s.lang <> ref
GROUP BY s.run_id, s.layer;

CREATE OR REPLACE VIEW gap_by_layer WITH (DEFER_BINDING) AS
SELECT * FROM gap_by_layer();
