-- Capability before and after a fine-tune round, per language, on the round's held-apart
-- phrases (table round_nll, written by `xling finetune round`). One row per language with
--   nll_base, nll_tuned        nats per token: Σ NLL / Σ tokens over the language's phrases
--   nll_change_pct             100·(nll_tuned − nll_base)/nll_base (negative = better)
--   parity_base, parity_tuned  information parity: mean over groups holding English and the
--                              language of NLL(en)/NLL(l), NLL summed over the phrase's real
--                              tokens (BOS prepended, never predicted); 1 = parity, < 1 = the
--                              language costs more than English. English's row is 1 by
--                              definition; a group whose phrase has NLL 0 is skipped.
--   parity_change              parity_tuned − parity_base
--   n_phrases, n_groups        phrases scored; groups entering the parity
--
--   round_capability(rid)
CREATE OR REPLACE MACRO round_capability(rid) AS TABLE
WITH
nll AS (
    SELECT n.model, n.phrase_id, n.nll, n.n_tokens, p.group_id, p.lang
    FROM round_nll n JOIN phrases p USING (phrase_id)
    WHERE n.round_id = rid
),
per_lang AS (
    SELECT lang,
           sum(nll) FILTER (WHERE model = 'base') / sum(n_tokens) FILTER (WHERE model = 'base')
               AS nll_base,
           sum(nll) FILTER (WHERE model = 'tuned') / sum(n_tokens) FILTER (WHERE model = 'tuned')
               AS nll_tuned,
           count(*) FILTER (WHERE model = 'base') AS n_phrases
    FROM nll GROUP BY lang
),
parity AS (
    SELECT l.lang,
           avg(e.nll / l.nll) FILTER (WHERE l.model = 'base') AS parity_base,
           avg(e.nll / l.nll) FILTER (WHERE l.model = 'tuned') AS parity_tuned,
           count(*) FILTER (WHERE l.model = 'base') AS n_groups
    FROM nll l
    JOIN nll e ON e.group_id = l.group_id AND e.model = l.model AND e.lang = 'en'
    WHERE l.nll > 0
    GROUP BY l.lang
)
SELECT p.lang, p.nll_base, p.nll_tuned,
       100 * (p.nll_tuned - p.nll_base) / nullif(p.nll_base, 0) AS nll_change_pct,
       q.parity_base, q.parity_tuned, q.parity_tuned - q.parity_base AS parity_change,
       p.n_phrases, q.n_groups
FROM per_lang p LEFT JOIN parity q USING (lang);
