-- How each SAE feature fires on each language: one row per (run_id, layer, feature, lang)
-- where the feature fired on at least one of the language's phrases in the run, with the
-- means of act_max and act_mean over ALL the language's phrases in the run (an absent row is
-- activation 0, so these are sums over stored rows divided by n_phrases), n_active_phrases,
-- n_phrases, and fire_rate = Σ n_active / Σ phrase_tokens.n_tokens over the language's phrases
-- (LAPE's p for SAE features). A (feature, lang) without a row has means and fire_rate 0.
-- Filter with WHERE run_id = ? AND layer = ?.
CREATE OR REPLACE VIEW feature_lang_stats WITH (DEFER_BINDING) AS
WITH run_phrases AS NOT MATERIALIZED (
    SELECT t.run_id, t.phrase_id, t.n_tokens, p.lang
    FROM phrase_tokens t JOIN phrases p USING (phrase_id)
),
langs AS (
    SELECT run_id, lang, count(*) AS n_phrases, sum(n_tokens) AS n_tokens
    FROM run_phrases
    GROUP BY ALL
),
sums AS (
    SELECT f.run_id, f.layer, f.feature, rp.lang, sum(f.act_max) AS s_max,
           sum(f.act_mean) AS s_mean, count(*) AS n_active_phrases,
           sum(f.n_active) AS n_active_tokens
    FROM feature_values f JOIN run_phrases rp USING (run_id, phrase_id)
    GROUP BY ALL
)
SELECT s.run_id, s.layer, s.feature, s.lang, s.s_max / l.n_phrases AS mean_act_max,
       s.s_mean / l.n_phrases AS mean_act_mean, s.n_active_phrases, l.n_phrases,
       s.n_active_tokens, l.n_tokens, s.n_active_tokens / l.n_tokens AS fire_rate
FROM sums s JOIN langs l USING (run_id, lang);
