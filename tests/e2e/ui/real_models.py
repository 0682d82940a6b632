"""Real architectures for the page's layout tests and screenshots, small enough to import in seconds: `morphserve
import tests.e2e.ui.real_models:NAME` captures each as a user would (Hugging Face models are built from configs,
offline). `MODELS` says how each is imported and what its layout must show.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from tests.models import vision as V

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def distilbert() -> nn.Module:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    cfg = DistilBertConfig(
        vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64, max_position_embeddings=64, num_labels=3
    )
    torch.manual_seed(0)
    return DistilBertForSequenceClassification(cfg).eval()


def gpt2() -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64, use_cache=False)
    torch.manual_seed(0)
    return GPT2LMHeadModel(cfg).eval()


def resnet50() -> nn.Module:
    torch.manual_seed(0)
    return V.resnet50(16).eval()


def unet() -> nn.Module:
    torch.manual_seed(0)
    return V.UNet().eval()


@dataclass(frozen=True)
class RealModel:
    inputs: list[str]
    #: groups that follow one another in execution order: each is drawn above (or left of) the next
    sequence: tuple[str, ...]
    #: an identity layer inserted after `producer` (and read by `consumer`) is drawn between the two
    producer: str
    consumer: str
    layer: dict[str, Any]
    #: nodes that read the same input, in execution order: drawn left to right in one row
    siblings: tuple[str, ...] = ()


MODELS: dict[str, RealModel] = {
    "distilbert": RealModel(
        ["input_ids:INT64:-1,-1"],
        ("distilbert.embeddings", "distilbert.transformer.layer.0", "distilbert.transformer.layer.1"),
        "distilbert_transformer_layer_0_output_layer_norm",
        "distilbert_transformer_layer_1_attention_q_lin",
        {"type": "Linear", "in_features": 32, "out_features": 32},
        siblings=(
            "distilbert_transformer_layer_0_attention_q_lin",
            "distilbert_transformer_layer_0_attention_k_lin",
            "distilbert_transformer_layer_0_attention_v_lin",
        ),
    ),
    "resnet50": RealModel(
        ["input:FP32:-1,3,64,64"],
        ("layer1", "layer2", "layer3", "layer4"),
        "layer1_2_relu_3",
        "layer2_0_conv1",
        {"type": "Conv2d", "in_channels": 64, "out_channels": 64, "kernel_size": 3, "padding": 1},
    ),
    "gpt2": RealModel(
        ["input_ids:INT64:-1,-1"],
        ("transformer.h.0", "transformer.h.1"),
        "transformer_h_0_mlp_dropout",
        "transformer_h_0_add_1",  # the block's residual add reads the MLP's output
        {"type": "Linear", "in_features": 32, "out_features": 32},
    ),
    "unet": RealModel(
        ["input:FP32:-1,3,32,32"],
        ("inc", "down1", "down2", "conv1", "conv2"),
        "inc_5",
        "max_pool2d_with_indices",
        {"type": "Conv2d", "in_channels": 8, "out_channels": 8, "kernel_size": 3, "padding": 1},
    ),
}
