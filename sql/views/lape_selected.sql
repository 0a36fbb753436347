-- Language-specific units by LAPE (Tang et al. 2024, their reference selection; SPEC §3): one
-- row per (run_id, kind, layer, unit, lang) for each selected unit and each language it is
-- assigned to, with p, the unit's entropy and the bar. Per run and kind, over all layers:
--   p̂ = p / Σ_languages p;  entropy = −Σ p̂ ln p̂ (0·ln 0 = 0);
--   bar = the k-th smallest of all p, k = round(filter_rate · #p) (round half to even, as
--         Python's round in the reference code);
--   units whose largest p is not above the bar are dropped;
--   of the rest, the round(top_rate · #units) lowest-entropy ones are selected (ties by layer,
--         then unit), #units counting dropped units too; entropies are compared rounded to 12
--         decimals, so that units with equal p's tie whatever order DuckDB summed them in
--         (the raw rows and the summaries, or two runs of one query, may differ in the last bit);
--   each selected unit belongs to every language whose p is above the bar (one or several).
-- Filter with WHERE run_id = ? AND kind = 'neurons'|'features' AND lang = ?. Absent
-- neuron_stats / feature_acts rows count as p = 0 (see lape_probs).
--
--   lape_selected(top_rate := 0.01, filter_rate := 0.95, from_summaries := false,
--                 at_run := NULL, at_kind := NULL); the view lape_selected uses the defaults.
--   from_summaries, at_run, at_kind: see lape_probs_of (at_run and at_kind only narrow what
--   is computed; the selection is per run and kind either way).
-- The reference uses filter_rate both for the filter and for the bar.
--
-- Computed from the sparse counts (lape_counts), not the grid: a zero p adds nothing to an
-- entropy, a p_max or an assignment, and the bar needs only how many p's of the grid are 0
-- (#p = Σ_layers #units · #languages, minus the positive ones).
CREATE OR REPLACE MACRO lape_selected(top_rate := 0.01, filter_rate := 0.95,
                                      from_summaries := false, at_run := NULL,
                                      at_kind := NULL) AS TABLE
WITH
counts AS MATERIALIZED (
    SELECT kind, run_id, layer, unit, lang, n_positive / n_tokens AS p
    FROM lape_counts(from_summaries := from_summaries, at_run := at_run, at_kind := at_kind)
),
units AS MATERIALIZED (
    -- each unit's p over its languages as a list: p̂ = p / Σ p, in one aggregation
    SELECT kind, run_id, layer, unit, p_max,
           -list_sum(list_transform(ps, lambda x: CASE WHEN x > 0 THEN x / s * ln(x / s)
                                                       ELSE 0 END)) AS entropy
    FROM (
        SELECT kind, run_id, layer, unit, list(p) AS ps, sum(p) AS s, max(p) AS p_max
        FROM counts
        GROUP BY ALL
    )
),
grid AS (
    -- #p and #units per run and kind: every unit of a layer has a p in each of its languages
    SELECT u.kind, u.run_id, sum(u.n_units * l.n_langs) AS n_cells, sum(u.n_units) AS n_units
    FROM (SELECT kind, run_id, layer, count(*) AS n_units FROM units GROUP BY ALL) u
    JOIN (
        SELECT kind, run_id, layer, count(*) AS n_langs
        FROM lape_languages(at_run := at_run, at_kind := at_kind)
        GROUP BY ALL
    ) l ON l.kind = u.kind AND l.run_id = u.run_id AND coalesce(l.layer, u.layer) = u.layer
    GROUP BY ALL
),
bars AS (
    -- the k-th smallest p of the grid: 0 while k reaches only zeros, else the (k − #zeros)-th
    -- smallest positive p
    SELECT g.kind, g.run_id,
           CASE WHEN b.k <= g.n_cells - b.n_positive THEN 0.0
                ELSE b.positive[(b.k - (g.n_cells - b.n_positive))::BIGINT] END AS bar
    FROM grid g
    JOIN (
        SELECT c.kind, c.run_id, count(*) FILTER (WHERE c.p > 0) AS n_positive,
               list_sort(list(c.p) FILTER (WHERE c.p > 0)) AS positive,
               any_value(greatest(1, round_even(z.n_cells * filter_rate::DOUBLE, 0))) AS k
        FROM counts c JOIN grid z USING (kind, run_id)
        GROUP BY ALL
    ) b USING (kind, run_id)
),
selected AS (
    SELECT u.run_id, u.kind, u.layer, u.unit, u.entropy, b.bar
    FROM units u
    JOIN bars b USING (kind, run_id)
    JOIN grid g USING (kind, run_id)
    WHERE u.p_max > b.bar
    QUALIFY row_number() OVER (PARTITION BY u.run_id, u.kind
                               ORDER BY round(u.entropy, 12), u.layer, u.unit)
            <= round_even(g.n_units * top_rate::DOUBLE, 0)
)
SELECT s.run_id, s.kind, s.layer, s.unit, c.lang, c.p, s.entropy, s.bar
FROM selected s
JOIN counts c USING (kind, run_id, layer, unit)
WHERE c.p > s.bar;

CREATE OR REPLACE VIEW lape_selected WITH (DEFER_BINDING) AS
SELECT * FROM lape_selected();
