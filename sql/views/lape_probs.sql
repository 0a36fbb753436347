-- LAPE's activation probabilities (Tang et al. 2024; SPEC §3): one row per (run_id, kind,
-- layer, unit, lang) over the full grid of a run's units and languages, with n_positive,
-- n_tokens and p = n_positive / n_tokens. kind 'neurons': MLP neurons from neuron_stats
-- (n_positive = tokens with act_fn(gate_proj(x)) > 0; a missing row counts 0 positives).
-- kind 'features': SAE features, n_positive = Σ n_active and n_tokens = Σ phrase_tokens.n_tokens
-- over the language's phrases in the run; absent feature_acts rows count 0. A unit is in the
-- grid when it has a row in any language (features that never fire in the run are not, and
-- would be dropped by LAPE's filter anyway). Filter with WHERE run_id = ? AND kind = ?.
-- neuron_stats is summed per (run, lang, layer, neuron) first: a run killed before its end
-- holds one partial row per committed chunk, and its counts are those rows' sums.
-- lape_selected applies the selection.
--
-- Built from two sparse macros, which lape_selected reads without forming the grid:
--   lape_counts(...)     the stored counts: one row per (kind, run_id, layer, unit, lang)
--                        with a row in feature_acts / neuron_stats, with n_positive and the
--                        language's n_tokens (languages with n_tokens > 0 only)
--   lape_languages(...)  the grid's languages: (kind, run_id, layer, lang, n_tokens > 0);
--                        layer is NULL for features (a run's languages hold at every layer)
-- Each takes (from_summaries := false, at_run := NULL, at_kind := NULL), lape_languages the
-- last two; lape_probs_of takes all three and the view lape_probs is it with the defaults.
--   at_run / at_kind: only that run / kind (constants, so the raw-row scans see the filter).
--   from_summaries (a constant): the features' counts come from summary_feature_lang (the
--   run's summaries, same numbers) instead of the raw rows; only for runs whose summaries are
--   finished (analysis/queries.py decides through summaries.has_summaries). DuckDB drops the
--   branch whose WHERE is a false constant, so only one of the two is read.
CREATE OR REPLACE MACRO lape_languages(at_run := NULL, at_kind := NULL) AS TABLE
WITH feature_langs AS (
    SELECT 'features' AS kind, t.run_id, NULL::SMALLINT AS layer, p.lang,
           sum(t.n_tokens) AS n_tokens
    FROM phrase_tokens t JOIN phrases p USING (phrase_id)
    WHERE (at_run IS NULL OR t.run_id = at_run) AND (at_kind IS NULL OR at_kind = 'features')
    GROUP BY ALL
),
neuron_langs AS (
    -- per (run, lang, layer, neuron) summed over chunks first; a layer's count is its largest
    SELECT 'neurons' AS kind, run_id, layer, lang, max(n_tokens) AS n_tokens
    FROM (
        SELECT run_id, lang, layer, neuron, sum(n_tokens) AS n_tokens
        FROM neuron_stats
        WHERE (at_run IS NULL OR run_id = at_run) AND (at_kind IS NULL OR at_kind = 'neurons')
        GROUP BY ALL
    )
    GROUP BY ALL
)
SELECT kind, run_id, layer, lang, n_tokens::BIGINT AS n_tokens
FROM (SELECT * FROM feature_langs UNION ALL SELECT * FROM neuron_langs)
WHERE n_tokens > 0;

CREATE OR REPLACE MACRO lape_counts(from_summaries := false, at_run := NULL,
                                    at_kind := NULL) AS TABLE
WITH feature_counts AS (
    SELECT run_id, layer, feature AS unit, lang, n_active_tokens AS n_positive
    FROM feature_lang_stats
    WHERE NOT from_summaries AND (at_run IS NULL OR run_id = at_run)
          AND (at_kind IS NULL OR at_kind = 'features')
    UNION ALL
    -- one row per (run, layer, lang, feature): finish_summaries writes it in one GROUP BY
    SELECT run_id, layer, feature, lang, n_active_tokens
    FROM summary_feature_lang
    WHERE from_summaries AND (at_run IS NULL OR run_id = at_run)
          AND (at_kind IS NULL OR at_kind = 'features')
),
neuron_counts AS (
    SELECT run_id, layer, neuron AS unit, lang, sum(n_positive) AS n_positive
    FROM neuron_stats
    WHERE (at_run IS NULL OR run_id = at_run) AND (at_kind IS NULL OR at_kind = 'neurons')
    GROUP BY ALL
),
langs AS MATERIALIZED (
    SELECT * FROM lape_languages(at_run := at_run, at_kind := at_kind)
)
SELECT 'features' AS kind, c.run_id, c.layer, c.unit, c.lang,
       c.n_positive::BIGINT AS n_positive, l.n_tokens
FROM feature_counts c JOIN langs l ON l.kind = 'features' AND l.run_id = c.run_id
     AND l.lang = c.lang
UNION ALL
SELECT 'neurons', c.run_id, c.layer, c.unit, c.lang, c.n_positive::BIGINT, l.n_tokens
FROM neuron_counts c JOIN langs l ON l.kind = 'neurons' AND l.run_id = c.run_id
     AND l.layer = c.layer AND l.lang = c.lang;

CREATE OR REPLACE MACRO lape_probs_of(from_summaries := false, at_run := NULL,
                                      at_kind := NULL) AS TABLE
WITH counts AS MATERIALIZED (
    SELECT * FROM lape_counts(from_summaries := from_summaries, at_run := at_run,
                              at_kind := at_kind)
),
langs AS MATERIALIZED (
    SELECT * FROM lape_languages(at_run := at_run, at_kind := at_kind)
),
units AS (
    SELECT DISTINCT kind, run_id, layer, unit FROM counts
)
SELECT u.kind, u.run_id, u.layer, u.unit, l.lang,
       coalesce(c.n_positive, 0)::BIGINT AS n_positive, l.n_tokens,
       coalesce(c.n_positive, 0) / l.n_tokens AS p
FROM units u
JOIN langs l ON l.kind = u.kind AND l.run_id = u.run_id AND coalesce(l.layer, u.layer) = u.layer
LEFT JOIN counts c ON c.kind = u.kind AND c.run_id = u.run_id AND c.layer = u.layer
     AND c.unit = u.unit AND c.lang = l.lang;

CREATE OR REPLACE VIEW lape_probs WITH (DEFER_BINDING) AS
SELECT * FROM lape_probs_of();
