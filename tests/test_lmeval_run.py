"""`xling bench run`: lm-eval in-process on the tiny model with xling's offline task."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xling.analysis.lmeval_run import BenchRunConfig, bench_run, evaluate, local_tasks_dir
from xling.warehouse import XlingError

LANGS = ("en", "es", "hi", "ml")


def direct_accuracy(model, tokenizer, lang: str, limit: int) -> tuple[float, float]:
    """acc and acc_norm of the first `limit` xling_mc items, computed here: the summed
    log-probability of " " + choice after "Question: …\\nAnswer:", the continuation's tokens
    being those the whole string adds to the context's (as lm-eval tokenizes a pair)."""
    import torch

    path = local_tasks_dir() / "xling_mc" / f"xling_mc_{lang}.jsonl"
    docs = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()][:limit]
    acc = acc_norm = 0
    for doc in docs:
        context = f"Question: {doc['question']}\nAnswer:"
        ctx = tokenizer(context)["input_ids"]
        lls = []
        for choice in doc["choices"]:
            whole = tokenizer(context + " " + choice)["input_ids"]
            with torch.no_grad():
                logp = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
            lls.append(sum(logp[i - 1, whole[i]].item() for i in range(len(ctx), len(whole))))
        lls = np.array(lls)
        acc += int(np.argmax(lls) == doc["answer"])
        lengths = np.array([len(c) for c in doc["choices"]], dtype=float)
        acc_norm += int(np.argmax(lls / lengths) == doc["answer"])
    return acc / len(docs), acc_norm / len(docs)


def test_bench_run_stores_per_language_accuracy(corpus_wh, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "results.json"
    cfg = BenchRunConfig(
        model=str(tiny_model_dir),
        tasks=[f"xling_mc_{lang}" for lang in LANGS],
        limit=6,
        device="cpu",
        out=str(out),
    )
    result = bench_run(corpus_wh, cfg)
    rows = corpus_wh.sql(
        "SELECT lang, metric, value, n_samples, num_fewshot, steer, m.name FROM benchmarks "
        "JOIN models m USING (model_id) WHERE task = 'xling_mc' ORDER BY lang, metric"
    )
    assert rows["lang"].tolist() == sorted([lang for lang in LANGS for _ in range(2)])
    assert set(rows["n_samples"]) == {6} and set(rows["num_fewshot"]) == {0}
    assert rows["steer"].isna().all()
    assert rows["name"].unique().tolist() == [str(tiny_model_dir.resolve())]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    for lang in LANGS:
        got = rows[rows["lang"] == lang].set_index("metric")["value"]
        acc, acc_norm = direct_accuracy(model, tokenizer, lang, 6)
        assert got["acc"] == pytest.approx(acc) and got["acc_norm"] == pytest.approx(acc_norm)
    assert result.seconds > 0 and len(result.table) == 8

    # the results file names the model, so importing it back replaces the same rows
    from xling.analysis.benchmarks import import_files

    before = corpus_wh.sql(
        "SELECT model_id, task, lang, metric, value FROM benchmarks ORDER BY ALL"
    )
    report = import_files(corpus_wh, [out])
    assert report.replaced == report.rows == 8
    after = corpus_wh.sql("SELECT model_id, task, lang, metric, value FROM benchmarks ORDER BY ALL")
    assert after.equals(before)


def test_group_run_covers_every_language(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    results = evaluate(model, tokenizer, ["xling_mc"], limit=1)
    assert results["group_subtasks"]["xling_mc"] == [
        f"xling_mc_{lang}" for lang in ("en", "zh", "ru", "es", "it", "id", "ca", "mr", "ml", "hi")
    ]
    assert {n["effective"] for n in results["n-samples"].values()} == {1}


def test_cli_bench_run(corpus_wh, tiny_model_dir, cli, db_path):
    corpus_wh.close()
    result = cli(
        "bench",
        "run",
        "--model",
        tiny_model_dir,
        "--tasks",
        "xling_mc_ca,xling_mc_mr",
        "--limit",
        "2",
        "--device",
        "cpu",
        "--format",
        "csv",
        "--db",
        db_path,
    )
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "task,lang,metric,value,stderr,n_samples"
    assert [ln.split(",")[:3] for ln in lines[1:]] == [
        ["xling_mc", "ca", "acc"],
        ["xling_mc", "ca", "acc_norm"],
        ["xling_mc", "mr", "acc"],
        ["xling_mc", "mr", "acc_norm"],
    ]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"tasks": []}, "no task given"),
        ({"limit": 0}, "--limit must be a positive number"),
        ({"limit": 2.5}, "a count must be whole"),
        ({"include_path": ["/nonexistent"]}, "not a directory"),
    ],
)
def test_bad_run_config(kwargs, message):
    with pytest.raises(XlingError, match=message):
        BenchRunConfig(**{"model": "m", "tasks": ["xling_mc"], **kwargs})


def test_unknown_task_fails_before_the_model_loads(corpus_wh, tmp_path):
    missing_model = str(tmp_path / "not-a-model")
    with pytest.raises(XlingError, match="lm-eval knows no task 'xling_nope'"):
        bench_run(corpus_wh, BenchRunConfig(model=missing_model, tasks=["xling_nope"]))
    assert corpus_wh.scalar("SELECT count(*) FROM benchmarks") == 0
    assert corpus_wh.scalar("SELECT count(*) FROM models") == 0
