-- A(L, l), the activation score of language l at layer L (SPEC §3): one row per
-- (run_id, layer, lang) with the selection mode used, the score, n_units (features in origin
-- mode, group-feature pairs in english-topk mode) and n_phrases (the language's phrases that
-- entered the score). Filter with WHERE run_id = ? AND layer = ?, or faster with the macro's
-- at_run/at_layer. An absent feature_acts row is activation 0, so a score is the sum of the
-- stored activations over its (phrase, feature) targets divided by the number of targets,
-- never an average of stored rows alone. Only the run's layers (activation_layers) appear.
--
--   activation_scores(mode := NULL, stat := 'max', k := 16, select_run := NULL,
--                     at_run := NULL, at_layer := NULL, at_split := NULL)
--     mode   'origin': a group's feature is its phrases' origin (origin_layer,
--              origin_feature), the English phrase's when several phrases carry one;
--              m_f = mean act(p, L, f) over f's phrases in l; A = mean of m_f over features.
--            'english-topk': F_g = the k features with the highest act on the English phrase
--              of group g at L (among those that fire; ties by lower feature id);
--              A = mean of act(p_{g,l}, L, f) over the pairs (g, f in F_g) of groups holding
--              both English and l. A group without l contributes nothing to l.
--            NULL: each run's default, 'origin' when any of its phrases carries an origin,
--              else 'english-topk' (xling's Python layer resolves it the same way). Any
--              other value selects nothing.
--     stat   'max' (act_max, default) or 'mean' (act_mean); top-k ranks by the same stat.
--     select_run  english-topk only: take F_g from this run's English phrases instead of
--              the scored run's (a fine-tuned run scored on its base run's features).
--     at_run, at_layer  only this run / layer: constants that reach every scan, subqueries
--              included (a WHERE on the result reaches fewer).
--     at_split  only the groups held apart ('eval') by this split (split_groups, written by
--              `finetune round`); NULL: every group.
-- The view activation_scores is the macro with its defaults. Limits of the join key below:
-- layers < 256, features < 2^24.
CREATE OR REPLACE MACRO activation_scores(mode := NULL, stat := 'max', k := 16,
                                          select_run := NULL, at_run := NULL,
                                          at_layer := NULL, at_split := NULL) AS TABLE
WITH
run_phrases AS NOT MATERIALIZED (
    SELECT t.run_id, t.phrase_id, p.group_id, p.lang
    FROM phrase_tokens t JOIN phrases p USING (phrase_id)
    WHERE (at_run IS NULL OR t.run_id = at_run OR t.run_id = select_run)
      AND (at_split IS NULL OR p.group_id IN (SELECT group_id FROM split_groups
                                              WHERE split_id = at_split AND part = 'eval'))
),
-- (run, group) -> gidx: key = gidx·2^32 + layer·2^24 + feature is one BIGINT for the join
-- against feature_acts, far cheaper there than four key columns (the layer term is left out
-- when at_layer fixes it)
run_groups AS NOT MATERIALIZED (
    SELECT run_id, group_id, row_number() OVER (ORDER BY run_id, group_id) AS gidx
    FROM (SELECT DISTINCT run_id, group_id FROM run_phrases)
),
scored AS NOT MATERIALIZED (
    SELECT rp.run_id, rp.phrase_id, rp.lang, g.gidx, g.gidx * 4294967296 AS kbase
    FROM run_phrases rp JOIN run_groups g USING (run_id, group_id)
    WHERE at_run IS NULL OR rp.run_id = at_run
),
acts AS NOT MATERIALIZED (
    SELECT run_id, phrase_id, layer, feature,
           CASE stat WHEN 'max' THEN act_max WHEN 'mean' THEN act_mean
                ELSE error('stat must be max or mean') END AS act
    FROM feature_acts
    WHERE (at_layer IS NULL OR layer = at_layer)
      AND (at_run IS NULL OR run_id = at_run OR run_id = select_run)
),
run_layers AS NOT MATERIALIZED (
    SELECT run_id, layer FROM activation_layers
    WHERE (at_layer IS NULL OR layer = at_layer)
      AND (at_run IS NULL OR run_id = at_run)
),
run_origins AS NOT MATERIALIZED (
    SELECT t.run_id, bool_or(p.origin_layer IS NOT NULL AND p.origin_feature IS NOT NULL)
                         AS has_origin
    FROM phrase_tokens t JOIN phrases p USING (phrase_id)
    GROUP BY t.run_id
),
run_modes AS NOT MATERIALIZED (
    -- written so that a constant `mode` folds to true/false and prunes the other branch
    SELECT run_id, 'origin' AS run_mode FROM run_origins
    WHERE mode IS NOT DISTINCT FROM 'origin' OR (mode IS NULL AND has_origin)
    UNION ALL
    SELECT run_id, 'english-topk' FROM run_origins
    WHERE mode IS NOT DISTINCT FROM 'english-topk' OR (mode IS NULL AND NOT has_origin)
),
-- the features scored per (run, layer, group) -----------------------------------------------
group_origins AS (
    SELECT group_id, o.layer::SMALLINT AS layer, o.feature::INTEGER AS feature
    FROM (
        SELECT group_id,
               arg_min({'layer': origin_layer, 'feature': origin_feature},
                       (lang <> 'en', phrase_id)) AS o
        FROM phrases
        WHERE origin_layer IS NOT NULL AND origin_feature IS NOT NULL
        GROUP BY group_id
    )
    WHERE at_layer IS NULL OR o.layer = at_layer
),
topk_features AS NOT MATERIALIZED (
    -- max_by keeps the k largest keys; the key orders by act, then by lower feature id
    SELECT run_id, layer, group_id, unnest(top) AS feature
    FROM (
        SELECT a.run_id, a.layer, rp.group_id,
               max_by(a.feature, {'act': a.act, 'feature': -a.feature}, k) AS top
        FROM acts a
        -- one run in play (at_run without select_run): the phrase id alone is the key
        JOIN run_phrases rp ON rp.phrase_id = a.phrase_id
                           AND ((at_run IS NOT NULL AND select_run IS NULL)
                                OR rp.run_id = a.run_id)
        WHERE rp.lang = 'en'
        GROUP BY a.run_id, a.layer, rp.group_id
    )
),
-- the (run, layer, group, feature) targets of each mode, keyed -----------------------------
origin_targets AS NOT MATERIALIZED (
    SELECT g.run_id, g.gidx, o.layer, o.feature,
           g.gidx * 4294967296 + CASE WHEN at_layer IS NULL THEN o.layer * 16777216 ELSE 0 END
               + o.feature AS key
    FROM run_groups g
    JOIN group_origins o USING (group_id)
    JOIN run_modes m ON m.run_id = g.run_id AND m.run_mode = 'origin'
    JOIN run_layers rl ON rl.run_id = g.run_id AND rl.layer = o.layer
    WHERE (mode IS NULL OR mode = 'origin') AND (at_run IS NULL OR g.run_id = at_run)
),
topk_targets AS NOT MATERIALIZED (
    SELECT g.run_id, g.gidx, f.layer, f.feature,
           g.gidx * 4294967296 + CASE WHEN at_layer IS NULL THEN f.layer * 16777216 ELSE 0 END
               + f.feature AS key
    FROM run_groups g
    JOIN topk_features f ON f.group_id = g.group_id
                        AND f.run_id = coalesce(select_run, g.run_id)
    JOIN run_modes m ON m.run_id = g.run_id AND m.run_mode = 'english-topk'
    JOIN run_layers rl ON rl.run_id = g.run_id AND rl.layer = f.layer
    WHERE (mode IS NULL OR mode = 'english-topk') AND (at_run IS NULL OR g.run_id = at_run)
),
-- sums over stored rows ------------------------------------------------------------------------
scored_acts AS NOT MATERIALIZED (
    -- with at_run set, `scored` holds one run: the phrase id alone is the join key
    SELECT s.run_id, a.layer, s.lang, a.feature, a.act,
           s.kbase + CASE WHEN at_layer IS NULL THEN a.layer * 16777216 ELSE 0 END
               + a.feature AS key
    FROM acts a
    JOIN scored s ON s.phrase_id = a.phrase_id AND (at_run IS NOT NULL OR s.run_id = a.run_id)
    WHERE at_run IS NULL OR a.run_id = at_run
),
origin_acts AS (
    -- the origin (layer, feature) pairs filter the rows first, before any join: a semi-join
    -- written below the phrase join is planned above it, on every row
    SELECT * FROM acts
    WHERE CASE WHEN at_layer IS NULL THEN layer * 16777216 ELSE 0 END + feature
          IN (SELECT CASE WHEN at_layer IS NULL THEN layer * 16777216 ELSE 0 END + feature
              FROM origin_targets)
),
origin_hits AS (
    SELECT s.run_id, a.layer, s.lang, a.feature, sum(a.act) AS act_sum
    FROM origin_acts a
    JOIN scored s ON s.phrase_id = a.phrase_id AND (at_run IS NOT NULL OR s.run_id = a.run_id)
    JOIN origin_targets t
      ON t.key = s.kbase + CASE WHEN at_layer IS NULL THEN a.layer * 16777216 ELSE 0 END
                 + a.feature
    WHERE at_run IS NULL OR a.run_id = at_run
    GROUP BY ALL
),
topk_hits AS (
    SELECT a.run_id, a.layer, a.lang, sum(a.act) AS act_sum
    FROM scored_acts a JOIN topk_targets t USING (key)
    GROUP BY ALL
),
-- counts of targets and scores ---------------------------------------------------------------
phrase_counts AS NOT MATERIALIZED (
    SELECT run_id, gidx, lang, count(*) AS n FROM scored GROUP BY ALL
),
origin_scores AS (
    SELECT f.run_id, f.layer, f.lang, 'origin' AS mode,
           avg(coalesce(h.act_sum, 0) / f.n_targets) AS score, count(*) AS n_units,
           sum(f.n_targets) AS n_phrases
    FROM (
        SELECT t.run_id, t.layer, c.lang, t.feature, sum(c.n) AS n_targets
        FROM origin_targets t JOIN phrase_counts c USING (run_id, gidx)
        GROUP BY ALL
    ) f
    LEFT JOIN origin_hits h USING (run_id, layer, lang, feature)
    GROUP BY f.run_id, f.layer, f.lang
),
topk_scores AS (
    SELECT n.run_id, n.layer, n.lang, 'english-topk' AS mode,
           coalesce(h.act_sum, 0) / n.n_units AS score, n.n_units, n.n_phrases
    FROM (
        SELECT g.run_id, g.layer, c.lang, sum(g.n_features * c.n) AS n_units,
               sum(c.n) AS n_phrases
        FROM (SELECT run_id, layer, gidx, count(*) AS n_features
              FROM topk_targets GROUP BY ALL) g
        JOIN phrase_counts c USING (run_id, gidx)
        GROUP BY ALL
    ) n
    LEFT JOIN topk_hits h USING (run_id, layer, lang)
)
SELECT s.run_id, s.layer, s.lang, l.resource_group, s.mode, s.score, s.n_units, s.n_phrases
FROM (SELECT * FROM origin_scores UNION ALL SELECT * FROM topk_scores) s
LEFT JOIN languages l USING (lang);

CREATE OR REPLACE VIEW activation_scores WITH (DEFER_BINDING) AS
SELECT * FROM activation_scores();
