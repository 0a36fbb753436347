"""`finetune round` end to end on the tiny model: split, artifact, tuned run, links, compare on
the held-apart groups and capability — each number checked against numpy over raw rows."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

LAYERS = [1, 2]
K = 16


@pytest.fixture
def base_run(corpus_wh, tiny_model_dir, tiny_sae_dirs):
    """A finished ingest of the 12-group corpus at layers 1 and 2, with neurons and residuals."""
    from xling.ingest.runner import IngestConfig, run_ingest

    cfg = IngestConfig(
        model=str(tiny_model_dir),
        sae_dir=str(tiny_sae_dirs[1].parent),
        layers=LAYERS,
        neurons=True,
        residuals=True,
    )
    return run_ingest(corpus_wh, cfg)


def _align_round(wh, base_run, tmp_path, **kw):
    from xling.pipeline.round import RoundConfig, run_round

    cfg = RoundConfig(
        base_run=base_run,
        method="align",
        langs=["ml"],
        target_layer=2,
        out=str(tmp_path / "lora"),
        steps=15,
        lr=1e-2,
        eval_frac=0.25,
        **kw,
    )
    return run_round(wh, cfg)


def _topk_scores(wh, base, tuned, layer, groups) -> dict[str, float]:
    """english-topk A(L, l) of `tuned` on `base`'s top-k English features, over `groups` only:
    mean over (group, feature) pairs of the phrase's act_max (absent = 0)."""
    rows = wh.sql(
        "SELECT f.run_id, p.group_id, p.lang, f.feature, f.act_max FROM feature_acts f "
        "JOIN phrases p USING (phrase_id) WHERE f.layer = ? AND f.run_id IN (?, ?)",
        [layer, base, tuned],
    )
    acts = {(r.run_id, r.group_id, r.lang, r.feature): r.act_max for r in rows.itertuples()}
    langs = sorted(set(rows["lang"]))
    out = {}
    for lang in langs:
        total, n = 0.0, 0
        for g in groups:
            en = sorted(
                (
                    (a, -f)
                    for (run, gg, ll, f), a in acts.items()
                    if run == base and gg == g and ll == "en"
                ),
                reverse=True,
            )[:K]
            for _, neg_f in en:
                total += acts.get((tuned, g, lang, -neg_f), 0.0)
                n += 1
        out[lang] = total / n
    return out


def test_align_round_links_splits_and_compares_on_held_apart_groups(corpus_wh, base_run, tmp_path):
    wh = corpus_wh
    r = _align_round(wh, base_run, tmp_path)

    # The tuned run is the newest run, made with the adapter, linked to its base run.
    assert r.tuned_run == wh.scalar("SELECT max(run_id) FROM runs")
    tuned = wh.run(r.tuned_run)
    assert tuned["adapter"] == r.artifact == str((tmp_path / "lora").resolve())
    assert sorted(tuned["config"]["layers"]) == LAYERS
    link = wh.sql("SELECT * FROM rounds WHERE tuned_run = ?", [r.tuned_run]).iloc[0]
    assert (link.base_run, link.split_id, link.method) == (base_run, r.split_id, "align")
    assert (
        wh.scalar("SELECT adapter FROM finetunes WHERE finetune_id = ?", [int(link.finetune_id)])
        == r.artifact
    )

    # The split: a partition of the 12 aligned groups, 3 held apart (0.25), recorded.
    parts = wh.sql("SELECT group_id, part FROM split_groups WHERE split_id = ?", [r.split_id])
    assert len(parts) == 12 and parts.group_id.is_unique
    assert (parts.part == "eval").sum() == 3
    eval_groups = sorted(parts.group_id[parts.part == "eval"])

    # Training saw only train groups.
    from xling.finetune.align import aligned_pairs
    from xling.finetune.common import split_groups

    train = split_groups(wh, r.split_id, "train")
    pairs = aligned_pairs(wh, base_run, 2, ["ml"], "max", 128, train)
    assert len(pairs) == 9
    en_groups = set(
        wh.sql(
            "SELECT group_id FROM phrases WHERE text IN ? AND lang = 'en'", [pairs.en_text]
        ).group_id
    )
    assert en_groups.isdisjoint(eval_groups)

    # compare on the held-apart groups = numpy over the raw rows of those groups.
    for layer in LAYERS:
        table = r.compare[r.compare.layer == layer].set_index("lang")
        assert (table.split_id == r.split_id).all()
        base = _topk_scores(wh, base_run, base_run, layer, eval_groups)
        after = _topk_scores(wh, base_run, r.tuned_run, layer, eval_groups)
        for lang, b in base.items():
            np.testing.assert_allclose(table.loc[lang, "base_score"], b, rtol=1e-5)
            np.testing.assert_allclose(table.loc[lang, "tuned_score"], after[lang], rtol=1e-5)
            np.testing.assert_allclose(
                table.loc[lang, "improvement_pct"], 100 * (after[lang] - b) / b, rtol=1e-4
            )
        np.testing.assert_allclose(
            table.loc["ml", "en_retention_pct"], 100 * after["en"] / base["en"], rtol=1e-4
        )
    # The target layer's effect comes with bootstrap intervals around the same numbers.
    target = r.target.set_index("lang")
    at = r.compare[r.compare.layer == 2].set_index("lang")
    np.testing.assert_allclose(target.improvement_pct, at.loc[target.index, "improvement_pct"])
    shown = target.dropna(subset=["improvement_pct"])
    assert (shown.improvement_pct_lo <= shown.improvement_pct + 1e-9).all()
    assert (shown.improvement_pct <= shown.improvement_pct_hi + 1e-9).all()
    assert (target.en_retention_pct_lo <= target.en_retention_pct + 1e-9).all()
    assert (target.en_retention_pct <= target.en_retention_pct_hi + 1e-9).all()
    # All groups on request differ from the held-apart default.
    every = wh.sql(
        "SELECT * FROM compare_runs(?, ?, groups := 'all') WHERE layer = 2 AND lang = 'ml'",
        [base_run, r.tuned_run],
    )
    assert every.split_id.isna().all()
    assert every.base_score.iloc[0] != pytest.approx(
        r.compare.set_index(["layer", "lang"]).loc[(2, "ml"), "base_score"]
    )


def test_capability_is_the_nll_of_the_held_apart_phrases(corpus_wh, base_run, tmp_path):
    from xling.analysis.bpb import phrase_nll
    from xling.ingest.models import load_model

    wh = corpus_wh
    r = _align_round(wh, base_run, tmp_path)
    nll = wh.sql(
        "SELECT n.model, n.phrase_id, n.nll, n.n_tokens, p.group_id, p.lang, p.text FROM round_nll n "
        "JOIN phrases p USING (phrase_id) WHERE round_id = ?",
        [r.round_id],
    )
    eval_groups = set(
        wh.sql(
            "SELECT group_id FROM split_groups WHERE split_id = ? AND part = 'eval'", [r.split_id]
        ).group_id
    )
    assert set(nll.group_id) == eval_groups and len(nll) == 2 * 3 * 10

    # The tuned NLLs are those of a fresh load with the saved adapter.
    from xling.finetune.apply import apply_adapter

    tuned = nll[nll.model == "tuned"].sort_values("phrase_id")
    lm = apply_adapter(load_model(wh.run(base_run)["config"]["model"]), r.artifact)
    again, n_tok = phrase_nll(lm.model, lm.tokenizer, tuned.text.tolist())
    np.testing.assert_allclose(tuned.nll, again, rtol=1e-4)
    np.testing.assert_array_equal(tuned.n_tokens, n_tok)

    cap = r.capability.set_index("lang")
    for lang in ("ml", "hi", "en"):
        for model in ("base", "tuned"):
            sel = nll[nll.model == model]
            mine = sel[sel.lang == lang]
            np.testing.assert_allclose(
                cap.loc[lang, f"nll_{model}"], mine.nll.sum() / mine.n_tokens.sum()
            )
            en = sel[sel.lang == "en"].set_index("group_id").nll
            ratios = [en[g] / v for g, v in zip(mine.group_id, mine.nll, strict=True)]
            np.testing.assert_allclose(cap.loc[lang, f"parity_{model}"], np.mean(ratios))
    np.testing.assert_allclose(cap.loc["en", "parity_base"], 1.0)


def test_split_is_reused_and_seeded(corpus_wh, base_run):
    from xling.pipeline.round import get_split

    a = get_split(corpus_wh, base_run, 0.25, 0)
    assert get_split(corpus_wh, base_run, 0.25, 0) == a
    b = get_split(corpus_wh, base_run, 0.25, 1)
    groups = "SELECT list(group_id ORDER BY group_id) FROM split_groups WHERE split_id = ? AND part = 'eval'"
    assert b != a and corpus_wh.scalar(groups, [a]) != corpus_wh.scalar(groups, [b])


def test_subnetwork_and_steer_rounds(corpus_wh, base_run, tmp_path):
    from xling.pipeline.round import RoundConfig, run_round

    wh = corpus_wh
    sub = run_round(
        wh,
        RoundConfig(
            base_run=base_run,
            method="subnetwork",
            langs=["ml"],
            out=str(tmp_path / "d.safetensors"),
            steps=10,
            lr=1e-2,
            top_rate=0.05,
        ),
    )
    cap = sub.capability.set_index("lang")
    # Only ml's neurons trained on ml's text: ml's NLL falls.
    assert cap.loc["ml", "nll_tuned"] < cap.loc["ml", "nll_base"]
    assert wh.run(sub.tuned_run)["adapter"] == sub.artifact

    steer = run_round(
        wh,
        RoundConfig(base_run=base_run, method="steer", langs=["ml"], target_layer=1, alpha=1.0),
    )
    assert steer.tuned_run == wh.scalar("SELECT max(run_id) FROM runs")
    assert wh.run(steer.tuned_run)["config"]["steer"] == steer.artifact
    link = wh.sql("SELECT * FROM rounds WHERE tuned_run = ?", [steer.tuned_run]).iloc[0]
    assert link.intervention == steer.artifact and link.split_id == sub.split_id  # reused
    # The residual edit is at block 1: layer 1's activations change.
    assert steer.compare[steer.compare.layer == 1].improvement_pct.abs().max() > 0


def test_round_cli_and_query_compare_csv(corpus_wh, base_run, db_path, cli, tmp_path):
    corpus_wh.close()
    r = cli(
        "finetune",
        "round",
        "--run",
        base_run,
        "--method",
        "align",
        "--langs",
        "ml",
        "--target-layer",
        2,
        "--steps",
        5,
        "--lr",
        "1e-2",
        "--out",
        tmp_path / "lora",
        "--db",
        db_path,
    )
    assert r.exit_code == 0, r.stderr
    assert "English retention" in r.stdout and "capability" in r.stdout
    r = cli(
        "query",
        "compare",
        "--base",
        base_run,
        "--tuned",
        base_run + 1,
        "--layer",
        2,
        "--format",
        "csv",
        "--db",
        db_path,
    )
    assert r.exit_code == 0, r.stderr
    rows = list(csv.DictReader(io.StringIO(r.stdout)))
    assert {"lang", "improvement_pct", "en_retention_pct"} <= set(rows[0])
    assert {row["split_id"] for row in rows} == {"1"}

    # Bad input: one Error line, exit 1, nothing written.
    from xling.warehouse import Warehouse

    r = cli("finetune", "round", "--run", base_run, "--method", "nope", "--db", db_path)
    assert r.exit_code == 1 and r.stderr.startswith("Error: method must be one of")
    r = cli(
        "finetune",
        "round",
        "--run",
        base_run,
        "--method",
        "subnetwork",
        "--langs",
        "ml,hi",
        "--db",
        db_path,
    )
    assert r.exit_code == 1 and "exactly one" in r.stderr
    with Warehouse(db_path, read_only=True) as wh:
        assert wh.scalar("SELECT count(*) FROM runs") == 2
        assert wh.scalar("SELECT count(*) FROM rounds") == 1
