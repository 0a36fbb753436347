-- Language-specific units by LAPE (Tang et al. 2024, their reference selection; SPEC §3): one
-- row per (run_id, kind, layer, unit, lang) for each selected unit and each language it is
-- assigned to, with p, the unit's entropy and the bar. Per run and kind, over all layers:
--   p̂ = p / Σ_languages p;  entropy = −Σ p̂ ln p̂ (0·ln 0 = 0);
--   bar = the k-th smallest of all p, k = round(filter_rate · #p) (round half to even, as
--         Python's round in the reference code);
--   units whose largest p is not above the bar are dropped;
--   of the rest, the round(top_rate · #units) lowest-entropy ones are selected (ties by layer,
--         then unit), #units counting dropped units too;
--   each selected unit belongs to every language whose p is above the bar (one or several).
-- Filter with WHERE run_id = ? AND kind = 'neurons'|'features' AND lang = ?. Absent
-- neuron_stats / feature_acts rows count as p = 0 (see lape_probs).
--
--   lape_selected(top_rate := 0.01, filter_rate := 0.95, from_summaries := false); the view
--   lape_selected uses the defaults. from_summaries: see lape_probs_of. The reference uses filter_rate both for the filter and for the bar.
CREATE OR REPLACE MACRO lape_selected(top_rate := 0.01, filter_rate := 0.95,
                                      from_summaries := false) AS TABLE
WITH
probs AS NOT MATERIALIZED (
    SELECT * FROM lape_probs_of(from_summaries := from_summaries)
),
bars AS (
    SELECT run_id, kind, p AS bar
    FROM (
        SELECT run_id, kind, p,
               row_number() OVER (PARTITION BY run_id, kind ORDER BY p) AS rn,
               count(*) OVER (PARTITION BY run_id, kind) AS n
        FROM probs
    )
    WHERE rn = greatest(1, round_even(n * filter_rate::DOUBLE, 0))
),
units AS NOT MATERIALIZED (
    SELECT run_id, kind, layer, unit,
           -sum(CASE WHEN p_hat > 0 THEN p_hat * ln(p_hat) ELSE 0 END) AS entropy,
           max(p) AS p_max
    FROM (
        SELECT run_id, kind, layer, unit, p,
               p / nullif(sum(p) OVER (PARTITION BY run_id, kind, layer, unit), 0) AS p_hat
        FROM probs
    )
    GROUP BY run_id, kind, layer, unit
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
                               ORDER BY u.entropy, u.layer, u.unit) <= q.n_select
)
SELECT s.run_id, s.kind, s.layer, s.unit, p.lang, p.p, s.entropy, s.bar
FROM selected s
JOIN probs p USING (run_id, kind, layer, unit)
WHERE p.p > s.bar;

CREATE OR REPLACE VIEW lape_selected WITH (DEFER_BINDING) AS
SELECT * FROM lape_selected();
