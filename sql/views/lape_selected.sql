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
--   is computed; the selection is per run and kind either way). The reference uses filter_rate both for the filter and for the bar.
CREATE OR REPLACE MACRO lape_selected(top_rate := 0.01, filter_rate := 0.95,
                                      from_summaries := false, at_run := NULL,
                                      at_kind := NULL) AS TABLE
WITH
probs AS MATERIALIZED (  -- read three times below: computed once
    SELECT * FROM lape_probs_of(from_summaries := from_summaries, at_run := at_run,
                                at_kind := at_kind)
),
bars AS (
    -- the k-th smallest p of the run and kind (a sorted list: one pass, no window sort)
    SELECT run_id, kind,
           list_sort(list(p))[greatest(1, round_even(count(*) * filter_rate::DOUBLE, 0))::BIGINT]
               AS bar
    FROM probs
    GROUP BY run_id, kind
),
units AS MATERIALIZED (
    -- each unit's languages' p as a list: p̂ = p / Σ p within it, in one aggregation
    SELECT run_id, kind, layer, unit, p_max,
           -list_sum(list_transform(ps, lambda x: CASE WHEN x > 0 THEN x / s * ln(x / s)
                                                       ELSE 0 END)) AS entropy
    FROM (
        SELECT run_id, kind, layer, unit, list(p) AS ps, sum(p) AS s, max(p) AS p_max
        FROM probs
        GROUP BY run_id, kind, layer, unit
    )
),
quotas AS (
    SELECT run_id, kind, round_even(n_units * top_rate::DOUBLE, 0) AS n_select
    FROM (SELECT run_id, kind, count(*) AS n_units FROM units GROUP BY run_id, kind)
),
selected AS (
    SELECT u.run_id, u.kind, u.layer, u.unit, u.entropy, b.bar
    FROM units u
    JOIN bars b USING (run_id, kind)
    JOIN quotas q USING (run_id, kind)
    WHERE u.p_max > b.bar
    QUALIFY row_number() OVER (PARTITION BY u.run_id, u.kind
                               ORDER BY round(u.entropy, 12), u.layer, u.unit) <= q.n_select
)
SELECT s.run_id, s.kind, s.layer, s.unit, p.lang, p.p, s.entropy, s.bar
FROM selected s
JOIN probs p USING (run_id, kind, layer, unit)
WHERE p.p > s.bar;

CREATE OR REPLACE VIEW lape_selected WITH (DEFER_BINDING) AS
SELECT * FROM lape_selected();
