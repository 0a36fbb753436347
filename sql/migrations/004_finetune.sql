-- Fine-tunes made from the warehouse (SPEC §6): one row per `xling finetune align|subnetwork`.
-- `config` is the job's dataclass as JSON (AlignLoraConfig / SubnetworkConfig); `losses` is
-- a JSON list with one object per optimisation step; `adapter` is the saved artifact that
-- `ingest --adapter` accepts (a peft LoRA directory or a subnetwork delta file).

CREATE SEQUENCE finetune_id_seq START 1;
CREATE TABLE finetunes (
    finetune_id    INTEGER PRIMARY KEY DEFAULT nextval('finetune_id_seq'),
    kind           VARCHAR NOT NULL,     -- align | subnetwork
    base_run       INTEGER NOT NULL,     -- the run whose data and model it started from
    model_id       INTEGER NOT NULL,     -- the base model (models row of base_run)
    config         JSON NOT NULL,
    losses         JSON NOT NULL,
    adapter        VARCHAR NOT NULL,     -- absolute path of the saved artifact
    n_trainable    BIGINT NOT NULL,      -- parameters the optimiser could change
    n_params       BIGINT NOT NULL,      -- parameters of the base model
    created_at     TIMESTAMP DEFAULT current_timestamp
);
