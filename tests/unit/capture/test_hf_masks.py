"""A Hugging Face BERT with its attention mask as a second input: padded rows must give what the model gives."""

from __future__ import annotations

from pathlib import Path

import torch

from morphserve.capture import capture, write_bundle
from morphserve.graph import from_spec, read_bundle
from tests.models.sequence import hf_bert


def test_bert_with_attention_mask_input(tmp_path: Path) -> None:
    model = hf_bert()
    v = capture(model, ["input_ids:INT64:-1,-1", "attention_mask:INT64:-1,-1"], name="bert_masked")
    write_bundle(v, tmp_path / "b.zip")
    served = from_spec(*read_bundle(tmp_path / "b.zip"))
    assert [t.name for t in served.inputs] == ["input_ids", "attention_mask"]
    g = torch.Generator().manual_seed(0)
    for batch, seq in ((1, 9), (5, 20)):
        ids = torch.randint(1, 100, (batch, seq), generator=g)
        mask = torch.ones(batch, seq, dtype=torch.long)
        mask[-1, seq // 2 :] = 0  # the last row is padded
        with torch.no_grad():
            want = model(input_ids=ids, attention_mask=mask).logits
        (got,) = served.run(ids, mask)
        assert float((got - want).abs().max()) <= 1e-5 * max(1.0, float(want.abs().max()))
    # the mask matters: a different mask changes the padded row
    mask2 = torch.ones(5, 20, dtype=torch.long)
    assert float((served.run(ids, mask2)[0] - got).abs().max()) > 1e-6
