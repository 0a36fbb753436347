"""Ingest on the tiny model: pooled rows against an independent per-phrase numpy computation,
layer semantics, resume, refusals, neurons, NaN, feature modes, shards, the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from xling.ingest.models import load_model
from xling.ingest.runner import IngestConfig, resume_ingest, run_ingest
from xling.warehouse import Warehouse
from xling.warehouse.errors import XlingError

LAYERS = [0, 1, 2, 3]


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    return load_model(str(tiny_model_dir))


@pytest.fixture(scope="module")
def saes(tiny_sae_dirs):
    from sae_lens import SAE

    return {layer: SAE.load_from_disk(str(p)) for layer, p in tiny_sae_dirs.items()}


def config(tiny_model_dir, tiny_sae_dirs, **kw) -> IngestConfig:
    kw.setdefault("sae_dir", str(tiny_sae_dirs[0].parent))
    return IngestConfig(model=str(tiny_model_dir), **kw)


def direct_hidden(lm, text: str) -> tuple[list[int], dict[int, np.ndarray]]:
    """One phrase alone (no padding): token ids and resid_post per layer, read independently
    of xling's hooks: HF hidden_states[L+1] for L < last, a plain hook on the last block."""
    ids = lm.tokenizer(text)["input_ids"]
    blocks = lm.model.model.layers
    seen = {}
    handle = blocks[-1].register_forward_hook(lambda _m, _i, out: seen.update(last=out))
    with torch.no_grad():
        out = lm.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    handle.remove()
    last = seen["last"][0] if isinstance(seen["last"], tuple) else seen["last"]
    hs = {layer: out.hidden_states[layer + 1][0].numpy() for layer in range(len(blocks) - 1)}
    hs[len(blocks) - 1] = last[0].numpy()
    return ids, hs


def np_encode(sae, x: np.ndarray) -> np.ndarray:
    """sae-lens Standard/JumpReLU encode written out in numpy."""
    p = {k: v.detach().numpy() for k, v in sae.state_dict().items()}
    pre = (x - p["b_dec"]) @ p["W_enc"] + p["b_enc"]
    acts = np.maximum(pre, 0)
    if "threshold" in p:
        acts = acts * (pre > p["threshold"])
    return acts


def dense(wh, run_id, phrase_id, layer, d_sae):
    rows = wh.sql(
        "SELECT feature, act_mean, act_max, n_active FROM feature_acts "
        "WHERE run_id = ? AND phrase_id = ? AND layer = ?",
        [run_id, phrase_id, layer],
    )
    out = np.zeros((3, d_sae))
    out[:, rows.feature.to_numpy()] = rows[["act_mean", "act_max", "n_active"]].to_numpy().T
    return out


def table_rows(wh, table, run_id, cols):
    return wh.sql(
        f"SELECT {cols} FROM {table} WHERE run_id = ? ORDER BY ALL", [run_id]
    ).reset_index(drop=True)


def test_layer_is_block_output(lm):
    from xling.ingest.hooks import capture_blocks, forward_blocks

    enc = lm.tokenizer(["Japan", "जापान"], padding=True, return_tensors="pt")
    with capture_blocks(lm.model, LAYERS) as got:
        forward_blocks(lm.model, enc["input_ids"], enc["attention_mask"])
    with torch.no_grad():
        hs = lm.model(**enc, output_hidden_states=True).hidden_states
    for layer in LAYERS[:-1]:
        torch.testing.assert_close(got[layer], hs[layer + 1])
    # HF's last entry is after the final norm; the block output is before it.
    assert not torch.allclose(got[3], hs[4], atol=1e-3)
    torch.testing.assert_close(lm.model.model.norm(got[3]), hs[4])


def test_stop_after_last_needed_block(lm):
    from xling.ingest.hooks import capture_blocks, forward_blocks

    enc = lm.tokenizer(["Japan"], return_tensors="pt")
    calls = []
    h = lm.model.model.layers[2].register_forward_hook(lambda *_: calls.append(2))
    with capture_blocks(lm.model, [1]) as got:
        forward_blocks(lm.model, enc["input_ids"], enc["attention_mask"], last_layer=1)
    h.remove()
    assert calls == [] and got[1].shape == (1, enc["input_ids"].shape[1], 64)


def test_pooled_rows_equal_unbatched_numpy(corpus_wh, lm, saes, tiny_model_dir, tiny_sae_dirs):
    wh = corpus_wh
    # batch 7: batches mix lengths, so padding is present in most of them.
    run = run_ingest(
        wh, config(tiny_model_dir, tiny_sae_dirs, residuals=True, batch_size=7), model=lm
    )
    phrases = wh.sql("SELECT phrase_id, text FROM phrases ORDER BY phrase_id")
    tokens = dict(
        wh.con.execute(
            "SELECT phrase_id, n_tokens FROM phrase_tokens WHERE run_id = ?", [run]
        ).fetchall()
    )
    resid = {
        (p, layer): np.asarray(v)
        for p, layer, v in wh.con.execute(
            "SELECT phrase_id, layer, vec FROM residuals WHERE run_id = ?", [run]
        ).fetchall()
    }
    for pid, text in phrases.itertuples(index=False):
        ids, hs = direct_hidden(lm, text)
        assert ids[0] == lm.tokenizer.bos_token_id
        assert tokens[pid] == len(ids) - 1
        for layer in LAYERS:
            x = hs[layer][1:]  # BOS excluded
            np.testing.assert_allclose(resid[pid, layer], x.mean(0), rtol=1e-4, atol=1e-4)
            acts = np_encode(saes[layer], x)
            want = np.stack([acts.mean(0), acts.max(0), (acts > 0).sum(0)])
            got = dense(wh, run, pid, layer, acts.shape[1])
            np.testing.assert_allclose(
                got, want, rtol=1e-4, atol=1e-4, err_msg=f"phrase {pid} layer {layer}"
            )
    assert wh.scalar("SELECT status FROM runs WHERE run_id = ?", [run]) == "finished"
    n_rows = wh.scalar("SELECT count(*) FROM feature_acts WHERE run_id = ?", [run])
    assert wh.scalar("SELECT n_rows FROM runs WHERE run_id = ?", [run]) == n_rows > 0


def test_include_bos_pools_bos(corpus_wh, lm, tiny_model_dir, tiny_sae_dirs):
    run = run_ingest(
        corpus_wh,
        config(
            tiny_model_dir, tiny_sae_dirs, residuals=True, include_bos=True, limit=5, layers=[2]
        ),
        model=lm,
    )
    text = corpus_wh.scalar("SELECT text FROM phrases WHERE phrase_id = 3")
    _, hs = direct_hidden(lm, text)
    vec = corpus_wh.scalar(
        "SELECT vec FROM residuals WHERE run_id = ? AND phrase_id = 3 AND layer = 2", [run]
    )
    np.testing.assert_allclose(vec, hs[2].mean(0), rtol=1e-4, atol=1e-4)
    assert corpus_wh.run(run)["config"]["pooling"]["bos"] == "included"


def test_neurons_equal_direct_count(corpus_wh, lm, tiny_model_dir, tiny_sae_dirs):
    wh = corpus_wh
    run = run_ingest(
        wh,
        config(tiny_model_dir, tiny_sae_dirs, neurons=True, batch_size=9, chunk_rows=300),
        model=lm,
    )
    assert wh.scalar("SELECT count(*) FROM run_chunks WHERE run_id = ?", [run]) > 1
    # Expected: act_fn(gate_proj(x)) from each block's MLP input, phrase by phrase.
    mlp_in = {}
    hooks = [
        blk.mlp.register_forward_pre_hook(lambda _m, a, layer=i: mlp_in.update({layer: a[0]}))
        for i, blk in enumerate(lm.model.model.layers)
    ]
    want_pos = {}
    want_sum = {}
    want_tok = {}
    for _pid, lang, text in wh.sql("SELECT phrase_id, lang, text FROM phrases").itertuples(
        index=False
    ):
        ids = lm.tokenizer(text)["input_ids"]
        with torch.no_grad():
            lm.model(input_ids=torch.tensor([ids]))
        for layer in LAYERS:
            mlp = lm.model.model.layers[layer].mlp
            a = (
                torch.nn.functional.gelu(
                    mlp_in[layer][0, 1:] @ mlp.gate_proj.weight.T, approximate="tanh"
                )
                .detach()
                .numpy()
            )
            key = (lang, layer)
            want_pos[key] = want_pos.get(key, 0) + (a > 0).sum(0)
            want_sum[key] = want_sum.get(key, 0) + a.sum(0)
            want_tok[key] = want_tok.get(key, 0) + a.shape[0]
    for h in hooks:
        h.remove()
    got = wh.sql("SELECT * FROM neuron_stats WHERE run_id = ? ORDER BY lang, layer, neuron", [run])
    assert len(got) == len(want_pos) * 128  # one row per (lang, layer, neuron) after finishing
    for (lang, layer), g in got.groupby(["lang", "layer"]):
        np.testing.assert_array_equal(g.n_positive.to_numpy(), want_pos[lang, layer])
        np.testing.assert_allclose(
            g.act_sum.to_numpy(), want_sum[lang, layer], rtol=1e-4, atol=1e-4
        )
        assert (g.n_tokens == want_tok[lang, layer]).all()


class Interrupt(Exception):
    pass


def test_resume_after_interrupt_equals_uninterrupted(tmp_path, lm, tiny_model_dir, tiny_sae_dirs):
    from tinymodel import cldr_phrases, insert_phrases

    def fresh(name):
        w = Warehouse(tmp_path / name)
        insert_phrases(w, cldr_phrases(12))
        return w

    cfg = config(
        tiny_model_dir, tiny_sae_dirs, residuals=True, neurons=True, batch_size=8, chunk_rows=1500
    )
    full = fresh("full.duckdb")
    full_run = run_ingest(full, cfg, model=lm)

    def stop_after_two(p):
        if p.chunks >= 2:
            raise Interrupt

    part = fresh("part.duckdb")
    with pytest.raises(Interrupt):
        run_ingest(part, cfg, stop_after_two, model=lm)
    assert part.scalar("SELECT status FROM runs") == "failed"
    done = part.scalar("SELECT count(*) FROM phrase_tokens")
    assert 0 < done < 120
    resume_ingest(part, 1, model=lm)
    assert part.scalar("SELECT status FROM runs") == "finished"
    _assert_same_rows(full, full_run, part, 1)


def _assert_same_rows(a, run_a, b, run_b):
    for table, cols in (
        ("phrase_tokens", "phrase_id, n_tokens"),
        ("feature_acts", "phrase_id, layer, feature, act_mean, act_max, n_active"),
        ("neuron_stats", "lang, layer, neuron, n_tokens, n_positive, act_sum"),
    ):
        x, y = table_rows(a, table, run_a, cols), table_rows(b, table, run_b, cols)
        assert len(x) == len(y), table
        key = [c.strip() for c in cols.split(",")][:3]
        assert not y.duplicated(key).any(), table
        np.testing.assert_allclose(
            x.select_dtypes("number").to_numpy(dtype=float),
            y.select_dtypes("number").to_numpy(dtype=float),
            rtol=1e-5,
            atol=1e-5,
            err_msg=table,
        )
    ra = a.sql(
        "SELECT phrase_id, layer, vec FROM residuals WHERE run_id = ? ORDER BY 1, 2", [run_a]
    )
    rb = b.sql(
        "SELECT phrase_id, layer, vec FROM residuals WHERE run_id = ? ORDER BY 1, 2", [run_b]
    )
    assert len(ra) == len(rb)
    if len(ra):
        np.testing.assert_allclose(np.stack(ra.vec), np.stack(rb.vec), rtol=1e-5, atol=1e-5)


def test_resume_after_sigkill(tmp_path, lm, tiny_model_dir, tiny_sae_dirs):
    """A process killed (SIGKILL) after its first chunk leaves whole chunks; resume completes."""
    from tinymodel import cldr_phrases, insert_phrases

    db = tmp_path / "k.duckdb"
    w = Warehouse(db)
    insert_phrases(w, cldr_phrases(12))
    w.close()
    script = textwrap.dedent(f"""
        import os, signal
        from xling.warehouse import Warehouse
        from xling.ingest.runner import IngestConfig, run_ingest
        def kill(p):
            if p.chunks >= 1:
                os.kill(os.getpid(), signal.SIGKILL)
        cfg = IngestConfig(model={str(tiny_model_dir)!r}, sae_dir={str(tiny_sae_dirs[0].parent)!r},
                           batch_size=8, chunk_rows=1000)
        run_ingest(Warehouse({str(db)!r}), cfg, kill)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    w = Warehouse(db)
    assert w.scalar("SELECT status FROM runs") == "running"
    chunks = w.scalar("SELECT count(*) FROM run_chunks")
    assert chunks >= 1
    assert w.scalar("SELECT sum(n_phrases) FROM run_chunks") == w.scalar(
        "SELECT count(*) FROM phrase_tokens"
    )
    resume_ingest(w, 1, model=lm)
    full = Warehouse(tmp_path / "full.duckdb")
    insert_phrases(full, cldr_phrases(12))
    run_ingest(
        full,
        IngestConfig(model=str(tiny_model_dir), sae_dir=str(tiny_sae_dirs[0].parent)),
        model=lm,
    )
    _assert_same_rows(full, 1, w, 1)


def test_resume_refuses_finished_run(corpus_wh, lm, tiny_model_dir, tiny_sae_dirs):
    run = run_ingest(corpus_wh, config(tiny_model_dir, tiny_sae_dirs, limit=3), model=lm)
    with pytest.raises(XlingError, match="already finished"):
        resume_ingest(corpus_wh, run, model=lm)


def _counts(wh):
    return [
        wh.scalar(f"SELECT count(*) FROM {t}") for t in ("models", "saes", "runs", "feature_acts")
    ]


def test_wrong_d_in_refused_before_any_write(corpus_wh, lm, tmp_path, tiny_model_dir):
    from tinymodel import build_tiny_saes

    bad = build_tiny_saes(tmp_path / "bad", layers=[0, 1], d_in=32)
    with pytest.raises(XlingError, match=r"d_in 32 .* d_model is 64"):
        run_ingest(
            corpus_wh, IngestConfig(model=str(tiny_model_dir), sae_dir=str(bad[0].parent)), model=lm
        )
    assert _counts(corpus_wh) == [0, 0, 0, 0]


def test_wrong_hook_layer_refused_before_any_write(
    corpus_wh, lm, tmp_path, tiny_model_dir, tiny_sae_dirs
):
    # A {layer} template whose layer-0 directory holds the layer-1 SAE.
    shutil.copytree(tiny_sae_dirs[1], tmp_path / "swap_0")
    cfg = IngestConfig(
        model=str(tiny_model_dir), sae_dir=str(tmp_path / "swap_{layer}"), layers=[0]
    )
    with pytest.raises(XlingError, match=r"reads hook blocks\.1\.hook_resid_post .* layer 0"):
        run_ingest(corpus_wh, cfg, model=lm)
    assert _counts(corpus_wh) == [0, 0, 0, 0]


def test_layer_out_of_range_and_missing_sae_refused(corpus_wh, lm, tiny_model_dir, tiny_sae_dirs):
    with pytest.raises(XlingError, match=r"layer 7 out of range: .* layers 0-3"):
        run_ingest(corpus_wh, config(tiny_model_dir, tiny_sae_dirs, layers=[7]), model=lm)
    nowhere = str(tiny_sae_dirs[0].parent / "nope_{layer}")
    with pytest.raises(XlingError, match="no sae-lens SAE for layer 3"):
        run_ingest(
            corpus_wh, config(tiny_model_dir, tiny_sae_dirs, layers=[3], sae_dir=nowhere), model=lm
        )
    with pytest.raises(XlingError, match=r"no SAEs for .*--sae-dir"):
        run_ingest(corpus_wh, config(tiny_model_dir, tiny_sae_dirs, sae_dir=None), model=lm)
    with pytest.raises(XlingError, match="unknown language"):
        run_ingest(corpus_wh, config(tiny_model_dir, tiny_sae_dirs, langs=["xx"]), model=lm)
    assert _counts(corpus_wh) == [0, 0, 0, 0]


def test_nan_stops_run_naming_phrase(corpus_wh, tiny_model_dir, tiny_sae_dirs):
    lm = load_model(str(tiny_model_dir))  # its weights are poisoned below
    texts = dict(corpus_wh.con.execute("SELECT phrase_id, text FROM phrases").fetchall())
    owners = {}
    for pid, text in texts.items():
        for t in set(lm.tokenizer(text)["input_ids"][1:]):
            owners.setdefault(t, []).append(pid)
    token, (victim,) = next((t, p) for t, p in sorted(owners.items()) if len(p) == 1)
    with torch.no_grad():
        lm.model.model.embed_tokens.weight[token] = float("nan")
    with pytest.raises(XlingError, match=rf"non-finite .* on phrase {victim} ") as err:
        run_ingest(corpus_wh, config(tiny_model_dir, tiny_sae_dirs, chunk_rows=10**9), model=lm)
    assert "\n" not in str(err.value)
    status, note = corpus_wh.con.execute("SELECT status, note FROM runs").fetchone()
    assert status == "failed" and f"phrase {victim}" in note
    assert corpus_wh.scalar("SELECT count(*) FROM feature_acts") == 0


def test_topk_keeps_each_phrases_top_features(corpus_wh, lm, tiny_model_dir, tiny_sae_dirs):
    wh = corpus_wh
    full = run_ingest(wh, config(tiny_model_dir, tiny_sae_dirs, limit=30), model=lm)
    top = run_ingest(
        wh, config(tiny_model_dir, tiny_sae_dirs, limit=30, features="topk", topk=5), model=lm
    )
    want = wh.sql(
        "SELECT phrase_id, layer, feature FROM (SELECT *, row_number() OVER (PARTITION BY "
        "phrase_id, layer ORDER BY act_max DESC, feature) AS r FROM feature_acts WHERE run_id = ?) "
        "WHERE r <= 5 ORDER BY ALL",
        [full],
    )
    got = wh.sql(
        "SELECT phrase_id, layer, feature FROM feature_acts WHERE run_id = ? ORDER BY ALL", [top]
    )
    assert len(got) == 30 * 4 * 5
    assert got.equals(want)


def test_origin_keeps_group_origin_features(corpus_wh, lm, tiny_model_dir, tiny_sae_dirs):
    wh = corpus_wh
    # The English phrase of each of the first 3 groups names an origin feature.
    wh.con.execute(
        "UPDATE phrases SET origin_layer = 2, origin_feature = CAST(phrase_id AS INTEGER) % 128 "
        "WHERE lang = 'en' AND phrase_id <= 30"
    )
    full = run_ingest(wh, config(tiny_model_dir, tiny_sae_dirs), model=lm)
    origin = run_ingest(wh, config(tiny_model_dir, tiny_sae_dirs, features="origin"), model=lm)
    want = wh.sql(
        "SELECT f.phrase_id, f.layer, f.feature, f.act_max FROM feature_acts f "
        "JOIN phrases p USING (phrase_id) JOIN phrases o ON o.group_id = p.group_id "
        "AND o.origin_layer = f.layer AND o.origin_feature = f.feature WHERE f.run_id = ? "
        "ORDER BY ALL",
        [full],
    )
    got = wh.sql(
        "SELECT phrase_id, layer, feature, act_max FROM feature_acts WHERE run_id = ? ORDER BY ALL",
        [origin],
    )
    assert len(got) > 0 and got.equals(want)
    assert wh.scalar("SELECT count(*) FROM phrase_tokens WHERE run_id = ?", [origin]) == 120


def test_origin_without_origins_refused(corpus_wh, lm, tiny_model_dir, tiny_sae_dirs):
    with pytest.raises(XlingError, match="origin"):
        run_ingest(corpus_wh, config(tiny_model_dir, tiny_sae_dirs, features="origin"), model=lm)


def test_shards_partition_the_phrases(corpus_wh, lm, tiny_model_dir, tiny_sae_dirs):
    runs = [
        run_ingest(
            corpus_wh,
            config(tiny_model_dir, tiny_sae_dirs, layers=[0], shard=(i, 3), langs=["en", "hi"]),
            model=lm,
        )
        for i in range(3)
    ]
    sets = [
        set(corpus_wh.sql("SELECT phrase_id FROM phrase_tokens WHERE run_id = ?", [r]).phrase_id)
        for r in runs
    ]
    assert all(sets) and not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    want = set(corpus_wh.sql("SELECT phrase_id FROM phrases WHERE lang IN ('en', 'hi')").phrase_id)
    assert sets[0] | sets[1] | sets[2] == want


@pytest.mark.parametrize(
    "bad",
    [
        {"features": "top"},
        {"features": "topk"},
        {"features": "topk", "topk": 0},
        {"shard": (3, 3)},
        {"batch_size": 0},
    ],
)
def test_bad_config_refused(bad, tiny_model_dir):
    with pytest.raises(XlingError):
        IngestConfig(model=str(tiny_model_dir), **bad)


def test_cli_ingest_and_resume(cli, corpus_wh, db_path, tiny_model_dir, tiny_sae_dirs):
    corpus_wh.close()
    res = cli(
        "ingest",
        "--db",
        db_path,
        "--model",
        tiny_model_dir,
        "--sae-dir",
        tiny_sae_dirs[0].parent,
        "--layers",
        "0,2",
        "--residuals",
        "--limit",
        "20",
    )
    assert res.exit_code == 0, res.stderr
    assert "run 1" in res.stdout
    with Warehouse(db_path) as w:
        assert w.scalar("SELECT count(DISTINCT layer) FROM feature_acts") == 2
        assert w.scalar("SELECT count(*) FROM residuals") == 40
    res = cli("ingest", "--db", db_path, "--resume", "1")
    assert res.exit_code == 1 and "already finished" in res.stderr


def test_cli_wrong_sae_one_line(cli, corpus_wh, db_path, tmp_path, tiny_model_dir):
    from tinymodel import build_tiny_saes

    corpus_wh.close()
    bad = build_tiny_saes(tmp_path / "bad", layers=[0], d_in=32)
    res = cli("ingest", "--db", db_path, "--model", tiny_model_dir, "--sae-dir", bad[0].parent)
    assert res.exit_code == 1
    assert res.stderr.count("\n") == 1 and "d_in 32" in res.stderr


@pytest.mark.slow
def test_gemma3_270m_ingest(tmp_path):
    """The real Gemma 3 270M (cached safetensors after the first GGUF conversion)."""
    from tinymodel import build_tiny_saes, cldr_phrases, insert_phrases

    lm = load_model("gemma3-270m")
    assert (lm.n_layers, lm.d_model) == (18, 640)
    wh = Warehouse(tmp_path / "g.duckdb")
    insert_phrases(wh, cldr_phrases(2))
    saes = build_tiny_saes(
        tmp_path / "saes", layers=[0, 17], d_in=640, d_sae=256, model_name="gemma3-270m"
    )
    run = run_ingest(
        wh, IngestConfig(model="gemma3-270m", sae_dir=str(saes[0].parent), residuals=True), model=lm
    )
    assert wh.scalar("SELECT count(*) FROM phrase_tokens WHERE run_id = ?", [run]) == 20
    assert wh.scalar("SELECT count(*) FROM residuals WHERE run_id = ?", [run]) == 40
    _, hs = direct_hidden(lm, wh.scalar("SELECT text FROM phrases WHERE phrase_id = 1"))
    vec = wh.scalar(
        "SELECT vec FROM residuals WHERE run_id = ? AND phrase_id = 1 AND layer = 0", [run]
    )
    np.testing.assert_allclose(vec, hs[0][1:].mean(0), rtol=1e-3, atol=1e-3)
    assert os.path.isdir(lm.source)


def test_config_round_trips_and_refuses_unknown_keys(tiny_model_dir):
    cfg = IngestConfig(model=str(tiny_model_dir), features="topk", topk=4, shard=(1, 3))
    back = IngestConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and back.shard == (1, 3)
    assert "device" not in cfg.definition() and cfg.runtime()["batch_size"] == 32
    # configs stored before the fields were typed
    old = IngestConfig.from_dict({"model": "m", "features": "topk:7", "shard": "0/2"})
    assert (old.features, old.topk, old.shard) == ("topk", 7, (0, 2))
    with pytest.raises(XlingError, match="unknown ingest config key"):
        IngestConfig.from_dict({"model": "m", "batchsize": 8})
