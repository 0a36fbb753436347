-- The SAE features of one language against English at each layer: one row per (run_id, layer,
-- feature) that fired on a phrase of `target_lang` or of English in the run, with
--   lang_mean, en_mean   mean act (stat) over ALL the run's phrases of the language (absent
--                        rows = 0)
--   deficit              en_mean − lang_mean (largest: most under-activated in `target_lang`)
--   lang_fire_rate       LAPE's p of the feature for `target_lang` (Σ n_active / Σ tokens)
--   lang_share           lang_fire_rate / Σ over the run's languages of fire_rate (1: fires
--                        for `target_lang` only — language-specific)
--   lang_active_phrases, en_active_phrases
--                        the feature's support: phrases of the language (of English) on
--                        which it fired; a feature seen on one phrase is noise, not a finding
-- Filter with WHERE run_id = ? AND layer = ?; order by deficit or lang_share.
--
--   language_features(target_lang, stat := 'max', from_summaries := false)
-- from_summaries (a constant): read feature_lang_stats_summary (a finished run's summaries, same
-- numbers) instead of feature_lang_stats over the raw rows; see lape_probs_of.
CREATE OR REPLACE MACRO language_features(target_lang, stat := 'max',
                                          from_summaries := false) AS TABLE
SELECT f.run_id, f.layer, f.feature, f.lang_mean, f.en_mean, f.en_mean - f.lang_mean AS deficit,
       f.lang_fire_rate, f.lang_fire_rate / f.fire_rate_sum AS lang_share, f.lang_active_phrases,
       f.en_active_phrases
FROM (
    SELECT s.run_id, s.layer, s.feature,
           coalesce(max(s.mean_act) FILTER (WHERE s.lang = target_lang), 0) AS lang_mean,
           coalesce(max(s.mean_act) FILTER (WHERE s.lang = 'en'), 0) AS en_mean,
           coalesce(max(s.fire_rate) FILTER (WHERE s.lang = target_lang), 0) AS lang_fire_rate,
           sum(s.fire_rate) AS fire_rate_sum,
           coalesce(max(s.n_active_phrases) FILTER (WHERE s.lang = target_lang), 0)
               AS lang_active_phrases,
           coalesce(max(s.n_active_phrases) FILTER (WHERE s.lang = 'en'), 0)
               AS en_active_phrases
    FROM (
        SELECT x.run_id, x.layer, x.feature, x.lang, x.fire_rate, x.n_active_phrases,
               CASE stat WHEN 'max' THEN x.mean_act_max WHEN 'mean' THEN x.mean_act_mean
                    ELSE error('stat must be max or mean') END AS mean_act
        FROM (
            SELECT * FROM feature_lang_stats WHERE NOT from_summaries
            UNION ALL BY NAME
            SELECT * FROM feature_lang_stats_summary WHERE from_summaries
        ) x
    ) s
    GROUP BY s.run_id, s.layer, s.feature
) f
WHERE f.lang_mean > 0 OR f.en_mean > 0;
