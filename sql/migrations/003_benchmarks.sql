-- Benchmarks (SPEC §6): which steering a score was measured under and with how many shots.
-- One score per (model_id, task, lang, metric, steer): importing or running again replaces it.
-- `steer` is the name of the intervention applied during the run (NULL: none); the adapter
-- is part of the model (models.adapter).

ALTER TABLE benchmarks ADD COLUMN steer VARCHAR;
ALTER TABLE benchmarks ADD COLUMN num_fewshot INTEGER;
