"""Subnetwork tuning: only the selected neurons' rows/columns move; the delta reproduces them."""

from __future__ import annotations

import pytest

from xling.warehouse.errors import XlingError

NEURONS = {0: [3, 5, 7], 2: [1, 64, 100]}
SLICES = {"gate_proj": 0, "up_proj": 0, "down_proj": 1}


def _load(model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(model_dir).eval(), AutoTokenizer.from_pretrained(
        model_dir
    )


def _texts(lang="hi", n=12):
    from tinymodel import cldr_names

    return [names[lang] for _, names in cldr_names(n)]


@pytest.fixture(scope="module")
def tuned(tiny_model_dir):
    """(original state dict, tuned model, trained parts) after 4 AdamW steps with decay."""
    import torch

    from xling.finetune.common import encode
    from xling.finetune.subnetwork import spliced

    model, tok = _load(tiny_model_dir)
    original = {k: v.clone() for k, v in model.state_dict().items()}
    ids, mask = encode(tok, _texts(), 64, "cpu")
    with spliced(model, NEURONS) as parts:
        # A large rate and decay: if decay reached any unselected weight it would show.
        opt = torch.optim.AdamW(parts.values(), lr=1e-2, weight_decay=0.5)
        for _ in range(4):
            loss = model(
                input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100)
            ).loss
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(list(parts.values()), 1.0)
            opt.step()
    return original, model, parts


def test_unselected_weights_stay_bit_identical(tuned):
    import torch

    original, model, _ = tuned
    now = model.state_dict()
    assert now.keys() == original.keys()
    touched = {f"model.layers.{layer}.mlp.{proj}.weight" for layer in NEURONS for proj in SLICES}
    for name, value in now.items():
        if name not in touched:
            assert torch.equal(value, original[name]), name
    for layer, idx in NEURONS.items():
        for proj, dim in SLICES.items():
            name = f"model.layers.{layer}.mlp.{proj}.weight"
            keep = torch.ones(now[name].shape[dim], dtype=torch.bool)
            keep[idx] = False
            assert torch.equal(
                now[name].index_select(dim, keep.nonzero()[:, 0]),
                original[name].index_select(dim, keep.nonzero()[:, 0]),
            ), name
            moved = now[name].index_select(dim, torch.tensor(idx)) != original[name].index_select(
                dim, torch.tensor(idx)
            )
            # Every selected neuron's slice changed (not just one element somewhere).
            assert moved.any(dim=1 - dim).all(), name


def test_model_is_plain_again_and_only_parts_were_trainable(tuned):
    _, model, parts = tuned
    assert not any("parametrizations" in name for name in model.state_dict())
    assert sum(p.numel() for p in parts.values()) == sum(len(i) for i in NEURONS.values()) * 3 * 64


def test_saved_delta_reproduces_the_tuned_weights(tuned, tiny_model_dir, tmp_path):
    import torch

    from xling.finetune.subnetwork import apply_delta, delta_tensors, load_delta, save_delta

    _, model, parts = tuned
    path = save_delta(
        tmp_path / "d" / "subnetwork.safetensors",
        delta_tensors(NEURONS, parts),
        {"model": "tiny", "n_layers": 4, "d_model": 64, "d_mlp": 128, "lang": "hi"},
    )
    # Small: the selected slices only (~6 neurons × 3 × 64 floats plus a header).
    assert path.stat().st_size < 20_000
    tensors, meta = load_delta(tmp_path / "d")
    assert meta["lang"] == "hi" and tensors["layer.2.index"].tolist() == NEURONS[2]

    fresh, _ = _load(tiny_model_dir)
    apply_delta(fresh, path)
    tuned_state = model.state_dict()
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, tuned_state[name]), name


def test_apply_adapter_takes_a_delta_and_refuses_other_models(tuned, tiny_model_dir, tmp_path):
    import torch
    from tinymodel import build_tiny_model

    from xling.finetune.apply import apply_adapter
    from xling.finetune.subnetwork import delta_tensors, save_delta
    from xling.ingest.models import load_model

    _, model, parts = tuned
    path = save_delta(
        tmp_path / "subnetwork.safetensors",
        delta_tensors(NEURONS, parts),
        {"model": "tiny", "n_layers": 4, "d_model": 64, "d_mlp": 128},
    )
    lm = apply_adapter(load_model(str(tiny_model_dir)), tmp_path)
    assert lm.adapter == str(tmp_path.resolve())
    w = "model.layers.2.mlp.down_proj.weight"
    assert torch.equal(lm.model.state_dict()[w], model.state_dict()[w])
    # A model loaded in another dtype gets the slices cast to it.
    half = apply_adapter(load_model(str(tiny_model_dir), dtype="bfloat16"), tmp_path)
    assert torch.equal(half.model.state_dict()[w], model.state_dict()[w].to(torch.bfloat16))

    other = load_model(str(build_tiny_model(tmp_path / "three", n_layers=3)))
    with pytest.raises(XlingError, match="was made for"):
        apply_adapter(other, path)
    with pytest.raises(XlingError, match="neither a peft LoRA"):
        apply_adapter(other, tmp_path / "three")


def test_config_validation():
    from xling.finetune.config import SubnetworkConfig

    cfg = SubnetworkConfig(run=1, lang="hi", out="d")
    assert (cfg.lr, cfg.weight_decay, cfg.max_grad_norm) == (1e-4, 0.01, 1.0)
    assert SubnetworkConfig.from_json(cfg.to_json()) == cfg
    for bad in (
        {"top_rate": 0},
        {"top_rate": 2},
        {"steps": 0},
        {"lang": " "},
        {"weight_decay": -1},
    ):
        with pytest.raises(XlingError):
            SubnetworkConfig(**{"run": 1, "lang": "hi", "out": "d", **bad})


# -- from the warehouse, through the CLI -------------------------------------------------

LANG, TOP_RATE = "hi", 0.05


@pytest.fixture
def neuron_run(corpus_wh, tiny_model_dir):
    from xling.ingest.runner import IngestConfig, run_ingest

    return run_ingest(corpus_wh, IngestConfig(model=str(tiny_model_dir), neurons=True))


def test_finetune_subnetwork_cli_trains_exactly_the_lape_neurons(
    corpus_wh, neuron_run, db_path, cli, tmp_path, tiny_model_dir
):
    import json

    import torch

    from xling.analysis.queries import lape
    from xling.finetune.apply import apply_adapter
    from xling.ingest.models import load_model

    selected = lape(corpus_wh, kind="neurons", lang=LANG, top_rate=TOP_RATE, run=neuron_run)
    assert len(selected) >= 2
    corpus_wh.close()
    out = tmp_path / "delta"
    args = ["--run", neuron_run, "--lang", LANG, "--top-rate", TOP_RATE, "--db", db_path]
    r = cli("finetune", "subnetwork", *args, "--steps", 3, "--lr", 1e-2, "--out", out)
    assert r.exit_code == 0, r.stderr
    n = len(selected)
    assert f"{n * 3 * 64:,} of" in r.stdout  # three 64-wide slices per neuron

    base = load_model(str(tiny_model_dir)).model.state_dict()
    tuned = apply_adapter(load_model(str(tiny_model_dir)), out).model.state_dict()
    changed = set()
    for name, value in tuned.items():
        diff = (value != base[name]).nonzero()
        if len(diff):
            layer = int(name.split(".layers.")[1].split(".")[0])
            proj = name.split(".")[-2]
            changed |= {(layer, int(j)) for j in diff[:, SLICES[proj]].unique()}
            assert proj in SLICES, name
    assert changed == set(zip(selected["layer"], selected["neuron"], strict=True))
    assert torch.equal(tuned["model.embed_tokens.weight"], base["model.embed_tokens.weight"])

    from xling.warehouse import Warehouse

    with Warehouse(db_path, read_only=True) as wh:
        row = wh.sql("SELECT * FROM finetunes").iloc[0]
        assert (row["kind"], row["base_run"], row["n_trainable"]) == (
            "subnetwork",
            neuron_run,
            n * 192,
        )
        assert len(json.loads(row["losses"])) == 3
        assert json.loads(row["config"])["weight_decay"] == 0.01

    r = cli("finetune", "subnetwork", *args, "--steps", 1, "--out", out)
    assert r.exit_code == 1 and "exists" in r.stderr
    r = cli(
        "finetune",
        "subnetwork",
        *args[:2],
        "--lang",
        "xx",
        "--db",
        db_path,
        "--out",
        tmp_path / "x",
    )
    assert r.exit_code == 1 and "no neuron stats for 'xx'" in r.stderr
