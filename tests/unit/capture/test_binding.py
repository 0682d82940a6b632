"""`--input NAME:...` binds to the forward parameter called NAME, else by position; an input that lands on a
parameter that cannot take a tensor is refused naming it (issue 23: on GPT-2, `--input attention_mask` landed on
the cache, by position, with an error that did not say so). Refusals are one line, cut at a sentence's end."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from morphserve.capture import CaptureError, capture
from morphserve.capture.api import capture_with_notes
from morphserve.capture.refusals import shorten
from tests.models.hf import gpt2


def test_inputs_bind_by_name_in_any_order() -> None:
    model = gpt2()
    v = capture(model, ["attention_mask:INT64:-1,-1", "input_ids:INT64:-1,-1"], name="g")
    assert [t.name for t in v.inputs] == ["attention_mask", "input_ids"]
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, 100, (3, 11), generator=g)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[0, :4] = 0  # a left-padded row
    with torch.no_grad():
        want = model(input_ids=ids, attention_mask=mask).logits
    (got,) = v.run(mask, ids)
    assert float((got[1:] - want[1:]).abs().max()) <= 1e-5 * max(1.0, float(want.abs().max()))
    assert float((got[0, 4:] - want[0, 4:]).abs().max()) <= 1e-5 * max(1.0, float(want.abs().max()))


def test_an_input_that_lands_on_the_cache_is_refused_naming_it() -> None:
    with pytest.raises(CaptureError) as e:
        capture(gpt2(), ["ids:INT64:-1,-1", "mask:INT64:-1,-1"])
    msg = e.value.message
    assert "--input 'mask' lands on forward parameter 'cache' (by position)" in msg, msg
    assert "name each --input after the parameter it is for" in msg and "attention_mask" in msg
    assert "\n" not in msg


class Annotated(nn.Module):
    def forward(self, x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        return x * scale


def test_a_parameter_annotated_as_no_tensor_is_refused() -> None:
    with pytest.raises(
        CaptureError, match=r"--input 'y' lands on forward parameter 'scale' \(by position\), which takes float"
    ):
        capture(Annotated(), ["x:FP32:-1,4", "y:FP32:-1,4"])


def test_more_inputs_than_parameters_is_refused() -> None:
    class One(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

    with pytest.raises(CaptureError, match="forward has no parameter of that name and no positional parameter left"):
        capture(One(), ["x:FP32:-1,4", "z:FP32:-1,4"])


def test_positional_names_still_bind_by_position() -> None:
    class Two(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a - b

    v = capture(Two(), ["first:FP32:-1,4", "second:FP32:-1,4"])
    x, y = torch.randn(2, 4), torch.randn(2, 4)
    assert torch.equal(v.run(x, y)[0], x - y)


def test_the_cache_is_turned_off_and_said_so() -> None:
    c = capture_with_notes(gpt2(), ["input_ids:INT64:-1,-1"])
    assert any("use_cache is off" in n for n in c.notes)
    assert [o.name for o in c.version.outputs] == ["logits"]
    assert any("shared by transformer.wte and lm_head" in n for n in c.notes)


def test_long_messages_are_cut_at_a_sentence_end() -> None:
    text = "First sentence is here. " * 8 + "and a clause that goes on " * 10
    cut = shorten(text, 240)
    assert len(cut) <= 240 and cut.endswith("here.")
    words = "word " * 100
    assert shorten(words, 50).endswith(" ...") and not shorten(words, 50).endswith("wor ...")


def test_tied_weights_stay_one_tensor_read_by_both_uses() -> None:
    v = capture(gpt2(), ["input_ids:INT64:-1,-1"])
    readers = [n for n in v.spec.nodes if "lm_head_weight" in n.inputs]
    assert {n.function for n in readers} >= {"aten.embedding.default"} and len(readers) >= 2
    assert sum(1 for n in v.spec.nodes if n.parameter is not None and list(n.parameter.shape) == [100, 32]) == 1
