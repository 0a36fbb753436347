"""`xling bench import`: lm-eval results files and CSV into `benchmarks`.

The result files are written here in the shape lm-eval 0.4 writes (`results`, `groups`,
`group_subtasks`, `n-samples`, `n-shot`, `config.model_args`), with Okapi task names.
"""

from __future__ import annotations

import json
import math

import pytest

from xling.analysis.benchmarks import (
    benchmark_scores,
    import_files,
    model_of_lmeval,
    split_task_name,
)
from xling.warehouse import Warehouse, XlingError

MODEL = "google/gemma-2-2b"


def entry(name: str, acc: float, stderr: float | str, n: int, acc_norm: float | None = None):
    out = {"name": name, "alias": name, "sample_len": n, "acc,none": acc, "acc_stderr,none": stderr}
    if acc_norm is not None:
        out["acc_norm,none"] = acc_norm
        out["acc_norm_stderr,none"] = stderr
    return out


def results_doc(
    entries: dict,
    groups: dict | None = None,
    subtasks: dict | None = None,
    model_args: str = f"pretrained={MODEL},dtype=bfloat16",
) -> dict:
    leaves = [n for n in entries if n not in (subtasks or {})]
    return {
        "results": entries,
        **({"groups": groups} if groups else {}),
        "group_subtasks": subtasks or {},
        "configs": {},
        "versions": {n: 1.0 for n in entries},
        "n-shot": {n: 0 for n in entries},
        "higher_is_better": {n: {"acc": True} for n in entries},
        "n-samples": {
            n: {"original": entries[n]["sample_len"], "effective": entries[n]["sample_len"]}
            for n in leaves
        },
        "config": {"model": "hf", "model_args": model_args, "batch_size": 8, "limit": None},
        "model_name": MODEL,
        "date": 1767225600.0,
    }


OKAPI = results_doc(
    {
        "arc_hi": entry("arc_hi", 0.25, 0.0127, 1170, acc_norm=0.28),
        "arc_es": entry("arc_es", 0.41, 0.0144, 1170, acc_norm=0.44),
        "arc_challenge": entry("arc_challenge", 0.50, 0.0146, 1172, acc_norm=0.53),
        "arc_ar": entry("arc_ar", 0.27, 0.0130, 1170),  # a language xling does not know
        "arc_easy": entry("arc_easy", 0.80, 0.0082, 2376),  # no language in the name
        "hellaswag": entry("hellaswag", 0.55, 0.0050, 10042, acc_norm=0.73),
        "hellaswag_ml": entry("hellaswag_ml", 0.28, "N/A", 9535, acc_norm=0.30),
        "m_mmlu_en": entry("m_mmlu_en", 0.49, 0.0045, 13258),
        "m_mmlu_zh": entry("m_mmlu_zh", 0.38, 0.0043, 12000),
    }
)


def write(tmp_path, name: str, doc) -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc, encoding="utf-8")
    return str(path)


@pytest.fixture
def model_wh(wh):
    wh.con.execute("INSERT INTO models (name, n_layers, d_model) VALUES (?, 26, 2304)", [MODEL])
    return wh


def stored(wh: Warehouse) -> dict[tuple[str, str, str], tuple]:
    rows = wh.con.execute(
        "SELECT task, lang, metric, value, stderr, n_samples, num_fewshot FROM benchmarks"
    ).fetchall()
    return {(t, lang, m): tuple(rest) for t, lang, m, *rest in rows}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("arc_hi", ("arc", "hi")),
        ("m_mmlu_ml", ("mmlu", "ml")),
        ("hellaswag_es", ("hellaswag", "es")),
        ("arc_challenge", ("arc", "en")),
        ("hellaswag", ("hellaswag", "en")),
        ("xling_mc_zh", ("xling_mc", "zh")),
        ("arc_easy", None),
        ("mmlu_law", None),  # a subject, not a language
        ("xling_mc", None),
        ("arc_ar", ("arc", "ar")),  # a language, though not in this warehouse
        ("belebele_hin_Deva", None),
    ],
)
def test_split_task_name(name, expected):
    assert split_task_name(name, {"en", "hi", "ml", "es", "zh"}) == expected


def test_okapi_file_maps_tasks_and_languages(model_wh, tmp_path):
    report = import_files(model_wh, [write(tmp_path, "results.json", OKAPI)])
    rows = stored(model_wh)
    assert rows[("arc", "hi", "acc")] == (0.25, 0.0127, 1170, 0)
    assert rows[("arc", "hi", "acc_norm")][0] == 0.28
    assert rows[("arc", "en", "acc")][0] == 0.50  # arc_challenge is English
    assert rows[("hellaswag", "en", "acc_norm")][0] == 0.73
    assert rows[("hellaswag", "ml", "acc")][1] is None  # "N/A" stderr -> NULL
    assert rows[("mmlu", "zh", "acc")][0] == 0.38
    assert {(t, lang) for t, lang, _ in rows} == {
        ("arc", "hi"),
        ("arc", "es"),
        ("arc", "en"),
        ("hellaswag", "en"),
        ("hellaswag", "ml"),
        ("mmlu", "en"),
        ("mmlu", "zh"),
    }
    assert report.rows == len(rows) == 12
    assert set(report.skipped) == {"results.json: arc_ar", "results.json: arc_easy"}
    assert "'ar'" in report.skipped["results.json: arc_ar"]
    assert report.models == [MODEL]


def test_reimport_replaces_instead_of_duplicating(model_wh, tmp_path):
    path = write(tmp_path, "results.json", OKAPI)
    import_files(model_wh, [path])
    again = import_files(model_wh, [path])
    assert again.replaced == again.rows == 12
    assert model_wh.scalar("SELECT count(*) FROM benchmarks") == 12
    changed = json.loads(json.dumps(OKAPI))
    changed["results"]["arc_hi"]["acc,none"] = 0.3
    import_files(model_wh, [write(tmp_path, "rerun.json", changed)])
    assert model_wh.scalar("SELECT count(*) FROM benchmarks") == 12
    assert stored(model_wh)[("arc", "hi", "acc")][0] == 0.3


def test_group_without_own_scores_is_folded_like_lm_eval(model_wh, tmp_path):
    from lm_eval.api.metrics import aggregate_subtask_metrics, pooled_sample_stderr

    parts = {
        "m_mmlu_hi_stem": (0.30, 0.020, 400),
        "m_mmlu_hi_humanities": (0.40, 0.015, 900),
        "m_mmlu_hi_other": (0.35, 0.030, 250),
    }
    entries = {n: entry(n, a, s, k) for n, (a, s, k) in parts.items()}
    entries["m_mmlu_hi"] = {"name": "m_mmlu_hi", "alias": "m_mmlu_hi"}  # group, no metrics
    doc = results_doc(entries, subtasks={"m_mmlu_hi": list(parts)})
    import_files(model_wh, [write(tmp_path, "mmlu.json", doc)])
    value, stderr, n, _ = stored(model_wh)[("mmlu", "hi", "acc")]
    accs, ses, sizes = zip(*parts.values(), strict=True)
    assert value == pytest.approx(aggregate_subtask_metrics(list(accs), list(sizes)), rel=1e-12)
    assert stderr == pytest.approx(float(pooled_sample_stderr(list(ses), list(sizes))), rel=1e-12)
    assert n == sum(sizes)
    assert model_wh.scalar("SELECT count(*) FROM benchmarks") == 1  # subtasks not stored


def test_group_own_scores_win_and_language_free_groups_are_opened(model_wh, tmp_path):
    entries = {
        "m_mmlu_es_a": entry("m_mmlu_es_a", 0.2, 0.01, 100),
        "m_mmlu_es_b": entry("m_mmlu_es_b", 0.6, 0.01, 100),
        "m_mmlu_es": entry("m_mmlu_es", 0.45, 0.02, 200),  # lm-eval's own aggregate
        "xling_mc_en": entry("xling_mc_en", 0.75, 0.13, 12),
        "xling_mc_hi": entry("xling_mc_hi", 0.5, "N/A", 12),
        "xling_mc": entry("xling_mc", 0.625, "N/A", 24),  # across languages: not stored
        "arc_multilingual": {"alias": "arc_multilingual"},
        "arc_ar": entry("arc_ar", 0.2, 0.01, 10),
        "arc_bn": entry("arc_bn", 0.2, 0.01, 10),
    }
    subtasks = {
        "m_mmlu_es": ["m_mmlu_es_a", "m_mmlu_es_b"],
        "xling_mc": ["xling_mc_en", "xling_mc_hi"],
        "arc_multilingual": ["arc_ar", "arc_bn"],
    }
    groups = {k: entries[k] for k in ("m_mmlu_es", "xling_mc")}
    doc = results_doc(entries, groups=groups, subtasks=subtasks)
    report = import_files(model_wh, [write(tmp_path, "g.json", doc)])
    rows = stored(model_wh)
    assert rows[("mmlu", "es", "acc")][:3] == (0.45, 0.02, 200)
    assert rows[("xling_mc", "en", "acc")][0] == 0.75
    assert rows[("xling_mc", "hi", "acc")][:2] == (0.5, None)
    assert {lang for _, lang, _ in rows} == {"es", "en", "hi"}
    # a group whose members were all skipped is reported once, by its own name
    assert set(report.skipped) == {"g.json: arc_multilingual"}


def test_nan_score_is_rejected_and_the_warehouse_unchanged(model_wh, tmp_path, cli, db_path):
    good = write(tmp_path, "good.json", OKAPI)
    import_files(model_wh, [good])
    before = model_wh.sql("SELECT * FROM benchmarks ORDER BY ALL")
    bad = json.loads(json.dumps(OKAPI))
    bad["results"]["arc_es"]["acc,none"] = math.nan
    bad["results"]["arc_hi"]["acc,none"] = 0.99
    bad_path = write(tmp_path, "bad.json", json.dumps(bad))
    assert "NaN" in (tmp_path / "bad.json").read_text()
    with pytest.raises(XlingError, match="arc_es acc is nan"):
        import_files(model_wh, [bad_path])
    model_wh.close()
    # the CLI: one line, exit 1; a good file listed first is not imported either
    other = json.loads(json.dumps(OKAPI))
    other["results"]["arc_hi"]["acc,none"] = 0.77
    result = cli("bench", "import", write(tmp_path, "o.json", other), bad_path, "--db", db_path)
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: ")
    with Warehouse(db_path, read_only=True) as w:
        assert w.sql("SELECT * FROM benchmarks ORDER BY ALL").equals(before)


def test_cli_import_reports_skipped_tasks(model_wh, tmp_path, cli, db_path):
    model_wh.close()
    result = cli("bench", "import", write(tmp_path, "r.json", OKAPI), "--db", db_path)
    assert result.exit_code == 0, result.stderr
    assert "imported 12 scores" in result.stdout
    assert "Warning: skipped 2" in result.stderr and "arc_ar" in result.stderr
    listed = cli("bench", "list", "--task", "arc", "--format", "csv", "--db", db_path)
    assert listed.exit_code == 0
    assert listed.stdout.count("\n") == 1 + 6  # header + arc acc/acc_norm in en, es, hi


def test_model_is_found_by_name_adapter_or_override(model_wh, tmp_path):
    with pytest.raises(XlingError, match="no model 'other/model'"):
        import_files(
            model_wh,
            [
                write(
                    tmp_path,
                    "a.json",
                    results_doc(
                        {"arc_hi": entry("arc_hi", 0.3, 0.01, 10)},
                        model_args="pretrained=other/model",
                    ),
                )
            ],
        )
    model_wh.con.execute(
        "INSERT INTO models (name, adapter, n_layers, d_model) VALUES (?, '/ad/hi', 26, 2304)",
        [MODEL],
    )
    tuned = results_doc(
        {"arc_hi": entry("arc_hi", 0.4, 0.01, 10)}, model_args=f"pretrained={MODEL},peft=/ad/hi"
    )
    assert model_of_lmeval(tuned) == (MODEL, "/ad/hi")
    import_files(model_wh, [write(tmp_path, "t.json", tuned)])
    assert model_wh.scalar("SELECT model_id FROM benchmarks") == 2
    import_files(
        model_wh,
        [
            write(
                tmp_path,
                "a.json",
                results_doc(
                    {"arc_hi": entry("arc_hi", 0.3, 0.01, 10)}, model_args="pretrained=other/model"
                ),
            )
        ],
        model="1",
    )
    assert model_wh.sql("SELECT model_id, value FROM benchmarks ORDER BY 1").values.tolist() == [
        [1, 0.3],
        [2, 0.4],
    ]
    with pytest.raises(XlingError, match="does not name its model"):
        doc = results_doc({"arc_hi": entry("arc_hi", 0.3, 0.01, 10)}, model_args="")
        del doc["model_name"]
        import_files(model_wh, [write(tmp_path, "n.json", doc)])


def test_csv_import(model_wh, tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text(
        "model,task,lang,metric,value,stderr,n\n"
        f"{MODEL},belebele,hi,acc,0.31,0.015,900\n"
        f"{MODEL},belebele,en,acc,0.52,,900\n"
        f"{MODEL},belebele,sw,acc,0.25,,900\n",
        encoding="utf-8",
    )
    report = import_files(model_wh, [path])
    assert stored(model_wh) == {
        ("belebele", "hi", "acc"): (0.31, 0.015, 900, None),
        ("belebele", "en", "acc"): (0.52, None, 900, None),
    }
    assert list(report.skipped) == ["scores.csv: belebele/sw (line 4)"]
    nomodel = tmp_path / "nomodel.csv"
    nomodel.write_text("task,lang,metric,value\nflores,es,chrf,51.2\n", encoding="utf-8")
    import_files(model_wh, [nomodel], model=MODEL)
    assert stored(model_wh)[("flores", "es", "chrf")][0] == 51.2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model,task,lang,metric,value\nm,arc,hi,acc,nan\n", r"scores.csv:2: value 'nan'"),
        ("model,task,lang,metric,value\nm,arc,hi,acc,high\n", r"scores.csv:2: value 'high'"),
        ("model,task,lang,metric,score\nm,arc,hi,acc,0.1\n", "unknown column 'score'"),
        ("task,lang,metric,value\narc,hi,acc,0.1\n", "no 'model' column"),
    ],
)
def test_bad_csv_is_rejected(model_wh, tmp_path, text, message):
    path = tmp_path / "scores.csv"
    path.write_text(text.replace("m,", f"{MODEL},"), encoding="utf-8")
    with pytest.raises(XlingError, match=message):
        import_files(model_wh, [path])
    assert model_wh.scalar("SELECT count(*) FROM benchmarks") == 0


def test_not_a_results_file(model_wh, tmp_path):
    with pytest.raises(XlingError, match="not valid JSON"):
        import_files(model_wh, [write(tmp_path, "x.json", "{oops")])
    with pytest.raises(XlingError, match="no 'results' object"):
        import_files(model_wh, [write(tmp_path, "s.json", {"doc_id": 0})])


def test_benchmark_scores_filters(model_wh, tmp_path):
    import_files(model_wh, [write(tmp_path, "r.json", OKAPI)])
    df = benchmark_scores(model_wh, model=MODEL, task="mmlu", metric="acc")
    assert df[["lang", "value"]].values.tolist() == [["en", 0.49], ["zh", 0.38]]
    assert df["model"].unique().tolist() == [MODEL]
    assert benchmark_scores(model_wh, model="9").empty
