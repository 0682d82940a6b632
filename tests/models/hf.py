"""Hugging Face models of the families issue 23 names, from small random configs (no hub access), and small
models of our own with the constructs that failed before it (F.normalize, an input called `meta`, a permuted
output)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

TEXT = dict(vocab_size=100, max_position_embeddings=64)


def _seeded(cls: Any, config: Any) -> nn.Module:
    torch.manual_seed(0)
    model: nn.Module = cls(config).eval()
    return model


def gpt2() -> nn.Module:
    """GPT-2 with its default cache setting (the cache is dropped) and its LM head tied to the embedding."""
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=4, bos_token_id=0, eos_token_id=0)
    return _seeded(GPT2LMHeadModel, cfg)


def llama() -> nn.Module:
    """A Llama-style decoder with grouped-query attention (4 heads, 2 key/value heads) and rotary embeddings."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        **TEXT,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=False,
    )
    return _seeded(LlamaForCausalLM, cfg)


def mixtral() -> nn.Module:
    """A mixture-of-experts decoder (4 experts, 2 per token): its experts are computed as batched_mm."""
    from transformers import MixtralConfig, MixtralForCausalLM

    cfg = MixtralConfig(
        **TEXT,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_local_experts=4,
        num_experts_per_tok=2,
    )
    return _seeded(MixtralForCausalLM, cfg)


def qwen2() -> nn.Module:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(
        **TEXT, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
    )
    return _seeded(Qwen2ForCausalLM, cfg)


def albert() -> nn.Module:
    from transformers import AlbertConfig, AlbertForSequenceClassification

    cfg = AlbertConfig(
        **TEXT,
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=3,
    )
    return _seeded(AlbertForSequenceClassification, cfg)


def electra() -> nn.Module:
    from transformers import ElectraConfig, ElectraForSequenceClassification

    cfg = ElectraConfig(
        **TEXT,
        embedding_size=16,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=3,
    )
    return _seeded(ElectraForSequenceClassification, cfg)


def deberta() -> nn.Module:
    from transformers import DebertaV2Config, DebertaV2ForSequenceClassification

    cfg = DebertaV2Config(
        **TEXT,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=3,
        type_vocab_size=2,
    )
    return _seeded(DebertaV2ForSequenceClassification, cfg)


def t5_encoder() -> nn.Module:
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    return _seeded(T5EncoderModel, cfg)


def swin() -> nn.Module:
    from transformers import SwinConfig, SwinForImageClassification

    cfg = SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=4, num_labels=5
    )
    return _seeded(SwinForImageClassification, cfg)


def segformer() -> nn.Module:
    from transformers import SegformerConfig, SegformerForSemanticSegmentation

    cfg = SegformerConfig(
        num_encoder_blocks=2,
        depths=[1, 1],
        sr_ratios=[2, 1],
        hidden_sizes=[16, 32],
        patch_sizes=[7, 3],
        strides=[4, 2],
        num_attention_heads=[1, 2],
        mlp_ratios=[2, 2],
        decoder_hidden_size=32,
        num_labels=4,
    )
    return _seeded(SegformerForSemanticSegmentation, cfg)


def dinov2() -> nn.Module:
    from transformers import Dinov2Config, Dinov2ForImageClassification

    cfg = Dinov2Config(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        mlp_ratio=2,
        num_labels=5,
    )
    return _seeded(Dinov2ForImageClassification, cfg)


def mobilevit() -> nn.Module:
    from transformers import MobileViTConfig, MobileViTForImageClassification

    cfg = MobileViTConfig(
        image_size=32,
        hidden_sizes=[16, 24, 32],
        neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 32],
        num_attention_heads=2,
        num_labels=5,
    )
    return _seeded(MobileViTForImageClassification, cfg)


def wav2vec2() -> nn.Module:
    """wav2vec2: a convolutional feature extractor and a positional convolution with weight norm."""
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    cfg = Wav2Vec2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        conv_dim=(16, 16, 16),
        conv_stride=(5, 2, 2),
        conv_kernel=(10, 3, 3),
        num_conv_pos_embeddings=8,
        num_conv_pos_embedding_groups=4,
        num_labels=3,
        do_stable_layer_norm=False,
    )
    return _seeded(Wav2Vec2ForSequenceClassification, cfg)


class Normalized(nn.Module):
    """Embeddings compared by cosine: F.normalize (which lowered to aten.expand_as and was refused)."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(16, 32)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(F.normalize(self.proj(x), dim=-1))


class WithMeta(nn.Module):
    """Two inputs, one of them called `meta` (a name fx's GraphModule owns), and a submodule called `meta`."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Linear(12, 16)
        self.meta = nn.Sequential(nn.Linear(5, 16), nn.ReLU())
        self.head = nn.Linear(16, 3)

    def forward(self, image: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        return self.head(self.image(image) + self.meta(meta))


class Permuted(nn.Module):
    """An output that is a permutation (not contiguous): channels first from a sequence model."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 6)
        self.head = nn.Linear(6, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.proj(x)).permute(0, 2, 1)
