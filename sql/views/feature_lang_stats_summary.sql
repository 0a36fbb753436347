-- feature_lang_stats from summary_feature_lang (warehouse/summaries.py): same columns and
-- numbers as feature_lang_stats, for runs whose summaries are finished (summaries.has_summaries).
CREATE OR REPLACE VIEW feature_lang_stats_summary AS
WITH langs AS (
    SELECT t.run_id, p.lang, count(*) AS n_phrases, sum(t.n_tokens) AS n_tokens
    FROM phrase_tokens t JOIN phrases p USING (phrase_id)
    GROUP BY ALL
),
sums AS (
    SELECT run_id, layer, feature, lang, sum(s_max) AS s_max, sum(s_mean) AS s_mean,
           sum(n_active_phrases) AS n_active_phrases, sum(n_active_tokens) AS n_active_tokens
    FROM summary_feature_lang
    GROUP BY ALL
)
SELECT s.run_id, s.layer, s.feature, s.lang, s.s_max / l.n_phrases AS mean_act_max,
       s.s_mean / l.n_phrases AS mean_act_mean, s.n_active_phrases, l.n_phrases,
       s.n_active_tokens, l.n_tokens, s.n_active_tokens / l.n_tokens AS fire_rate
FROM sums s JOIN langs l USING (run_id, lang);
