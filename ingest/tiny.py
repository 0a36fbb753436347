"""A tiny Gemma 3 causal LM, its tokenizer and per-layer sae-lens SAEs, built offline and seeded.

Everything here is real (transformers' Gemma3ForCausalLM, a `tokenizers` byte-level BPE trained
on the fly, sae-lens StandardSAE / JumpReLUSAE saved with `save_model`), only small, so the
tests and the benchmarks exercise the same code paths as Gemma 3 270M with Gemma Scope-style
SAEs in well under a second per forward pass. The text is real aligned CLDR names (Babel) in
the ten languages of the paper.

    build_tiny_model(dir)          -> dir, loadable with AutoModelForCausalLM / AutoTokenizer
    build_tiny_saes(dir)           -> {layer: sae-lens directory}
    cldr_phrases(n_groups)         -> pyarrow Table ready for `phrases` (aligned groups)
    insert_phrases(wh, table)      -> phrases appended to a warehouse

It lives in the package (not under tests/) so bench/ and tests/ both import it without
editing sys.path; tests/conftest.py builds it once per test session. torch, transformers,
tokenizers and sae_lens load inside the functions, so importing this module costs nothing.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

LANGS = ("en", "zh", "ru", "es", "it", "id", "ca", "mr", "ml", "hi")
N_LAYERS = 4
D_MODEL = 64
D_MLP = 128
D_SAE = 128
VOCAB_SIZE = 1024
MODEL_NAME = "tiny-gemma3"
# Gemma's ids for its special tokens, kept so code that assumes them works on both models.
SPECIAL_TOKENS = ("<pad>", "<eos>", "<bos>", "<unk>")


def cldr_names(n_groups: int | None = None) -> list[tuple[str, dict[str, str]]]:
    """Aligned CLDR names: [(group_id, {lang: text})], every group holding all ten languages.

    Groups are languages and territories as named in each locale, in a fixed order, so the
    corpus is the same on every machine with the same Babel.
    """
    from babel import Locale

    locales = {lang: Locale.parse(lang) for lang in LANGS}
    groups: list[tuple[str, dict[str, str]]] = []
    for kind in ("languages", "territories"):
        codes = sorted(getattr(locales["en"], kind))
        for code in codes:
            names = {lang: getattr(loc, kind).get(code) for lang, loc in locales.items()}
            if all(n and n.strip() for n in names.values()):
                groups.append((f"{kind[:4]}:{code}", names))
    return groups if n_groups is None else groups[:n_groups]


def cldr_phrases(n_groups: int = 12, langs: tuple[str, ...] = LANGS) -> pa.Table:
    """A `phrases` table of `n_groups` aligned groups in `langs` (phrase ids from 1)."""
    rows: dict[str, list] = {"phrase_id": [], "group_id": [], "lang": [], "text": [], "source": []}
    pid = 1
    for group_id, names in cldr_names(n_groups):
        for lang in langs:
            rows["phrase_id"].append(pid)
            rows["group_id"].append(group_id)
            rows["lang"].append(lang)
            rows["text"].append(names[lang])
            rows["source"].append("cldr-test")
            pid += 1
    return pa.table(rows)


def insert_phrases(wh, table: pa.Table) -> None:
    """Append `table` to the warehouse's `phrases` in one transaction."""
    from xling.warehouse.writer import append_arrow

    with wh.transaction() as con:
        append_arrow(con, "phrases", table)


def build_tokenizer(vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE trained on CLDR names, wrapped like Gemma's (BOS prepended, pad 0)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    texts = [text for _, names in cldr_names() for text in names.values()]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A <bos> $B", special_tokens=[("<bos>", bos_id)]
    )
    # Gemma pads on the left; ingest must cope with that, so the tiny tokenizer does too.
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
    )


def build_tiny_model(out_dir: str | Path, seed: int = 0, n_layers: int = N_LAYERS) -> Path:
    """Write a seeded tiny Gemma3ForCausalLM and its tokenizer (safetensors) to `out_dir`."""
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    out = Path(out_dir)
    tokenizer = build_tokenizer()
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=D_MODEL,
        intermediate_size=D_MLP,
        num_hidden_layers=n_layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        query_pre_attn_scalar=32,
        max_position_embeddings=256,
        sliding_window=8,
        layer_types=["sliding_attention"] * (n_layers - 1) + ["full_attention"],
        # Wider than the default 0.02 so residuals vary visibly across tokens and layers.
        initializer_range=0.1,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(config).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_tiny_saes(
    out_dir: str | Path,
    layers: range | list[int] = range(N_LAYERS),
    d_in: int = D_MODEL,
    d_sae: int = D_SAE,
    seed: int = 0,
    model_name: str = MODEL_NAME,
) -> dict[int, Path]:
    """Seeded sae-lens SAEs, one directory per layer (`out_dir/layer_{L}`).

    Even layers get a StandardSAE, odd layers a JumpReLUSAE (threshold 0.1), so both
    encoders are exercised. Encoder biases are negative so each token fires a minority of
    features, as in a trained SAE; decoder biases are nonzero so input centring matters.
    """
    import torch
    from sae_lens import JumpReLUSAE, JumpReLUSAEConfig, StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    out: dict[int, Path] = {}
    for layer in layers:
        torch.manual_seed(seed * 1000 + layer)
        meta = SAEMetadata(
            model_name=model_name,
            hook_name=f"blocks.{layer}.hook_resid_post",
            hook_head_index=None,
            prepend_bos=True,
        )
        if layer % 2 == 0:
            sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=meta))
        else:
            sae = JumpReLUSAE(JumpReLUSAEConfig(d_in=d_in, d_sae=d_sae, metadata=meta))
        with torch.no_grad():
            sae.W_enc.normal_(0.0, 1.0 / d_in**0.5)
            sae.W_dec.copy_(sae.W_enc.T)
            sae.b_enc.uniform_(-0.6, -0.1)
            sae.b_dec.normal_(0.0, 0.1)
            if hasattr(sae, "threshold"):
                sae.threshold.fill_(0.1)
        path = Path(out_dir) / f"layer_{layer}"
        sae.save_model(path)
        out[layer] = path
    return out
