-- Information parity (SPEC §3, capability): one row per (model_id, steer, phrase_id) scored
-- by `xling bench parity`, with nll_nats = Σ −ln p(token | BOS, earlier tokens) over every
-- real token of the phrase's text and n_tokens = how many tokens that sum covers. `steer` is
-- the intervention active while scoring (NULL: none); the adapter is part of the model
-- (models.adapter). Scoring again replaces the rows. The view information_parity reads them.

CREATE TABLE phrase_nll (
    model_id    INTEGER NOT NULL,
    steer       VARCHAR,
    phrase_id   BIGINT NOT NULL,
    nll_nats    DOUBLE NOT NULL,
    n_tokens    INTEGER NOT NULL,
    computed_at TIMESTAMP DEFAULT current_timestamp
);
