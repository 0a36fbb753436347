-- Token premium (Petrov et al. 2023; SPEC §3, capability): one row per (run_id, lang) with
-- premium = Σ tokens(l) / Σ tokens(ref) over the aligned groups of the run holding both l and
-- `ref`, tokens = phrase_tokens.n_tokens less the BOS when the run pooled it (config
-- include_bos), so BOS never counts; n_tokens, ref_tokens and n_groups. No model pass: read
-- from the ingest's token counts. The reference's own row is 1. Filter with WHERE run_id = ?.
--
--   token_premium(ref := 'en'); the view token_premium uses English.
CREATE OR REPLACE MACRO token_premium(ref := 'en') AS TABLE
WITH toks AS (
    SELECT t.run_id, p.group_id, p.lang,
           t.n_tokens - CASE WHEN coalesce(TRY_CAST(json_extract(r.config, '$.include_bos')
                                                    AS BOOLEAN), false)
                             THEN 1 ELSE 0 END AS n
    FROM phrase_tokens t JOIN phrases p USING (phrase_id) JOIN runs r USING (run_id)
)
SELECT x.run_id, x.lang, sum(x.n) / sum(e.n) AS premium, sum(x.n) AS n_tokens,
       sum(e.n) AS ref_tokens, count(*) AS n_groups
FROM toks x
JOIN toks e ON e.run_id = x.run_id AND e.group_id = x.group_id AND e.lang = ref
GROUP BY x.run_id, x.lang;

CREATE OR REPLACE VIEW token_premium WITH (DEFER_BINDING) AS
SELECT * FROM token_premium();
