"""`corpus translate` with tiny MarianMT models built offline.

The models are real MarianMTModel/MarianTokenizer directories (seeded random weights, a
sentencepiece vocabulary trained on the fly, safetensors), named so that the template
`<dir>/opus-tiny-en-{lang}` resolves to them. Their output is gibberish; the tests check
structure: which rows are added, their source and origin, and that a failure writes nothing.
"""

from __future__ import annotations

import json
import random
import shutil

import pytest

from xling.warehouse import Warehouse

pytestmark = pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")

WORDS = [
    "the",
    "a",
    "red",
    "blue",
    "small",
    "big",
    "house",
    "river",
    "tree",
    "cat",
    "dog",
    "runs",
    "sleeps",
    "over",
    "under",
    "and",
    "of",
    "to",
    "is",
    "was",
    "city",
    "king",
    "queen",
    "water",
    "fire",
    "stone",
    "light",
    "dark",
    "old",
    "new",
    "green",
]


def build_marian(out_dir, spm_dir, seed: int = 0):
    """A seeded tiny MarianMTModel + MarianTokenizer saved as safetensors in `out_dir`."""
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    vocab = json.loads((spm_dir / "vocab.json").read_text())
    config = MarianConfig(
        vocab_size=len(vocab),
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_position_embeddings=64,
        pad_token_id=vocab["<pad>"],
        decoder_start_token_id=vocab["<pad>"],
        eos_token_id=vocab["</s>"],
        forced_eos_token_id=vocab["</s>"],
    )
    torch.manual_seed(seed)
    model = MarianMTModel(config).eval()
    with torch.no_grad():
        # Random weights could end a translation at once; never emitting </s> or <unk> early
        # makes every output non-empty, so counts are exact.
        model.final_logits_bias[0, vocab["</s>"]] = -100.0
        model.final_logits_bias[0, vocab["<unk>"]] = -100.0
    model.save_pretrained(out_dir)
    for name in ("source.spm", "target.spm", "vocab.json"):
        shutil.copy(spm_dir / name, out_dir / name)
    MarianTokenizer(
        source_spm=str(out_dir / "source.spm"),
        target_spm=str(out_dir / "target.spm"),
        vocab=str(out_dir / "vocab.json"),
    ).save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="session")
def marian_dir(tmp_path_factory):
    """Directory holding opus-tiny-en-zh and opus-tiny-en-ru (safetensors) and
    opus-tiny-en-es (pickle weights only)."""
    import sentencepiece as spm
    import torch
    from safetensors.torch import load_file

    root = tmp_path_factory.mktemp("marian")
    spm_dir = root / "spm"
    spm_dir.mkdir()
    rng = random.Random(0)
    lines = [" ".join(rng.choices(WORDS, k=rng.randint(3, 10))) for _ in range(300)]
    (spm_dir / "train.txt").write_text("\n".join(lines))
    spm.SentencePieceTrainer.train(
        input=str(spm_dir / "train.txt"),
        model_prefix=str(spm_dir / "sp"),
        vocab_size=80,
        model_type="unigram",
        character_coverage=1.0,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    shutil.copy(spm_dir / "sp.model", spm_dir / "source.spm")
    shutil.copy(spm_dir / "sp.model", spm_dir / "target.spm")
    sp = spm.SentencePieceProcessor(model_file=str(spm_dir / "sp.model"))
    # Marian's layout: </s> 0, <unk> 1, the pieces, <pad> last.
    vocab = {"</s>": 0, "<unk>": 1}
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if piece not in ("<s>", "</s>", "<unk>"):
            vocab.setdefault(piece, len(vocab))
    vocab["<pad>"] = len(vocab)
    (spm_dir / "vocab.json").write_text(json.dumps(vocab))
    for seed, lang in enumerate(("zh", "ru", "es")):
        out = root / f"opus-tiny-en-{lang}"
        out.mkdir()
        build_marian(out, spm_dir, seed)
    pickled = root / "opus-tiny-en-es"
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    return root


def seed_corpus(db_path) -> None:
    """g1: en+zh; g2: en; g3: zh only (no English); g4: en with an origin feature."""
    with Warehouse(db_path) as wh:
        wh.con.execute(
            """INSERT INTO phrases VALUES
            (1, 'g1', 'en', 'the red house', 'file', NULL, NULL),
            (2, 'g1', 'zh', '红房子', 'file', NULL, NULL),
            (3, 'g2', 'en', 'a cat runs over the river', 'file', NULL, NULL),
            (4, 'g3', 'zh', '只有中文', 'file', NULL, NULL),
            (5, 'g4', 'en', 'old king', 'np', 20, 1234)"""
        )


def rows(db_path) -> list[tuple]:
    with Warehouse(db_path, read_only=True) as wh:
        return wh.con.execute(
            "SELECT phrase_id, group_id, lang, text, source, origin_layer, origin_feature "
            "FROM phrases ORDER BY phrase_id"
        ).fetchall()


def test_translate_fills_only_missing_languages(cli, db_path, marian_dir):
    seed_corpus(db_path)
    before = rows(db_path)
    template = str(marian_dir / "opus-tiny-en-{lang}")
    res = cli(
        "corpus", "translate", "--to", "zh,ru", "--model-template", template,
        "--batch-size", "2", "--max-new-tokens", "6", "--device", "cpu", "--db", db_path,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "loaded 5 translated phrases in 3 groups (0 new): ru 3, zh 2" in res.stdout
    after = rows(db_path)
    assert after[: len(before)] == before  # existing phrases untouched
    added = after[len(before) :]
    assert [r[0] for r in added] == [6, 7, 8, 9, 10]
    got = {(r[1], r[2]): r for r in added}
    assert set(got) == {("g2", "zh"), ("g4", "zh"), ("g1", "ru"), ("g2", "ru"), ("g4", "ru")}
    for (_group, lang), r in got.items():
        assert r[4] == template.format(lang=lang)
        assert r[3].strip()
    # The translation of an SAE feature's phrase belongs to the same feature.
    assert got["g4", "zh"][5:] == (20, 1234) and got["g4", "ru"][5:] == (20, 1234)
    assert got["g2", "ru"][5:] == (None, None)
    # Nothing left to do: a rerun adds nothing.
    res = cli("corpus", "translate", "--to", "zh,ru", "--model-template", template,
              "--db", db_path)  # fmt: skip
    assert res.exit_code == 0 and "loaded 0 translated phrases" in res.stdout
    assert rows(db_path) == after


def test_translate_limit_and_progress(wh, marian_dir):
    from xling.ingest.translate import TranslateConfig, translate_missing

    wh.con.execute(
        "INSERT INTO phrases SELECT i, 'g' || i, 'en', 'the city ' || i, NULL, NULL, NULL "
        "FROM range(1, 8) t(i)"
    )
    calls = []
    cfg = TranslateConfig(
        targets=["zh"],
        model_template=str(marian_dir / "opus-tiny-en-{lang}"),
        batch_size=2,
        limit=5,
        max_new_tokens=4,
        device="cpu",
    )
    result = translate_missing(wh, cfg, lambda *a: calls.append(a))
    assert result.phrases == 5 and result.by_lang == {"zh": 5}
    assert calls == [("zh", 0, 5), ("zh", 2, 5), ("zh", 4, 5), ("zh", 5, 5)]
    # The lowest phrase ids first.
    assert wh.sql("SELECT group_id FROM phrases WHERE lang = 'zh' ORDER BY 1").group_id.tolist() == [
        "g1", "g2", "g3", "g4", "g5",
    ]  # fmt: skip


def test_pickle_weights_refused_without_flag_and_nothing_written(cli, db_path, marian_dir):
    seed_corpus(db_path)
    before = rows(db_path)
    template = str(marian_dir / "opus-tiny-en-{lang}")
    # zh translates fine first; es then fails, and the zh rows must not be written either.
    res = cli("corpus", "translate", "--to", "zh,es", "--model-template", template,
              "--max-new-tokens", "4", "--db", db_path)  # fmt: skip
    assert res.exit_code == 1
    assert "has no safetensors weights" in res.stderr and "--allow-pickle" in res.stderr
    assert rows(db_path) == before
    res = cli("corpus", "translate", "--to", "zh,es", "--model-template", template,
              "--max-new-tokens", "4", "--allow-pickle", "--db", db_path)  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "es 3, zh 2" in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--to", "xx"], "unknown language code(s) xx"),
        (["--to", "en"], "en is the source language"),
        (
            ["--to", "zh", "--model-template", "/nowhere/m-{lang}"],
            "no model directory /nowhere/m-zh",
        ),
        (["--to", "zh", "--model-template", "fixed-name"], "has no {lang}"),
        (["--to", "zh", "--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_translate_errors(cli, db_path, args, message):
    seed_corpus(db_path)
    before = rows(db_path)
    res = cli("corpus", "translate", *args, "--db", db_path)
    assert res.exit_code == 1
    assert message in res.stderr, res.stderr
    assert rows(db_path) == before
