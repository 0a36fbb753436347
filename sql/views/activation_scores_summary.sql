-- activation_scores from the summaries (warehouse/summaries.py)
-- instead of the raw rows: the same columns and numbers, for runs that keep summaries
-- (summary_runs), k <= their k_max and no select_run other than the scored run (the caller
-- checks with summaries.has_summaries and otherwise reads activation_scores).
--
--   activation_scores_summary(mode := NULL, stat := 'max', k := 16, at_run := NULL,
--                             at_layer := NULL)     arguments as activation_scores'
CREATE OR REPLACE MACRO activation_scores_summary(mode := NULL, stat := 'max', k := 16,
                                                  at_run := NULL, at_layer := NULL) AS TABLE
WITH
checked AS (
    SELECT CASE WHEN stat IN ('max', 'mean') THEN stat
                ELSE error('stat must be max or mean') END AS use_stat
),
run_origins AS NOT MATERIALIZED (
    SELECT t.run_id, bool_or(p.origin_layer IS NOT NULL AND p.origin_feature IS NOT NULL)
                         AS has_origin
    FROM phrase_tokens t JOIN phrases p USING (phrase_id)
    WHERE at_run IS NULL OR t.run_id = at_run
    GROUP BY t.run_id
),
run_modes AS NOT MATERIALIZED (
    SELECT run_id, 'origin' AS run_mode FROM run_origins
    WHERE mode IS NOT DISTINCT FROM 'origin' OR (mode IS NULL AND has_origin)
    UNION ALL
    SELECT run_id, 'english-topk' FROM run_origins
    WHERE mode IS NOT DISTINCT FROM 'english-topk' OR (mode IS NULL AND NOT has_origin)
),
origin_features AS (
    SELECT o.run_id, o.layer, o.lang, o.feature,
           sum(CASE (SELECT use_stat FROM checked) WHEN 'max' THEN o.s_max ELSE o.s_mean END) AS s,
           sum(o.n_targets) AS n
    FROM summary_origin o
    WHERE (at_run IS NULL OR o.run_id = at_run) AND (at_layer IS NULL OR o.layer = at_layer)
    GROUP BY ALL
),
origin_scores AS (
    SELECT f.run_id, f.layer, f.lang, 'origin' AS mode, avg(f.s / f.n) AS score,
           count(*) AS n_units, sum(f.n) AS n_phrases
    FROM origin_features f JOIN run_modes m ON m.run_id = f.run_id AND m.run_mode = 'origin'
    WHERE f.n > 0
    GROUP BY f.run_id, f.layer, f.lang
),
topk_ranks AS (
    -- columns qualified: a bare `stat` or `k` would be the macro's argument
    SELECT h.run_id, h.layer, h.lang, h.rank, sum(h.act_sum) AS act_sum,
           sum(h.n_units) AS n_units
    FROM summary_topk_hits h
    WHERE h.stat = (SELECT use_stat FROM checked) AND h.rank <= k
      AND (at_run IS NULL OR h.run_id = at_run) AND (at_layer IS NULL OR h.layer = at_layer)
    GROUP BY ALL
),
topk_scores AS (
    SELECT r.run_id, r.layer, r.lang, 'english-topk' AS mode,
           sum(r.act_sum) / sum(r.n_units) AS score, sum(r.n_units) AS n_units,
           sum(r.n_units) FILTER (WHERE r.rank = 1) AS n_phrases
    FROM topk_ranks r JOIN run_modes m ON m.run_id = r.run_id AND m.run_mode = 'english-topk'
    WHERE r.n_units > 0
    GROUP BY r.run_id, r.layer, r.lang
)
SELECT s.run_id, s.layer::SMALLINT AS layer, s.lang, l.resource_group, s.mode, s.score,
       s.n_units, s.n_phrases
FROM (SELECT * FROM origin_scores UNION ALL SELECT * FROM topk_scores) s
LEFT JOIN languages l USING (lang);
