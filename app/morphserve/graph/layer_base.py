"""What every catalogue layer shares: the strict pydantic base, the bounded size types, and module -> spec reading.

A layer class describes itself completely: its arguments (the pydantic fields), its module (`build`), how many
tensors it reads and returns, its identity rule (`init_identity`, for `init: identity` inserts) and its shape rule
(`output_shape`, the fast path of shape propagation). identity.py and shapes.py only dispatch to these, so a new
layer is one class in a layers_* file plus its entry in `catalogue.LAYERS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from .errors import SpecError
from .identity import IdentityError

#: (shape, dtype) of one tensor, as a shape rule gives it.
ShapeDtype = tuple[tuple[int, ...], torch.dtype]

#: The most elements one layer's parameters may hold (1 GiB of FP32).
MAX_LAYER_ELEMENTS = 1 << 28

Size = Annotated[int, Field(ge=1, le=1 << 20)]
IntOrPair = int | tuple[int, int]
DimArg = Annotated[int, Field(ge=-8, le=8)]
Prob = Annotated[float, Field(ge=0, le=1)]
Eps = Annotated[float, Field(gt=0, le=1)]
Bounded = Annotated[float, Field(ge=-1e6, le=1e6)]


def size_product(*sizes: int | tuple[int, ...] | None) -> int:
    total = 1
    for s in sizes:
        for v in s if isinstance(s, tuple) else (s,):
            total *= v if v is not None else 1
    return total


class Layer(BaseModel):
    """Base of every catalogue entry: strict (unknown fields are errors) and immutable.

    `modules` are the torch classes this entry stands for (matched exactly, never subclasses: a subclass may
    override forward). `unsupported` lists module attributes the entry cannot express, with the value they must
    have; a module with another value is refused rather than imported as something it is not.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    modules: ClassVar[tuple[type[nn.Module], ...]] = ()
    unsupported: ClassVar[dict[str, Any]] = {}
    #: The module returns a tensor of its input's shape and dtype (the shape rule of `output_shape`).
    keeps_shape: ClassVar[bool] = False
    if TYPE_CHECKING:
        # The discriminator: each concrete layer declares it as `Literal["<its name>"]` defaulting to that name.
        # Not a field here, so that the fields of every layer keep their order in dumps.
        type: str

    def build(self) -> nn.Module:
        raise NotImplementedError

    def input_range(self) -> tuple[int, int]:
        """How many inputs the layer reads (most read one)."""
        return (1, 1)

    def n_outputs(self) -> int:
        """1: the layer returns a tensor; n > 1: a tuple of n tensors, read through `getitem` nodes."""
        return 1

    def args(self) -> dict[str, Any]:
        """The constructor arguments, as the JSON the user wrote (defaults included)."""
        return self.model_dump(mode="json", exclude={"type"})

    def to_json(self) -> dict[str, Any]:
        """The spec as JSON with `type` first, as users write it."""
        return {"type": self.type, **self.args()}

    def label(self) -> str:
        """Short human form, e.g. `Linear(in_features=64, out_features=10)`, used in messages and DOT labels."""
        inner = ", ".join(f"{k}={v}" for k, v in self.args().items() if not isinstance(v, list | dict))
        return f"{self.type}({inner})"

    def init_identity(self, module: nn.Module, prev: Layer | None) -> None:
        """Set `module` (built from this spec, under `torch.no_grad`) so that it computes the identity when it
        reads the output of `prev` (None: a model input); IdentityError says why no weights do that."""
        raise IdentityError(f"{self.type} is not an identity function for any weights")

    def output_range(self) -> tuple[float, float] | None:
        """The interval every output lies in, when it is bounded by construction (so that an activation placed
        after this layer may pass everything through: `identity.pass_through_on`)."""
        return None

    @classmethod
    def output_shape(cls, module: nn.Module, shape: tuple[int, ...], dtype: torch.dtype) -> ShapeDtype | None:
        """The shape and dtype `module` (exactly one of `cls.modules`) returns for one floating tensor of `shape` and
        `dtype`, worked out by rule; None where there is no rule or torch would refuse the input (the fake-tensor
        run then decides, and names the error in torch's words). tests/unit/graph/test_shapes.py checks every rule
        against the fake-tensor result."""
        return (shape, dtype) if cls.keeps_shape else None

    @classmethod
    def read_module(cls, module: nn.Module) -> dict[str, Any]:
        """The spec fields of an existing module (read from its attributes, which nn modules keep)."""
        name = cls.model_fields["type"].default
        for attr, want in cls.unsupported.items():
            got = getattr(module, attr, want)
            if got != want:
                raise SpecError(f"{name} with {attr}={got!r} is not in the layer catalogue (only {attr}={want!r})")
        kwargs: dict[str, Any] = {}
        for field in cls.model_fields:
            if field == "type":
                continue
            if field == "bias" and isinstance(getattr(module, "bias", None), nn.Parameter | type(None)):
                kwargs["bias"] = getattr(module, "bias", None) is not None
            elif hasattr(module, field):
                kwargs[field] = getattr(module, field)
        return kwargs
