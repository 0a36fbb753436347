"""Ingest throughput against a bare forward + SAE encode on the same batches (SPEC §8: ≥ 0.85).

    .venv/bin/python bench/ingest.py                     # tiny Gemma3 model, tiny SAEs
    .venv/bin/python bench/ingest.py --gemma             # Gemma 3 270M, layers 0,4,8,12,17
    .venv/bin/python bench/ingest.py --gemma --sae-dir demo-out/saes

Both sides see the same phrases, tokenised and length-sorted into the same batches of
`--batch-size`, and the same model object and SAEs:
- bare: the decoder stack without LM head (`output_hidden_states`), then `sae.encode` on
  hidden_states[L+1] of each layer (the last layer read from the block, as ingest does);
  nothing is pooled or kept;
- xling: `run_ingest` into a fresh warehouse (features all), end to end: reading phrases,
  forward, encode, pooling, sparse rows, Arrow, DuckDB commits with their ledger.
The two alternate `--repeat` times and the best time of each counts (the machine is shared).
Prints phrases/s of each and their ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from xling.ingest.hooks import capture_blocks, pad_right
from xling.ingest.models import load_model
from xling.ingest.runner import IngestConfig, run_ingest
from xling.ingest.tiny import build_tiny_model, build_tiny_saes, cldr_phrases, insert_phrases
from xling.warehouse import Warehouse

GEMMA_LAYERS = [0, 4, 8, 12, 17]


def bare(lm, saes, texts: list[str], batch_size: int) -> float:
    """Seconds for forward + SAE encode over `texts` in ingest's batches (nothing kept)."""
    tok = lm.tokenizer
    enc = tok(texts, add_special_tokens=True)["input_ids"]
    order = sorted(range(len(enc)), key=lambda i: len(enc[i]))
    last = len(lm.model.model.layers) - 1
    start = time.perf_counter()
    with torch.inference_mode(), capture_blocks(lm.model, [last]) as block_out:
        for b in range(0, len(order), batch_size):
            ids, mask = pad_right(
                [enc[i] for i in order[b : b + batch_size]], tok.pad_token_id, lm.device
            )
            hs = lm.model.model(
                input_ids=ids, attention_mask=mask, use_cache=False, output_hidden_states=True
            ).hidden_states
            for layer, sae in saes.items():
                h = block_out[last] if layer == last else hs[layer + 1]
                sae.encode(h)
    return time.perf_counter() - start


def xling(
    lm, model_name: str, sae_dir: str, layers: list[int], n_groups: int, batch_size: int, tmp: Path
) -> float:
    db = tmp / f"x{time.monotonic_ns()}.duckdb"
    wh = Warehouse(db)
    insert_phrases(wh, cldr_phrases(n_groups))
    cfg = IngestConfig(model=model_name, sae_dir=sae_dir, layers=layers, batch_size=batch_size)
    start = time.perf_counter()
    run_ingest(wh, cfg, model=lm)
    seconds = time.perf_counter() - start
    wh.close()
    db.unlink()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--gemma", action="store_true", help="Gemma 3 270M instead of the tiny model"
    )
    parser.add_argument("--sae-dir", help="sae-lens SAEs (parent of per-layer directories)")
    parser.add_argument("--groups", type=int, default=None, help="CLDR groups (x10 phrases)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    from sae_lens import SAE

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.gemma:
            model_name, layers, groups = "gemma3-270m", GEMMA_LAYERS, args.groups or 100
            t0 = time.perf_counter()
            lm = load_model(model_name)
            load_s = time.perf_counter() - t0
            sae_dir = args.sae_dir or str(
                build_tiny_saes(
                    tmp / "saes", layers=layers, d_in=640, d_sae=2048, model_name=model_name
                )[layers[0]].parent
            )
        else:
            model_name, layers, groups = (
                str(build_tiny_model(tmp / "model")),
                [0, 1, 2, 3],
                args.groups or 800,
            )
            t0 = time.perf_counter()
            lm = load_model(model_name)
            load_s = time.perf_counter() - t0
            sae_dir = args.sae_dir or str(build_tiny_saes(tmp / "saes")[0].parent)
        saes = {
            layer: SAE.load_from_disk(str(Path(sae_dir) / f"layer_{layer}")) for layer in layers
        }
        texts = list(cldr_phrases(groups).column("text").to_pylist())
        bare_s, xling_s = [], []
        for _ in range(args.repeat):
            bare_s.append(bare(lm, saes, texts, args.batch_size))
            xling_s.append(xling(lm, model_name, sae_dir, layers, groups, args.batch_size, tmp))
        n = len(texts)
        b, x = n / min(bare_s), n / min(xling_s)
        print(
            f"model {model_name if args.gemma else 'tiny-gemma3'}, {n} phrases, layers {layers}, "
            f"batch {args.batch_size}, best of {args.repeat}"
        )
        # both sides get the loaded model: the load is reported apart, never in a ratio
        print(f"model load (once):         {load_s:10.1f} s")
        print(f"bare forward + SAE encode: {b:10.1f} phrases/s")
        print(f"xling ingest:              {x:10.1f} phrases/s")
        print(f"ratio:                     {x / b:10.3f}  (target >= 0.9 on Gemma 3 270M)")


if __name__ == "__main__":
    main()
