-- The effect of a fine-tune (or steering) between a base run and a tuned run over the same
-- phrases (SPEC §3): one row per (layer, lang) of the layers both runs hold, with
--   base_score, tuned_score      A_base(L, l), A_tuned(L, l) (absent rows = 0)
--   improvement_pct              100·(A_tuned − A_base)/A_base
--   en_retention_pct             100·A_tuned(L, en)/A_base(L, en) (same on every row of L)
--   en_cosine, n_en_phrases      mean over English phrases of the cosine between the phrase's
--                                pooled SAE vectors (all features at L, absent = 0) in the
--                                two runs; phrases with no active feature in either run are
--                                skipped (cosine undefined)
-- In english-topk mode both runs are scored on the base run's top-k English features, so
-- en_retention_pct measures the same features before and after. Filter with WHERE layer = ?,
-- or (faster) pass at_layer.
-- Groups scored (`groups`): 'auto' (default) = the held-apart ('eval') groups of the split
-- of the round that made `tuned` from `base` (table rounds), every group when there is no
-- such round; 'all' = every group. split_id says which split was used (NULL: none).
--
--   compare_runs(base, tuned, mode := NULL, stat := 'max', k := 16, at_layer := NULL,
--                groups := 'auto', base_summaries := false, tuned_summaries := false)
-- base_summaries / tuned_summaries (constants): score that run from its summaries (see
-- activation_scores' from_summaries). The caller (analysis/queries.py) sets them only where
-- the summaries hold the answer: every group scored (no held-apart split), a run with
-- finished summaries, k <= their k_max; the tuned run only in origin mode, where the scored
-- features are the phrases' own origins (english-topk scores it on the base run's top-k,
-- which its summaries do not hold). en_cosine always reads the English phrases' raw rows.
CREATE OR REPLACE MACRO compare_runs(base, tuned, mode := NULL, stat := 'max', k := 16,
                                     at_layer := NULL, groups := 'auto',
                                     base_summaries := false,
                                     tuned_summaries := false) AS TABLE
WITH
held_apart AS (
    SELECT CASE groups
               WHEN 'all' THEN NULL
               WHEN 'auto' THEN (SELECT max(split_id) FROM rounds
                                 WHERE base_run = base AND tuned_run = tuned)
               ELSE error('groups must be auto or all') END AS split_id
),
base_scores AS (
    SELECT * FROM activation_scores(mode := mode, stat := stat, k := k, select_run := base,
                                    at_run := base, at_layer := at_layer,
                                    at_split := (SELECT split_id FROM held_apart),
                                    from_summaries := base_summaries)
),
tuned_scores AS (
    SELECT * FROM activation_scores(mode := mode, stat := stat, k := k, select_run := base,
                                    at_run := tuned, at_layer := at_layer,
                                    at_split := (SELECT split_id FROM held_apart),
                                    from_summaries := tuned_summaries)
),
en_phrases AS NOT MATERIALIZED (
    SELECT phrase_id FROM phrases
    WHERE lang = 'en'
      AND phrase_id IN (SELECT phrase_id FROM phrase_tokens WHERE run_id = base)
      AND phrase_id IN (SELECT phrase_id FROM phrase_tokens WHERE run_id = tuned)
      AND ((SELECT split_id FROM held_apart) IS NULL
           OR group_id IN (SELECT group_id FROM split_groups
                           WHERE split_id = (SELECT split_id FROM held_apart)
                             AND part = 'eval'))
),
vecs AS NOT MATERIALIZED (
    SELECT run_id, phrase_id, layer, feature,
           CASE stat WHEN 'max' THEN act_max WHEN 'mean' THEN act_mean
                ELSE error('stat must be max or mean') END AS act
    FROM feature_values
    WHERE run_id IN (base, tuned) AND phrase_id IN (SELECT phrase_id FROM en_phrases)
      AND (at_layer IS NULL OR layer = at_layer)
),
norms AS (
    SELECT phrase_id, layer,
           sum(act * act) FILTER (WHERE run_id = base) AS nb,
           sum(act * act) FILTER (WHERE run_id = tuned) AS nt
    FROM vecs
    GROUP BY ALL
),
dots AS (
    SELECT b.phrase_id, b.layer, sum(b.act * t.act) AS dot
    FROM vecs b
    JOIN vecs t ON t.phrase_id = b.phrase_id AND t.layer = b.layer AND t.feature = b.feature
    WHERE b.run_id = base AND t.run_id = tuned
    GROUP BY ALL
),
en_cosine AS (
    SELECT n.layer, avg(coalesce(d.dot, 0) / sqrt(n.nb * n.nt)) AS en_cosine,
           count(*) AS n_en_phrases
    FROM norms n
    LEFT JOIN dots d USING (phrase_id, layer)
    WHERE n.nb > 0 AND n.nt > 0
    GROUP BY n.layer
)
SELECT base AS base_run, tuned AS tuned_run, b.layer, b.lang, b.resource_group, b.mode,
       b.score AS base_score, t.score AS tuned_score,
       100 * (t.score - b.score) / nullif(b.score, 0) AS improvement_pct,
       100 * max(t.score) FILTER (WHERE t.lang = 'en') OVER (PARTITION BY b.layer)
           / nullif(max(b.score) FILTER (WHERE b.lang = 'en') OVER (PARTITION BY b.layer), 0)
           AS en_retention_pct,
       c.en_cosine, c.n_en_phrases, (SELECT split_id FROM held_apart) AS split_id
FROM base_scores b
JOIN tuned_scores t ON t.layer = b.layer AND t.lang = b.lang
LEFT JOIN en_cosine c ON c.layer = b.layer;
