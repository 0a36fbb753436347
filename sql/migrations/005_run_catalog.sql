-- What views and the catalog need about a run, as columns instead of JSON (warehouse/catalog.py
-- writes them when it creates a run; runs.config keeps the full reproducible record).
--   runs.adapter   the fine-tune merged into the model (absolute path; NULL: base model)
--   runs.steer     the stored intervention hooked in throughout (interventions.name; NULL: none)
--   runs.residuals / runs.neurons   whether the run stores residuals / neuron statistics
--   runs.engine    local | ray
--   runs.n_selected  phrases the run selected (it is complete when it has them all)
--   run_layers     one row per layer the run read, with the SAE it encoded there (sae_id
--                  NULL: residuals or neurons only at that layer)
--   jobs           every other job's config (sae train, bench), one row per job
-- Existing runs are backfilled from their config JSON, once, here.

ALTER TABLE runs ADD COLUMN adapter VARCHAR;
ALTER TABLE runs ADD COLUMN steer VARCHAR;
ALTER TABLE runs ADD COLUMN residuals BOOLEAN;
ALTER TABLE runs ADD COLUMN neurons BOOLEAN;
ALTER TABLE runs ADD COLUMN engine VARCHAR;
ALTER TABLE runs ADD COLUMN n_selected BIGINT;

UPDATE runs SET
    adapter = json_extract_string(config, '$.adapter'),
    steer = json_extract_string(config, '$.steer'),
    residuals = coalesce(TRY_CAST(json_extract(config, '$.residuals') AS BOOLEAN), false),
    neurons = coalesce(TRY_CAST(json_extract(config, '$.neurons') AS BOOLEAN), false),
    engine = coalesce(json_extract_string(config, '$.engine'), 'local'),
    n_selected = TRY_CAST(json_extract(config, '$.n_selected') AS BIGINT);

CREATE TABLE run_layers (
    run_id INTEGER NOT NULL,
    layer  SMALLINT NOT NULL,
    sae_id INTEGER,
    PRIMARY KEY (run_id, layer)
);

-- The layers of a run's SAEs; a run recorded without SAEs keeps its requested layer list.
INSERT INTO run_layers
SELECT DISTINCT run_id, layer, sae_id FROM (
    SELECT run_id,
           unnest(from_json(json_extract(config, '$.saes[*].layer'), '["SMALLINT"]')) AS layer,
           unnest(from_json(json_extract(config, '$.saes[*].sae_id'), '["INTEGER"]')) AS sae_id
    FROM runs
    WHERE json_array_length(config, '$.saes') > 0
);
INSERT INTO run_layers
SELECT DISTINCT run_id, unnest(from_json(json_extract(config, '$.layers'), '["SMALLINT"]')), NULL
FROM runs
WHERE coalesce(json_array_length(config, '$.saes'), 0) = 0
  AND json_array_length(config, '$.layers') > 0;

CREATE SEQUENCE job_id_seq START 1;
CREATE TABLE jobs (
    job_id     INTEGER PRIMARY KEY DEFAULT nextval('job_id_seq'),
    kind       VARCHAR NOT NULL,      -- sae-train | bench-run | bench-bpb
    model_id   INTEGER,
    config     JSON NOT NULL,
    created_at TIMESTAMP DEFAULT current_timestamp
);
