"""Bits per byte per language on the corpus, against a direct per-phrase computation."""

from __future__ import annotations

import math

import pytest

from xling.analysis.bpb import BpbConfig, bench_bpb, corpus_bpb
from xling.warehouse import XlingError


def direct_bpb(model, tokenizer, phrases) -> dict[str, float]:
    """Σ −log p(token | BOS, earlier tokens) / ln 2 / Σ UTF-8 bytes, one phrase at a time."""
    import torch

    nll: dict[str, float] = {}
    size: dict[str, int] = {}
    for lang, text in phrases:
        ids = [tokenizer.bos_token_id, *tokenizer(text, add_special_tokens=False)["input_ids"]]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        nll[lang] = nll.get(lang, 0.0) - sum(
            logp[i, ids[i + 1]].item() for i in range(len(ids) - 1)
        )
        size[lang] = size.get(lang, 0) + len(text.encode("utf-8"))
    return {lang: nll[lang] / math.log(2) / size[lang] for lang in nll}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (
        AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval(),
        AutoTokenizer.from_pretrained(tiny_model_dir),
    )


def test_corpus_bpb_equals_direct_computation(corpus_wh, tiny):
    model, tokenizer = tiny
    langs = ["en", "hi", "ml", "zh"]
    # batch of 5 with length sorting: batches mix languages and need padding
    table = corpus_bpb(corpus_wh, model, tokenizer, langs=langs, batch_size=5)
    phrases = corpus_wh.sql(
        "SELECT lang, text FROM phrases WHERE lang IN ('en', 'hi', 'ml', 'zh')"
    ).itertuples(index=False)
    expected = direct_bpb(model, tokenizer, phrases)
    got = dict(zip(table["lang"], table["bpb"], strict=True))
    assert got.keys() == expected.keys()
    for lang in langs:
        assert got[lang] == pytest.approx(expected[lang], rel=1e-5)
    assert table["n_phrases"].tolist() == [12, 12, 12, 12]


def test_bench_bpb_stores_one_row_per_language(corpus_wh, tiny_model_dir, tiny):
    table = bench_bpb(
        corpus_wh, BpbConfig(model=str(tiny_model_dir), langs=["en", "mr"], device="cpu")
    )
    rows = corpus_wh.sql(
        "SELECT b.lang, b.value, b.n_samples, b.task, b.metric, m.name FROM benchmarks b "
        "JOIN models m USING (model_id) ORDER BY lang"
    )
    assert rows[["lang", "task", "metric", "n_samples"]].values.tolist() == [
        ["en", "bpb", "bpb", 12],
        ["mr", "bpb", "bpb", 12],
    ]
    assert rows["name"].unique().tolist() == [str(tiny_model_dir.resolve())]
    assert rows["value"].tolist() == pytest.approx(table["bpb"].tolist(), rel=1e-12)
    # running again, on a model already loaded, replaces
    from xling.ingest.models import load_model

    again = bench_bpb(corpus_wh, BpbConfig(langs=["en"]), model=load_model(str(tiny_model_dir)))
    assert again["bpb"].tolist() == pytest.approx(table["bpb"].tolist()[:1], rel=1e-6)
    assert corpus_wh.scalar("SELECT count(*) FROM benchmarks") == 2


def test_groups_pick_the_same_content_in_every_language(corpus_wh, tiny):
    from xling.analysis.bpb import corpus_phrases

    first = corpus_wh.sql("SELECT DISTINCT group_id FROM phrases ORDER BY 1 LIMIT 3")["group_id"]
    phrases = corpus_phrases(corpus_wh, langs=["en", "ml"], groups=3)
    chosen = corpus_wh.sql(
        "SELECT lang, group_id FROM phrases WHERE phrase_id IN (SELECT unnest(?))",
        [phrases["phrase_id"].tolist()],
    )
    assert sorted(chosen["lang"]) == ["en"] * 3 + ["ml"] * 3
    assert set(chosen["group_id"]) == set(first)
    table = corpus_bpb(corpus_wh, *tiny, langs=["en", "ml"], groups=3)
    assert table["n_phrases"].tolist() == [3, 3]


def test_cli_bpb(corpus_wh, tiny_model_dir, cli, db_path):
    corpus_wh.close()
    result = cli(
        "bench",
        "bpb",
        "--model",
        tiny_model_dir,
        "--langs",
        "es,ca",
        "--device",
        "cpu",
        "--format",
        "csv",
        "--db",
        db_path,
    )
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("lang,bpb,") and [ln[:3] for ln in lines[1:]] == ["ca,", "es,"]


def test_bpb_input_errors(corpus_wh, tiny_model_dir):
    with pytest.raises(XlingError, match="unknown language 'xx'"):
        bench_bpb(corpus_wh, BpbConfig(model=str(tiny_model_dir), langs=["xx"], device="cpu"))
    with pytest.raises(XlingError, match="no finished run"):
        bench_bpb(corpus_wh, BpbConfig())
    assert corpus_wh.scalar("SELECT count(*) FROM benchmarks") == 0


def test_steering_and_adapter_are_measured(corpus_wh, tiny_model_dir, tmp_path):
    """bpb under a stored intervention and with a LoRA differs from the base model's and is
    stored apart: steer in benchmarks.steer, the adapter as its own models row."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from xling.finetune.config import ResidualSteerConfig
    from xling.finetune.steer import add_intervention
    from xling.ingest.runner import IngestConfig, run_ingest

    run = run_ingest(
        corpus_wh, IngestConfig(model=str(tiny_model_dir), residuals=True, device="cpu")
    )
    add_intervention(corpus_wh, "hi-to-en", ResidualSteerConfig(run=run, lang="hi", layer=1))
    lora_dir = tmp_path / "lora"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(lora_dir)

    cfg = {"model": str(tiny_model_dir), "langs": ["hi"], "device": "cpu"}
    plain = bench_bpb(corpus_wh, BpbConfig(**cfg))["bpb"].iloc[0]
    steered = bench_bpb(corpus_wh, BpbConfig(**cfg, steer="hi-to-en"))["bpb"].iloc[0]
    tuned = bench_bpb(corpus_wh, BpbConfig(**cfg, adapter=str(lora_dir)))["bpb"].iloc[0]
    assert abs(steered - plain) > 1e-4 and abs(tuned - plain) > 1e-4
    rows = corpus_wh.sql(
        "SELECT coalesce(m.adapter, '-'), coalesce(b.steer, '-'), b.value "
        "FROM benchmarks b JOIN models m USING (model_id)"
    )
    got = {(adapter, steer): value for adapter, steer, value in rows.itertuples(index=False)}
    lora_path = str(lora_dir.resolve())
    expected = {("-", "-"): plain, ("-", "hi-to-en"): steered, (lora_path, "-"): tuned}
    assert got == pytest.approx(expected, rel=1e-12)
