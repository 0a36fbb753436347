-- Information parity (Tsvetkov & Kipnis 2024; SPEC §3, capability): one row per (model_id,
-- steer, lang) with parity = mean over the aligned groups holding both l and `ref` of
-- NLL(p_{g,ref}) / NLL(p_{g,l}), NLL the phrase's summed negative log-likelihood in nats over
-- every real token, BOS prepended (table phrase_nll, written by `xling bench parity`), and
-- n_groups. 1 = parity; below 1 the language costs the model more than the reference for the
-- same content. Groups where either NLL is 0 are left out. Filter with WHERE model_id = ? AND
-- steer IS NOT DISTINCT FROM ?.
--
--   information_parity(ref := 'en'); the view information_parity uses English.
CREATE OR REPLACE MACRO information_parity(ref := 'en') AS TABLE
WITH nll AS (
    SELECT n.model_id, n.steer, p.group_id, p.lang, n.nll_nats
    FROM phrase_nll n JOIN phrases p USING (phrase_id)
    WHERE n.nll_nats > 0
)
SELECT x.model_id, x.steer, x.lang, avg(e.nll_nats / x.nll_nats) AS parity,
       count(*) AS n_groups
FROM nll x
JOIN nll e ON e.model_id = x.model_id AND e.steer IS NOT DISTINCT FROM x.steer
          AND e.group_id = x.group_id AND e.lang = ref
GROUP BY x.model_id, x.steer, x.lang;

CREATE OR REPLACE VIEW information_parity WITH (DEFER_BINDING) AS
SELECT * FROM information_parity();
