"""Corpus load throughput: a wide CSV of 10k groups x 10 languages (100k phrases) into a fresh
warehouse with `xling.ingest.corpus.load_files`, timed end to end (read, validate, write).

    .venv/bin/python bench/corpus_load.py [--groups 10000] [--repeat 3]

Prints the best time of the repeats and phrases per second; the target is under 5 s.
"""

from __future__ import annotations

import argparse
import csv
import random
import tempfile
import time
from pathlib import Path

from xling.ingest.corpus import load_files
from xling.warehouse import Warehouse

LANGS = ("en", "zh", "ru", "es", "it", "id", "ca", "mr", "ml", "hi")
# A few letters of each language's script, so the text looks like the real corpus to DuckDB.
ALPHABETS = {
    "en": "abcdefghijklmnopqrstuvwxyz",
    "zh": "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年",
    "ru": "абвгдежзийклмнопрстуфхцчшщыэюя",
    "es": "abcdefghijklmnñopqrstuvwxyzáéíóú",
    "it": "abcdefghilmnopqrstuvzàèéìòù",
    "id": "abcdefghijklmnopqrstuvwxyz",
    "ca": "abcdefghijklmnopqrstuvxyzàçèéíïòóúü",
    "mr": "अआइईउऊएऐओऔकखगघचछजझटठडढणतथदधनपफबभमयरलवशषसह",
    "ml": "അആഇഈഉഊഎഏഐഒഓഔകഖഗഘങചഛജഝഞടഠഡഢണതഥദധനപഫബഭമയരലവശഷസഹ",
    "hi": "अआइईउऊएऐओऔकखगघचछजझटठडढणतथदधनपफबभमयरलवशषसह",
}


def write_corpus(path: Path, n_groups: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["group_id", "origin_layer", "origin_feature", *LANGS])
        for g in range(n_groups):
            texts = []
            for lang in LANGS:
                words = (
                    "".join(rng.choices(ALPHABETS[lang], k=rng.randint(2, 8)))
                    for _ in range(rng.randint(4, 14))
                )
                texts.append(" ".join(words))
            out.writerow([f"g{g}", rng.randint(0, 25), rng.randint(0, 16383), *texts])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--groups", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "corpus.csv"
        write_corpus(src, args.groups)
        size_mb = src.stat().st_size / 1e6
        times = []
        for i in range(args.repeat):
            with Warehouse(Path(tmp) / f"w{i}.duckdb") as wh:
                t0 = time.perf_counter()
                result = load_files(wh, [src])
                times.append(time.perf_counter() - t0)
        best = min(times)
        print(
            f"corpus load: {result.phrases:,} phrases ({args.groups:,} groups x {len(LANGS)} "
            f"languages, {size_mb:.1f} MB CSV) in {best:.2f} s best of {args.repeat} "
            f"({result.phrases / best:,.0f} phrases/s); target < 5 s: "
            f"{'ok' if best < 5 else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
