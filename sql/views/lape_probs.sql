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
--   lape_probs_of(from_summaries := false, at_run := NULL, at_kind := NULL); the view
--   lape_probs is the macro with its defaults. at_run / at_kind: only that run / kind (a
--   constant, so the raw-row scans see the run filter).
-- from_summaries (a constant): the features' counts come from summary_feature_lang (the run's
-- summaries, same numbers) instead of the raw rows; only for runs whose summaries are
-- finished (analysis/queries.py decides through summaries.has_summaries). DuckDB drops the
-- branch whose WHERE is a false constant, so only one of the two is read.
CREATE OR REPLACE MACRO lape_probs_of(from_summaries := false, at_run := NULL,
                                      at_kind := NULL) AS TABLE
WITH feature_langs AS (
    SELECT t.run_id, p.lang, sum(t.n_tokens) AS n_tokens
    FROM phrase_tokens t JOIN phrases p USING (phrase_id)
    WHERE at_run IS NULL OR t.run_id = at_run
    GROUP BY ALL
),
stats AS (
    SELECT run_id, layer, feature, lang, n_active_tokens
    FROM feature_lang_stats
    WHERE NOT from_summaries AND (at_run IS NULL OR run_id = at_run)
    UNION ALL
    SELECT run_id, layer, feature, lang, sum(n_active_tokens) AS n_active_tokens
    FROM summary_feature_lang
    WHERE from_summaries AND (at_run IS NULL OR run_id = at_run)
    GROUP BY ALL
),
features AS (
    SELECT 'features' AS kind, u.run_id, u.layer, u.feature AS unit, l.lang,
           coalesce(s.n_active_tokens, 0) AS n_positive, l.n_tokens
    FROM (SELECT DISTINCT run_id, layer, feature FROM stats) u
    JOIN feature_langs l USING (run_id)
    LEFT JOIN stats s USING (run_id, layer, feature, lang)
    WHERE at_kind IS NULL OR at_kind = 'features'
),
neuron_sums AS (
    SELECT run_id, lang, layer, neuron, sum(n_tokens) AS n_tokens,
           sum(n_positive) AS n_positive
    FROM neuron_stats
    WHERE (at_run IS NULL OR run_id = at_run) AND (at_kind IS NULL OR at_kind = 'neurons')
    GROUP BY ALL
),
neuron_langs AS (
    SELECT run_id, layer, lang, max(n_tokens) AS n_tokens
    FROM neuron_sums
    GROUP BY ALL
),
neurons AS (
    SELECT 'neurons' AS kind, u.run_id, u.layer, u.neuron AS unit, l.lang,
           coalesce(s.n_positive, 0) AS n_positive, l.n_tokens
    FROM (SELECT DISTINCT run_id, layer, neuron FROM neuron_sums) u
    JOIN neuron_langs l USING (run_id, layer)
    LEFT JOIN neuron_sums s USING (run_id, layer, neuron, lang)
)
SELECT kind, run_id, layer, unit, lang, n_positive::BIGINT AS n_positive,
       n_tokens::BIGINT AS n_tokens, n_positive / n_tokens AS p
FROM (SELECT * FROM features UNION ALL SELECT * FROM neurons)
WHERE n_tokens > 0;

CREATE OR REPLACE VIEW lape_probs WITH (DEFER_BINDING) AS
SELECT * FROM lape_probs_of();
