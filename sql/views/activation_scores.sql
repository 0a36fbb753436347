-- A(L, l), the activation score of language l at layer L (SPEC §3): one row per
-- (run_id, layer, lang) with the selection mode and reference used, the score, n_units
-- (features in origin mode, group-feature pairs in the topk modes) and n_phrases (the
-- language's phrases that entered the score). Filter with WHERE run_id = ? AND layer = ?, or
-- faster with the macro's at_run/at_layer. Built on the per-group terms of
-- activation_group_scores (which documents the modes), so an absent feature_acts row is
-- activation 0 here too:
--   origin   m_f = mean act(p, L, f) over f's phrases in l; A = mean of m_f over features;
--   *-topk   A = Σ_g act_sum(g, l) / Σ_g n_targets(g, l) = the mean of act(p_{g,l}, L, f) over
--            the pairs (g, f in F_g) of groups holding l (and, in english-topk, `ref`).
--
--   activation_scores(mode := NULL, stat := 'max', k := 16, ref := 'en', select_run := NULL,
--                     at_run := NULL, at_layer := NULL, at_split := NULL,
--                     from_summaries := false)
-- The view activation_scores is the macro with its defaults.
--
-- from_summaries (a constant): read the run's summaries (activation_scores_summary) instead
-- of the raw rows, same numbers. Only where they can answer: a finished run with summaries,
-- mode origin or english-topk, ref 'en', k <= their k_max, no select_run, no at_split (the
-- caller decides,
-- analysis/queries.py through summaries.has_summaries). DuckDB drops the branch whose WHERE
-- is a false constant, so only one of the two is read.
CREATE OR REPLACE MACRO activation_scores(mode := NULL, stat := 'max', k := 16, ref := 'en',
                                          select_run := NULL, at_run := NULL,
                                          at_layer := NULL, at_split := NULL,
                                          from_summaries := false) AS TABLE
WITH per_unit AS (
    -- origin: one unit per feature; topk: one unit per group, summed below as a ratio.
    -- Columns are qualified: a bare `mode` or `ref` would name the macro's parameter.
    SELECT g.run_id, g.layer, g.lang, any_value(g.resource_group) AS resource_group,
           any_value(g.mode) AS sel_mode, g.feature, sum(g.act_sum) AS act_sum,
           sum(g.n_targets) AS n_targets, count(*) AS n_phrases
    FROM activation_group_scores(mode := mode, stat := stat, k := k, ref := ref,
                                 select_run := select_run, at_run := at_run,
                                 at_layer := at_layer, at_split := at_split) g
    GROUP BY g.run_id, g.layer, g.lang, g.feature, CASE WHEN g.feature IS NULL THEN g.group_id END
)
SELECT u.run_id, u.layer, u.lang, any_value(u.resource_group) AS resource_group,
       any_value(u.sel_mode) AS mode, ref AS ref,
       CASE WHEN any_value(u.sel_mode) = 'origin' THEN avg(u.act_sum / u.n_targets)
            ELSE sum(u.act_sum) / sum(u.n_targets) END AS score,
       CASE WHEN any_value(u.sel_mode) = 'origin' THEN count(*) ELSE sum(u.n_targets) END
           AS n_units,
       sum(u.n_phrases) AS n_phrases
FROM per_unit u
WHERE NOT from_summaries
GROUP BY u.run_id, u.layer, u.lang
UNION ALL
SELECT s.run_id, s.layer, s.lang, s.resource_group, s.mode, ref AS ref, s.score, s.n_units,
       s.n_phrases
FROM activation_scores_summary(mode := mode, stat := stat, k := k, at_run := at_run,
                               at_layer := at_layer) s
WHERE from_summaries;

CREATE OR REPLACE VIEW activation_scores WITH (DEFER_BINDING) AS
SELECT * FROM activation_scores();
