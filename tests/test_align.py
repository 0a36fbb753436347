"""Activation-aligned LoRA: the loss against a by-hand computation, and what training does."""

from __future__ import annotations

import json

import numpy as np
import pytest

LANG = "ml"
N_PAIRS = 12


@pytest.fixture(scope="module")
def lm(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(
        tiny_model_dir
    ).eval(), AutoTokenizer.from_pretrained(tiny_model_dir)


def _texts(lang: str, n: int = N_PAIRS) -> list[str]:
    from tinymodel import cldr_names

    return [names[lang] for _, names in cldr_names(n)]


def _sae(tiny_sae_dirs, layer):
    from sae_lens import SAE

    return SAE.load_from_disk(str(tiny_sae_dirs[layer]))


def _hand_pooled(
    model, tok, sae_dir, layer: int, texts: list[str], stat: str
) -> tuple[np.ndarray, np.ndarray]:
    """Each phrase alone: HF hidden_states[layer + 1] (= block output below the last block),
    the SAE encoder in numpy from its safetensors file, pooled over tokens after BOS.

    Also returns where a JumpReLU threshold is within float32 noise of some pooled token's
    pre-activation: there a batched float32 forward may legitimately land on the other side.
    """
    import torch
    from safetensors.numpy import load_file

    w = load_file(str(sae_dir / "sae_weights.safetensors"))
    cfg = json.loads((sae_dir / "cfg.json").read_text())
    # sae-lens encoders: relu((x − b_dec if apply_b_dec_to_input) W_enc + b_enc), JumpReLU
    # also zeroing pre-activations at or below the threshold.
    b_in = w["b_dec"] if cfg["apply_b_dec_to_input"] else 0.0
    assert cfg["normalize_activations"] == "none"
    out, edge = [], []
    for text in texts:
        ids = tok(text, return_tensors="pt")["input_ids"]
        assert ids[0, 0].item() == tok.bos_token_id
        with torch.no_grad():
            hidden = model(ids, output_hidden_states=True).hidden_states[layer + 1][0].numpy()
        pre = (hidden[1:].astype(np.float64) - b_in) @ w["W_enc"] + w["b_enc"]
        acts = np.maximum(pre, 0)
        threshold = w.get("threshold")
        if threshold is not None:
            acts = acts * (pre > threshold)
        edge.append(
            np.zeros(pre.shape[1], bool)
            if threshold is None
            else (np.abs(pre - threshold) < 1e-4).any(0)
        )
        out.append(acts.max(0) if stat == "max" else acts.mean(0))
    return np.stack(out), np.stack(edge)


@pytest.mark.parametrize(
    ("layer", "stat", "gradient"),
    [
        (1, "max", "exact"),
        (1, "max", "straight-through"),
        (2, "mean", "exact"),
        (2, "max", "exact"),
    ],
)
def test_pooled_sae_acts_equal_hand_computation(lm, tiny_sae_dirs, layer, stat, gradient):
    """Batched, right-padded, hooked, SAE-encoded and pooled = each phrase by hand."""
    from xling.finetune.align import pooled_sae_acts
    from xling.finetune.common import encode

    model, tok = lm
    texts = _texts("en", 4) + _texts(LANG, 4)
    ids, mask = encode(tok, texts, 128, "cpu")
    assert (mask == 0).any()  # the batch is padded
    got = pooled_sae_acts(
        model,
        _sae(tiny_sae_dirs, layer),
        ids,
        mask,
        layer=layer,
        stat=stat,
        bos_id=tok.bos_token_id,
        include_bos=False,
        gradient=gradient,
    ).detach()
    want, edge = _hand_pooled(model, tok, tiny_sae_dirs[layer], layer, texts, stat)
    assert (want > 0).sum() > 20 and edge.sum() <= 2
    np.testing.assert_allclose(got.numpy()[~edge], want[~edge], rtol=1e-4, atol=1e-5)


def test_alignment_loss_equals_hand_computation(lm, tiny_sae_dirs):
    """The loss of a fixed batch through the model (layer 2, a ReLU SAE: no threshold edges)
    equals the numpy formula over the hand-pooled activations."""
    import torch

    from xling.finetune.align import alignment_loss, pooled_sae_acts
    from xling.finetune.common import encode

    model, tok = lm
    layer, lam = 2, 0.7
    sae = _sae(tiny_sae_dirs, layer)
    en, other = _texts("en", 4), _texts(LANG, 4)

    def acts(texts):
        ids, mask = encode(tok, texts, 128, "cpu")
        return pooled_sae_acts(
            model,
            sae,
            ids,
            mask,
            layer=layer,
            stat="max",
            bos_id=tok.bos_token_id,
            include_bos=False,
        )

    a_en, _ = _hand_pooled(model, tok, tiny_sae_dirs[layer], layer, en, "max")
    a_other, _ = _hand_pooled(model, tok, tiny_sae_dirs[layer], layer, other, "max")
    orig = np.abs(a_en + np.random.default_rng(0).normal(0, 0.1, a_en.shape))
    total, align, retain = alignment_loss(
        acts(en), acts(other), torch.tensor(orig, dtype=torch.float32), lam
    )
    want_align = ((a_en - a_other) ** 2).sum(1).mean()
    want_retain = ((a_en - orig) ** 2).sum(1).mean()
    assert want_align > 1 and want_retain > 0.01
    np.testing.assert_allclose(align.item(), want_align, rtol=1e-4)
    np.testing.assert_allclose(retain.item(), want_retain, rtol=1e-4)
    np.testing.assert_allclose(total.item(), want_align + lam * want_retain, rtol=1e-4)

    # en-norm: each pair's two terms divided by its ‖a_orig‖².
    total, align, retain = alignment_loss(
        acts(en), acts(other), torch.tensor(orig, dtype=torch.float32), lam, "en-norm"
    )
    scale = (orig**2).sum(1)
    want_align = (((a_en - a_other) ** 2).sum(1) / scale).mean()
    want_retain = (((a_en - orig) ** 2).sum(1) / scale).mean()
    np.testing.assert_allclose(align.item(), want_align, rtol=1e-4)
    np.testing.assert_allclose(retain.item(), want_retain, rtol=1e-4)
    np.testing.assert_allclose(total.item(), want_align + lam * want_retain, rtol=1e-4)


@pytest.mark.parametrize("layer", [1, 2])  # JumpReLU, then ReLU
def test_straight_through_gradient_reaches_features_that_are_off(tiny_sae_dirs, layer):
    import torch

    from xling.finetune.align import encode

    sae = _sae(tiny_sae_dirs, layer)
    x = torch.randn(6, 64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    exact = encode(sae, x, "exact")
    off = int((exact == 0).all(0).nonzero()[0, 0])  # a feature silent on every row
    straight = encode(sae, x, "straight-through")
    assert torch.equal(straight, exact)  # same values
    (g_exact,) = torch.autograd.grad(exact[:, off].sum(), x)
    (g_straight,) = torch.autograd.grad(straight[:, off].sum(), x)
    assert torch.equal(g_exact, torch.zeros_like(x))
    # d pre / d x = W_enc[:, f] (the b_dec shift does not depend on x).
    torch.testing.assert_close(g_straight, sae.W_enc[:, off].detach().expand(6, -1))


def _train(tiny_model_dir, tiny_sae_dirs, *, lam: float, steps: int = 15, layer: int = 2):
    """Train LoRA on (en, ml) pairs whose a_orig is the untouched model's own English
    activations; returns (history, pooled acts before and after for en and ml)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from xling.finetune.align import AlignPairs, add_lora, pooled_sae_acts, train_alignment
    from xling.finetune.common import encode
    from xling.finetune.config import AlignLoraConfig

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    sae = _sae(tiny_sae_dirs, layer)
    en, other = _texts("en"), _texts(LANG)

    def acts(m, texts):
        ids, mask = encode(tok, texts, 128, "cpu")
        with torch.no_grad():
            return pooled_sae_acts(
                m,
                sae,
                ids,
                mask,
                layer=layer,
                stat="max",
                bos_id=tok.bos_token_id,
                include_bos=False,
            ).numpy()

    before = {"en": acts(model, en), LANG: acts(model, other)}
    pairs = AlignPairs(en, other, [LANG] * len(en), list(range(len(en))), before["en"])
    cfg = AlignLoraConfig(
        base_run=1, target_layer=layer, out="unused", lam=lam, steps=steps, lr=1e-2, batch_size=6
    )
    assert cfg.gradient == "straight-through"  # the default is what is tested
    peft_model = add_lora(model, cfg, n_layers=4)
    history = train_alignment(peft_model, tok, sae, pairs, cfg)
    tuned = peft_model.get_base_model()
    after = {"en": acts(tuned, en), LANG: acts(tuned, other)}
    return history, before, after


@pytest.fixture(scope="module")
def trained(tiny_model_dir, tiny_sae_dirs):
    return {lam: _train(tiny_model_dir, tiny_sae_dirs, lam=lam) for lam in (0.0, 2.0)}


def test_training_lowers_the_loss_and_moves_the_language_toward_english(trained):
    history, before, after = trained[2.0]
    first = np.mean([h["loss"] for h in history[:3]])
    last = np.mean([h["loss"] for h in history[-3:]])
    assert last < 0.5 * first
    # Toward English: the distance to the English activations shrinks, and the change of the
    # target language's activations points toward English (positive projection), pair by pair
    # on average.
    dist = lambda a: np.linalg.norm(a - before["en"], axis=1).mean()  # noqa: E731
    assert dist(after[LANG]) < 0.7 * dist(before[LANG])
    step = after[LANG] - before[LANG]
    toward = before["en"] - before[LANG]
    assert (step * toward).sum(1).mean() > 0


def test_lambda_keeps_english_closer_to_the_original(trained):
    drift = {
        lam: np.linalg.norm(after["en"] - before["en"], axis=1).mean()
        for lam, (_, before, after) in trained.items()
    }
    assert drift[2.0] < 0.8 * drift[0.0]
    # The retain term is logged and weighed: with λ = 0 it is still measured but not added.
    hist0 = trained[0.0][0]
    assert all(h["loss"] == pytest.approx(h["align"]) for h in hist0)
    assert any(h["retain"] > 0 for h in hist0)


def test_lora_only_on_layers_up_to_the_target(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    from xling.finetune.align import add_lora
    from xling.finetune.config import PROJECTIONS, AlignLoraConfig

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = add_lora(model, AlignLoraConfig(base_run=1, target_layer=1, out="x"), n_layers=4)
    wrapped = {
        (int(name.split(".layers.")[1].split(".")[0]), name.split(".")[-4])
        for name, p in peft_model.named_parameters()
        if p.requires_grad
    }
    assert wrapped == {(layer, proj) for layer in (0, 1) for proj in PROJECTIONS}

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = AlignLoraConfig(base_run=1, target_layer=2, out="x", lora_layers=[2])
    wrapped = {
        int(name.split(".layers.")[1].split(".")[0])
        for name, p in add_lora(model, cfg, n_layers=4).named_parameters()
        if p.requires_grad
    }
    assert wrapped == {2}


def test_config_is_validated_and_round_trips():
    from xling.finetune.config import AlignLoraConfig
    from xling.warehouse.errors import XlingError

    cfg = AlignLoraConfig(base_run=3, target_layer=5, out="a", langs=["ml", "hi"], lam=0.5)
    assert AlignLoraConfig.from_json(cfg.to_json()) == cfg
    assert json.loads(cfg.to_json())["lam"] == 0.5
    for bad in (
        {"lam": -1},
        {"rank": 0},
        {"stat": "median"},
        {"langs": ["en"]},
        {"steps": 1.5},
        {"normalize": "l2"},
        {"lora_layers": [6]},
        {"lora_layers": []},
    ):
        with pytest.raises(XlingError):
            AlignLoraConfig(base_run=3, target_layer=5, out="a", **bad)


# -- from the warehouse, through the CLI -------------------------------------------------


@pytest.fixture
def base_run(corpus_wh, tiny_model_dir, tiny_sae_dirs):
    """A finished ingest of the 12-group corpus with the tiny model and its layer-2 SAE."""
    from xling.ingest.runner import IngestConfig, run_ingest

    cfg = IngestConfig(model=str(tiny_model_dir), sae_dir=str(tiny_sae_dirs[2]), layers=[2])
    return run_ingest(corpus_wh, cfg)


def test_aligned_pairs_and_stored_english_activations(corpus_wh, base_run):
    from xling.finetune.align import aligned_pairs

    pairs = aligned_pairs(corpus_wh, base_run, 2, ["ml", "hi"], "max", 128)
    assert len(pairs) == 24 and sorted(set(pairs.lang)) == ["hi", "ml"]
    raw = corpus_wh.sql(
        "SELECT p.text, f.feature, f.act_max FROM feature_acts f JOIN phrases p USING (phrase_id) "
        "WHERE f.run_id = ? AND f.layer = 2 AND p.lang = 'en'",
        [base_run],
    )
    # Densified: every stored row lands in its (phrase, feature) cell, every other cell is 0.
    dense = {text: np.zeros(128, np.float32) for text in pairs.en_text}
    for text, feature, act in raw.itertuples(index=False):
        dense[text][feature] = act
    for i, text in enumerate(pairs.en_text):
        np.testing.assert_array_equal(pairs.a_orig[pairs.en_row[i]], dense[text])
    assert (pairs.a_orig == 0).mean() > 0.05  # absent rows exist and read as 0


def test_finetune_align_cli_records_and_saves_a_peft_adapter(
    corpus_wh, base_run, db_path, cli, tmp_path
):
    corpus_wh.close()
    out = tmp_path / "lora"
    args = ["--run", base_run, "--target-layer", 2, "--db", db_path]
    r = cli(
        "finetune",
        "align",
        *args,
        "--langs",
        "ml",
        "--steps",
        4,
        "--lr",
        1e-2,
        "--lambda",
        0.5,
        "--out",
        out,
    )
    assert r.exit_code == 0, r.stderr
    assert "finetune 1" in r.stdout
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert adapter_cfg["layers_to_transform"] == [0, 1, 2] and adapter_cfg["r"] == 8

    from xling.warehouse import Warehouse

    with Warehouse(db_path, read_only=True) as wh:
        row = wh.sql("SELECT * FROM finetunes").iloc[0]
        cfg, losses = json.loads(row["config"]), json.loads(row["losses"])
        assert (row["kind"], row["base_run"], cfg["lam"], cfg["langs"]) == (
            "align",
            base_run,
            0.5,
            ["ml"],
        )
        assert [x["step"] for x in losses] == [1, 2, 3, 4]
        assert all(x["loss"] == pytest.approx(x["align"] + 0.5 * x["retain"]) for x in losses)
        assert row["adapter"] == str(out.resolve()) and 0 < row["n_trainable"] < row["n_params"]

    # Bad input: one line, exit 1, nothing recorded.
    for bad, msg in [
        (["--out", out], "already holds an adapter"),
        (["--out", tmp_path / "b", "--target-layer", 9], "no SAE at layer 9"),
        (["--out", tmp_path / "c", "--langs", "xx"], "no phrases in 'xx'"),
        (["--out", tmp_path / "d", "--run", 77], "no run 77"),
        (["--out", tmp_path / "e", "--lambda", -1], "lambda"),
    ]:
        r = cli("finetune", "align", *args, "--steps", 1, *bad)
        assert r.exit_code == 1 and msg in r.stderr, (bad, r.stderr)
    r = cli("finetune", "list", "--format", "json", "--db", db_path)
    assert r.exit_code == 0 and len(json.loads(r.stdout)) == 1
    r = cli("finetune", "show", 1, "--format", "csv", "--db", db_path)
    assert r.exit_code == 0, r.stderr
    assert "step,loss,align,retain" in r.stdout and r.stdout.count("\n4,") == 1


def test_merged_lora_equals_the_peft_model_and_is_recorded(
    corpus_wh, base_run, tiny_model_dir, tmp_path
):
    import torch
    from peft import PeftModel

    from xling.finetune.align import align_lora
    from xling.finetune.apply import apply_adapter
    from xling.finetune.config import AlignLoraConfig
    from xling.ingest.hooks import capture_blocks, forward_blocks
    from xling.ingest.models import load_model
    from xling.ingest.runner import IngestConfig, run_ingest

    out = tmp_path / "lora"
    cfg = AlignLoraConfig(base_run=base_run, target_layer=2, out=str(out), steps=3, lr=1e-2)
    align_lora(corpus_wh, cfg)
    base = load_model(str(tiny_model_dir))
    unmerged = PeftModel.from_pretrained(load_model(str(tiny_model_dir)).model, str(out))
    tuned = apply_adapter(load_model(str(tiny_model_dir)), out)
    assert tuned.adapter == str(out.resolve())
    ids = torch.tensor([[2, 40, 41, 42, 43]])
    mask = torch.ones_like(ids)
    resid = {}
    for name, model in (
        ("base", base.model),
        ("peft", unmerged.get_base_model()),
        ("merged", tuned.model),
    ):
        with capture_blocks(model, [0, 2, 3]) as got:
            forward_blocks(model, ids, mask)
        resid[name] = got
    for layer in (0, 2, 3):
        # Merging into the weights changes nothing but rounding ...
        torch.testing.assert_close(
            resid["merged"][layer], resid["peft"][layer], rtol=1e-4, atol=1e-5
        )
        # ... and the adapter (layers 0-2) changes the residual stream from layer 0 upward.
        assert not torch.allclose(resid["base"][layer], resid["merged"][layer], atol=1e-4)

    # A run with the adapted model records the adapter on its model row.
    run = run_ingest(
        corpus_wh, IngestConfig(model=str(tiny_model_dir), layers=[2], residuals=True), model=tuned
    )
    assert corpus_wh.run(run)["adapter"] == str(out.resolve())
