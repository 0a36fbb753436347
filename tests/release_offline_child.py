"""Run by tests/test_release_offline.py in a fresh interpreter (huggingface_hub reads HF_HOME,
HF_HUB_OFFLINE and HF_ENDPOINT once, at import): build a Hugging Face hub cache holding small
SAE files in two real releases' layouts, then load them through xling's SAE loading, which
calls sae-lens's `SAE.from_pretrained`. Prints one JSON object of what it saw.

    python release_offline_child.py HF_HOME

Gemma Scope 2's loader reads the tensor shapes of `params.safetensors` with HTTP range
requests to the hub (even when the file is cached); a local server answering those requests
from the cache stands in for huggingface.co, so that code runs unchanged and offline.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import sys
import threading
import traceback
from pathlib import Path
from typing import ClassVar

import numpy as np

GEMMA_SCOPE = "gemma-scope-2b-pt-res-canonical"
GEMMA_SCOPE_2 = "gemma-scope-2-270m-pt-res"
D_IN_2B, D_SAE_16K = 2304, 16384  # what sae-lens's gemma_2 loader derives from the names
D_IN_270M, D_SAE_SMALL = 640, 48  # the gemma_3 loader reads both from the file's header
LIVE = 6  # features with non-zero weights (the rest are zero: the npz compresses to little)


class _Hub(http.server.BaseHTTPRequestHandler):
    """GET /{repo}/resolve/{revision}/{file} from the cache's snapshot, honouring Range."""

    snapshots: ClassVar[dict[str, Path]] = {}
    requests_seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        parts = self.path.lstrip("/").split("/")
        repo, rest = "/".join(parts[:2]), parts[4:]
        path = self.snapshots.get(repo, Path("/nonexistent")).joinpath(*rest)
        self.requests_seen.append(self.path)
        if parts[2:3] != ["resolve"] or not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start, end = 0, len(data) - 1
        rng = self.headers.get("Range", "")
        if rng.startswith("bytes="):
            lo, _, hi = rng[len("bytes=") :].partition("-")
            start, end = int(lo), min(int(hi), len(data) - 1)
        body = data[start : end + 1]
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def _snapshot(hf_home: Path, repo_id: str) -> Path:
    """models--org--name/{refs/main, snapshots/<commit>/} as huggingface_hub lays it out."""
    repo_dir = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    (repo_dir / "refs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs" / "main").write_text(commit)
    snap = repo_dir / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    return snap


def _jumprelu(rng: np.random.Generator, d_in: int, d_sae: int, live: int) -> dict[str, np.ndarray]:
    """Gemma Scope's parameter names; only the first `live` features have weights."""
    w_enc = np.zeros((d_in, d_sae), np.float32)
    w_dec = np.zeros((d_sae, d_in), np.float32)
    w_enc[:, :live] = rng.normal(0, 0.05, (d_in, live))
    w_dec[:live] = rng.normal(0, 0.05, (live, d_in))
    b_enc = np.zeros(d_sae, np.float32)
    b_enc[:live] = rng.normal(0, 0.1, live)
    threshold = np.zeros(d_sae, np.float32)
    threshold[:live] = np.abs(rng.normal(0.3, 0.1, live))
    return {
        "W_enc": w_enc,
        "W_dec": w_dec,
        "b_enc": b_enc,
        "b_dec": rng.normal(0, 0.01, d_in).astype(np.float32),
        "threshold": threshold,
    }


def _reference(params: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """JumpReLU as Gemma Scope defines it: relu(pre) where pre > threshold, no b_dec on input."""
    pre = x @ params["W_enc"] + params["b_enc"]
    return np.where(pre > params["threshold"], np.maximum(pre, 0), 0)


def build(hf_home: Path) -> dict:
    from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory

    directory = get_pretrained_saes_directory()
    rng = np.random.default_rng(0)
    out: dict = {"params": {}}

    rel = directory[GEMMA_SCOPE]
    snap = _snapshot(hf_home, rel.repo_id)
    for layer in (3,):
        folder = rel.saes_map[f"layer_{layer}/width_16k/canonical"]
        params = _jumprelu(rng, D_IN_2B, D_SAE_16K, LIVE)
        (snap / folder).mkdir(parents=True)
        # Gemma Scope's own file: numpy arrays named W_enc, W_dec, b_enc, b_dec, threshold
        np.savez_compressed(snap / folder / "params.npz", **params)
        out["params"][f"{GEMMA_SCOPE}:{layer}"] = params

    from safetensors.numpy import save_file

    rel2 = directory[GEMMA_SCOPE_2]
    snap2 = _snapshot(hf_home, rel2.repo_id)
    for layer in (5, 9):
        folder = rel2.saes_map[f"layer_{layer}_width_16k_l0_medium"]
        params = _jumprelu(rng, D_IN_270M, D_SAE_SMALL, LIVE)
        (snap2 / folder).mkdir(parents=True)
        # Gemma Scope 2's file: safetensors with lower-case w_enc / w_dec
        save_file(
            {
                "w_enc": params["W_enc"],
                "w_dec": params["W_dec"],
                "b_enc": params["b_enc"],
                "b_dec": params["b_dec"],
                "threshold": params["threshold"],
            },
            str(snap2 / folder / "params.safetensors"),
        )
        out["params"][f"{GEMMA_SCOPE_2}:{layer}"] = params
    _Hub.snapshots = {rel.repo_id: snap, rel2.repo_id: snap2}
    return out


def _attempt(fn) -> dict:
    from xling.warehouse.errors import XlingError

    try:
        return {"ok": fn()}
    except XlingError as err:
        return {"error": str(err)}
    except Exception:  # reported, so the test shows what escaped instead of a one-liner
        return {"traceback": traceback.format_exc()}


def main(hf_home: Path, server: http.server.ThreadingHTTPServer) -> dict:
    built = build(hf_home)

    import torch

    from xling.ingest.saes import SaeSource, check_saes, load_saes

    report: dict = {}

    def load(release: str, template: str, layers: list[int]) -> dict:
        saes = load_saes(SaeSource(release=release, sae_id=template), layers)
        rows = {}
        for layer, s in saes.items():
            params = built["params"][f"{release}:{layer}"]
            x = np.random.default_rng(layer).normal(0, 1, (3, s.d_in)).astype(np.float32)
            with torch.no_grad():
                got = s.sae.encode(torch.from_numpy(x)).numpy()
            want = _reference(params, x)
            rows[layer] = {
                "sae_name": s.sae_name,
                "d_in": s.d_in,
                "d_sae": s.d_sae,
                "hook_name": s.hook_name,
                "architecture": s.architecture,
                "class": type(s.sae).__name__,
                "max_abs_diff": float(np.abs(got - want).max()),
                "active": int((want > 0).sum()),
            }
        report.setdefault("_saes", {})[release] = saes
        return rows

    report["gemma_scope"] = _attempt(
        lambda: load(GEMMA_SCOPE, "layer_{layer}/width_16k/canonical", [3])
    )
    report["gemma_scope_2"] = _attempt(
        lambda: load(GEMMA_SCOPE_2, "layer_{layer}_width_16k_l0_medium", [5, 9])
    )
    saes = report.pop("_saes", {})

    def check(release: str, d_model: int, n_layers: int) -> str:
        check_saes(saes[release], d_model, n_layers)
        return "accepted"

    def misplaced(release: str, sae_id: str, layer: int, d_model: int, n_layers: int) -> str:
        loaded = load_saes(SaeSource(release=release, sae_id=sae_id), [layer])
        check_saes(loaded, d_model, n_layers)
        return "accepted"

    report["checks"] = {
        "2b_on_gemma2_2b": _attempt(lambda: check(GEMMA_SCOPE, D_IN_2B, 26)),
        "2b_on_tiny_model": _attempt(lambda: check(GEMMA_SCOPE, 64, 4)),
        "270m_on_gemma3_270m": _attempt(lambda: check(GEMMA_SCOPE_2, D_IN_270M, 18)),
        "270m_on_gemma2_2b": _attempt(lambda: check(GEMMA_SCOPE_2, D_IN_2B, 26)),
        "2b_layer3_used_for_4": _attempt(
            lambda: misplaced(GEMMA_SCOPE, "layer_3/width_16k/canonical", 4, D_IN_2B, 26)
        ),
        "270m_layer9_used_for_5": _attempt(
            lambda: misplaced(GEMMA_SCOPE_2, "layer_9_width_16k_l0_medium", 5, D_IN_270M, 18)
        ),
        "unknown_id": _attempt(lambda: misplaced(GEMMA_SCOPE, "layer_{layer}/width_3k/x", 3, 1, 1)),
        "not_cached": _attempt(
            lambda: misplaced(GEMMA_SCOPE, "layer_{layer}/width_16k/canonical", 7, D_IN_2B, 26)
        ),
        "unknown_release": _attempt(lambda: misplaced("no-such-release", "x_{layer}", 3, 1, 1)),
    }
    report["hub_requests"] = sorted(set(_Hub.requests_seen))
    # No hub at all: the cached Gemma Scope 2 file cannot be loaded (its shapes are asked for
    # over HTTP); xling must say so in one line.
    server.shutdown()
    server.server_close()
    report["checks"]["270m_without_a_hub"] = _attempt(
        lambda: misplaced(GEMMA_SCOPE_2, "layer_{layer}_width_16k_l0_medium", 5, D_IN_270M, 18)
    )
    report["offline"] = os.environ.get("HF_HUB_OFFLINE")
    return report


if __name__ == "__main__":
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    os.environ["HF_ENDPOINT"] = f"http://127.0.0.1:{server.server_address[1]}"
    os.environ["HF_HOME"] = sys.argv[1]
    os.environ["HF_HUB_OFFLINE"] = "1"
    print(json.dumps(main(Path(sys.argv[1]), server), default=str))
