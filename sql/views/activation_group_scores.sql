-- The per-group terms of A(L, l) (SPEC §3), from which activation_scores averages and the
-- bootstrap (xling.analysis.stats) resamples aligned groups: one row per (run_id, layer, lang,
-- group_id, feature) target with act_sum = Σ act(p_{g,l}, L, f) over the group's scored
-- features and n_targets = how many (phrase, feature) pairs that sum covers. A group holds at
-- most one phrase per language, so
--   origin        feature = the group's origin feature f_g, act_sum = act(p_{g,l}, L, f_g),
--                 n_targets = 1;
--   *-topk        feature NULL, act_sum = Σ_{f in F_g} act(p_{g,l}, L, f), n_targets = |F_g|.
-- An absent feature_acts row is activation 0: a target without rows has act_sum 0, never no
-- row. Only the run's layers (activation_layers) appear. Filter with the macro's at_run /
-- at_layer (constants that reach every scan, subqueries included).
--
--   activation_group_scores(mode := NULL, stat := 'max', k := 16, ref := 'en',
--                           select_run := NULL, at_run := NULL, at_layer := NULL,
--                           at_split := NULL)
--     mode   'origin': a group's feature is its phrases' origin (origin_layer,
--              origin_feature), the English phrase's when several phrases carry one.
--            'english-topk': F_g = the k features with the highest act on the phrase of g in
--              the reference language `ref` at L (among those that fire; ties by lower
--              feature id). Groups without a `ref` phrase score nothing.
--            'group-topk': F_g = the k features with the highest mean act over all the
--              group's phrases in the run (every language alike, none favoured; ties by lower
--              feature id).
--            NULL: the run's default_mode (view run_modes). Any other value selects nothing.
--     stat   'max' (act_max, default) or 'mean' (act_mean); top-k ranks by the same stat.
--     ref    english-topk only: the language whose phrase picks F_g (default 'en').
--     select_run  topk modes: take F_g from this run's phrases instead of the scored run's
--              (a fine-tuned run scored on its base run's features).
--     at_split  only the groups held apart ('eval') by this split (split_groups, written by
--              `finetune round`); NULL: every group.
-- Limits of the join key below: layers < 256, features < 2^24.
CREATE OR REPLACE MACRO activation_group_scores(mode := NULL, stat := 'max', k := 16,
                                                ref := 'en', select_run := NULL,
                                                at_run := NULL, at_layer := NULL,
                                                at_split := NULL) AS TABLE
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
    FROM feature_values
    WHERE (at_layer IS NULL OR layer = at_layer)
      AND (at_run IS NULL OR run_id = at_run OR run_id = select_run)
),
run_layers AS NOT MATERIALIZED (
    SELECT run_id, layer FROM activation_layers
    WHERE (at_layer IS NULL OR layer = at_layer)
      AND (at_run IS NULL OR run_id = at_run)
),
run_mode AS NOT MATERIALIZED (
    SELECT run_id, coalesce(mode, default_mode) AS run_mode FROM run_modes
    WHERE at_run IS NULL OR run_id = at_run
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
    -- max_by keeps the k largest keys; the key orders by act, then by lower feature id. Each
    -- branch opens with a constant test of `mode`, so the other one is pruned from the plan.
    SELECT run_id, layer, group_id, 'english-topk' AS sel_mode, unnest(top) AS feature
    FROM (
        SELECT a.run_id, a.layer, rp.group_id,
               max_by(a.feature, {'act': a.act, 'feature': -a.feature}, k) AS top
        FROM acts a
        -- one run in play (at_run without select_run): the phrase id alone is the key
        JOIN run_phrases rp ON rp.phrase_id = a.phrase_id
                           AND ((at_run IS NOT NULL AND select_run IS NULL)
                                OR rp.run_id = a.run_id)
        WHERE (mode IS NULL OR mode = 'english-topk') AND rp.lang = ref
        GROUP BY a.run_id, a.layer, rp.group_id
    )
    UNION ALL
    SELECT run_id, layer, group_id, 'group-topk', unnest(top)
    FROM (
        -- ranking by the sum over the group's phrases is ranking by their mean: one group,
        -- one denominator
        SELECT run_id, layer, group_id,
               max_by(feature, {'act': total, 'feature': -feature}, k) AS top
        FROM (
            SELECT a.run_id, a.layer, rp.group_id, a.feature, sum(a.act) AS total
            FROM acts a
            JOIN run_phrases rp ON rp.phrase_id = a.phrase_id
                               AND ((at_run IS NOT NULL AND select_run IS NULL)
                                    OR rp.run_id = a.run_id)
            WHERE mode = 'group-topk'
            GROUP BY ALL
        )
        GROUP BY ALL
    )
),
-- the (run, layer, group, feature) targets of each mode, keyed -----------------------------
origin_targets AS NOT MATERIALIZED (
    SELECT g.run_id, g.gidx, o.layer, o.feature,
           g.gidx * 4294967296 + CASE WHEN at_layer IS NULL THEN o.layer * 16777216 ELSE 0 END
               + o.feature AS key
    FROM run_groups g
    JOIN group_origins o USING (group_id)
    JOIN run_mode m ON m.run_id = g.run_id AND m.run_mode = 'origin'
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
    JOIN run_mode m ON m.run_id = g.run_id AND m.run_mode = f.sel_mode
    JOIN run_layers rl ON rl.run_id = g.run_id AND rl.layer = f.layer
    WHERE (mode IS NULL OR mode <> 'origin') AND (at_run IS NULL OR g.run_id = at_run)
),
-- sums over stored rows ------------------------------------------------------------------------
scored_acts AS NOT MATERIALIZED (
    -- with at_run set, `scored` holds one run: the phrase id alone is the join key
    SELECT s.run_id, a.layer, s.lang, s.gidx, a.feature, a.act,
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
    -- one phrase per (group, language) and one origin per group and layer: no summing left
    SELECT s.run_id, a.layer, s.lang, s.gidx, a.act AS act_sum
    FROM origin_acts a
    JOIN scored s ON s.phrase_id = a.phrase_id AND (at_run IS NOT NULL OR s.run_id = a.run_id)
    JOIN origin_targets t
      ON t.key = s.kbase + CASE WHEN at_layer IS NULL THEN a.layer * 16777216 ELSE 0 END
                 + a.feature
    WHERE at_run IS NULL OR a.run_id = at_run
),
topk_hits AS (
    SELECT a.run_id, a.layer, a.lang, a.gidx, sum(a.act) AS act_sum
    FROM scored_acts a JOIN topk_targets t USING (key)
    GROUP BY ALL
),
-- every target (group, language), hit or not ---------------------------------------------
group_langs AS NOT MATERIALIZED (
    SELECT DISTINCT run_id, gidx, lang FROM scored
),
origin_rows AS (
    SELECT t.run_id, t.layer, c.lang, t.gidx, 'origin' AS mode, t.feature,
           coalesce(h.act_sum, 0)::DOUBLE AS act_sum, 1::BIGINT AS n_targets
    FROM origin_targets t
    JOIN group_langs c USING (run_id, gidx)
    LEFT JOIN origin_hits h USING (run_id, layer, lang, gidx)
),
topk_rows AS (
    SELECT n.run_id, n.layer, c.lang, n.gidx, n.sel_mode AS mode, NULL::INTEGER AS feature,
           coalesce(h.act_sum, 0)::DOUBLE AS act_sum, n.n_features AS n_targets
    FROM (SELECT t.run_id, t.layer, t.gidx, any_value(m.run_mode) AS sel_mode,
                 count(*) AS n_features
          FROM topk_targets t JOIN run_mode m USING (run_id)
          GROUP BY t.run_id, t.layer, t.gidx) n
    JOIN group_langs c USING (run_id, gidx)
    LEFT JOIN topk_hits h USING (run_id, layer, lang, gidx)
)
SELECT s.run_id, s.layer, s.lang, l.resource_group, s.mode, g.group_id, s.feature, s.act_sum,
       s.n_targets
FROM (SELECT * FROM origin_rows UNION ALL SELECT * FROM topk_rows) s
JOIN run_groups g USING (run_id, gidx)
LEFT JOIN languages l USING (lang);

CREATE OR REPLACE VIEW activation_group_scores WITH (DEFER_BINDING) AS
SELECT * FROM activation_group_scores();
