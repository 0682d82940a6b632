"""Train the built-in `digits` model on scikit-learn's bundled 8x8 digits and write its weights.

Run: `.venv/bin/python scripts/train_digits.py` (needs the dev extra for scikit-learn; a few seconds on CPU).
Writes app/morphserve/graph/weights/digits.safetensors and prints the held-out test accuracy (recorded in
docs/BENCHMARKS.md).
Inputs are the raw pixel values (0..16) divided by 16, the same scaling clients must use.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from morphserve.graph.bundle import build_modules
from morphserve.graph.spec import build_graph_module, parse_spec
from morphserve.graph.zoo import WEIGHTS_DIR, digits_spec


def main() -> None:
    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    xt, yt = torch.tensor(x_tr, dtype=torch.float32), torch.tensor(y_tr)
    spec = parse_spec(digits_spec())
    modules = build_modules(spec, seed=0)
    model = build_graph_module(spec, modules)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
    for _epoch in range(60):
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            loss = torch.nn.functional.cross_entropy(model(xt[idx])[0], yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(torch.tensor(x_te, dtype=torch.float32))[0].argmax(1)
    acc = (pred == torch.tensor(y_te)).float().mean().item()
    out = WEIGHTS_DIR / "digits.safetensors"
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {f"{nid}.{k}": v.detach().contiguous() for nid, m in modules.items() for k, v in m.state_dict().items()}
    save_file(tensors, str(out), metadata={"test_accuracy": f"{acc:.4f}", "test_samples": str(len(y_te))})
    print(f"test accuracy {acc:.4f} on {len(y_te)} held-out digits; wrote {out}")


if __name__ == "__main__":
    main()
