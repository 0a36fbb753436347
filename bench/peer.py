"""The pipeline a researcher would write without xling (the SPEC §8 peer), for bench/run.py.

Hidden states from transformers (`output_hidden_states=True`, the full causal LM call, batches
in corpus order padded to the longest phrase), sae-lens `encode` per layer, pooling over real
tokens but the BOS (as xling does by default), the nonzero (phrase, feature) pairs collected
into a pandas DataFrame, one DuckDB INSERT per batch. Nothing here uses xling, so it measures
what xling's runner adds over the obvious code, and writes the same rows.

Hidden state L + 1 is the residual after block L for every block but the last (transformers
applies the final norm there), so compare with xling on layers below the last.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import duckdb
import pandas as pd
import torch

SCHEMA = """
CREATE TABLE IF NOT EXISTS feature_acts (
    phrase_id BIGINT, layer SMALLINT, feature INTEGER,
    act_mean FLOAT, act_max FLOAT, n_active SMALLINT
)
"""


def peer_ingest(
    model,
    tokenizer,
    saes: dict[int, object],
    phrase_ids: Sequence[int],
    texts: Sequence[str],
    db: Path,
    batch_size: int = 32,
) -> int:
    """Write pooled SAE activations of `texts` to `db`'s feature_acts; returns rows written."""
    con = duckdb.connect(str(db))
    con.execute(SCHEMA)
    tokenizer.padding_side = "right"  # position ids then match an unpadded forward
    n_rows = 0
    for start in range(0, len(texts), batch_size):
        ids = list(phrase_ids[start : start + batch_size])
        enc = tokenizer(list(texts[start : start + batch_size]), return_tensors="pt", padding=True)
        with torch.no_grad():
            hidden = model(**enc, output_hidden_states=True).hidden_states
            mask = enc["attention_mask"].bool()
            mask[:, 0] &= enc["input_ids"][:, 0] != tokenizer.bos_token_id
            n_tokens = mask.sum(1, keepdim=True).clamp(min=1)
            frames = []
            for layer, sae in saes.items():
                acts = sae.encode(hidden[layer + 1]) * mask.unsqueeze(-1)
                n_active = (acts > 0).sum(1)
                b, f = n_active.nonzero(as_tuple=True)
                frames.append(
                    pd.DataFrame(
                        {
                            "phrase_id": [ids[i] for i in b.tolist()],
                            "layer": layer,
                            "feature": f.numpy(),
                            "act_mean": (acts.sum(1) / n_tokens)[b, f].numpy(),
                            "act_max": acts.amax(1)[b, f].numpy(),
                            "n_active": n_active[b, f].numpy(),
                        }
                    )
                )
        df = pd.concat(frames, ignore_index=True)
        con.execute("INSERT INTO feature_acts SELECT * FROM df")  # DuckDB reads `df` by name
        n_rows += len(df)
    con.close()
    return n_rows
