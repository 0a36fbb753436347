-- The activation gap beside benchmark scores (SPEC §3, benchmark correlation): one row per
-- (run_id, layer, lang, task, metric) pairing the language's activation score
-- act_score = A(L, l) and gap_vs_en_pct (from gap_by_lang) with the benchmark value of the
-- run's model in that language, measured under the run's steering (benchmarks.steer = the
-- run's runs.steer, both NULL when none). Filter with WHERE run_id = ? AND task = ? AND
-- metric = ?; add lang <> 'en' against gap_vs_en_pct (English's gap is 0 by definition).
-- Languages without a benchmark score, or without an activation score in the run, have no
-- row. Pearson's r per layer:
--   SELECT layer, corr(gap_vs_en_pct, bench_value) FROM gap_vs_benchmark
--   WHERE run_id = ? AND task = ? AND metric = ? AND lang <> 'en' GROUP BY layer;
-- Spearman's ρ and p-values: `xling query correlate` (scipy).
--
--   gap_vs_benchmark(mode := NULL, stat := 'max', k := 16, ref := 'en', at_run := NULL,
--   at_layer := NULL): the same for a selection mode, pooled statistic, top-k and reference, restricted to one run and/or
--   layer (see activation_scores); the view gap_vs_benchmark uses the defaults.
CREATE OR REPLACE MACRO gap_vs_benchmark(mode := NULL, stat := 'max', k := 16, ref := 'en',
                                         at_run := NULL, at_layer := NULL) AS TABLE
SELECT g.run_id, g.layer, g.lang, g.resource_group, g.score AS act_score, g.gap_vs_en_pct,
       b.task, b.metric, b.value AS bench_value, b.stderr AS bench_stderr,
       b.n_samples AS bench_n, r.model_id, b.steer
FROM gap_by_lang(mode := mode, stat := stat, k := k, ref := ref, at_run := at_run,
                 at_layer := at_layer) g
JOIN runs r USING (run_id)
JOIN benchmarks b ON b.model_id = r.model_id AND b.lang = g.lang
                 AND b.steer IS NOT DISTINCT FROM r.steer;

CREATE OR REPLACE VIEW gap_vs_benchmark WITH (DEFER_BINDING) AS
SELECT * FROM gap_vs_benchmark();
