"""Write the labelled digits datasets the README's "Train a layer live" uploads: examples/digits/train.safetensors
(1,000 images) and examples/digits/heldout.safetensors (450).

Why files in the repository: the README runs against a server set up by ./scripts/serve.sh, whose venv has no
scikit-learn (a dev extra) and the server fetches nothing. The split is scripts/train_digits.py's (random_state 0,
stratified, a quarter held out), so `heldout` holds the 450 digits the shipped `digits` model never trained on, and
`train` the first 1,000 of the other 1,347. Inputs are the pixels (0..16) divided by 16 as FP32, under the model's
input name; `labels` are int64 class indices. tests/e2e/test_readme_tour.py checks the shipped files are exactly
what this script writes.

Run: `.venv/bin/python scripts/digits_datasets.py` (needs the dev extra for scikit-learn).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import save
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

OUT = Path(__file__).resolve().parents[1] / "examples" / "digits"
TRAIN_ROWS = 1000


def datasets() -> dict[str, bytes]:
    """The two files' bytes by name (safetensors' writer is deterministic: the same bytes every run)."""
    x, y = load_digits(return_X_y=True)
    x_tr, x_te, y_tr, y_te = train_test_split(x / 16.0, y, test_size=0.25, random_state=0, stratify=y)
    parts = {"train": (x_tr[:TRAIN_ROWS], y_tr[:TRAIN_ROWS]), "heldout": (x_te, y_te)}
    return {
        name: save({"input": xs.astype(np.float32), "labels": ys.astype(np.int64)}) for name, (xs, ys) in parts.items()
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, data in datasets().items():
        (OUT / f"{name}.safetensors").write_bytes(data)
        print(f"wrote {OUT / name}.safetensors ({len(data):,} bytes)")


if __name__ == "__main__":
    main()
