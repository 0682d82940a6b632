"""The families the import tests run, with what each test needs to know about the model."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch import nn

from . import hf as H
from . import sequence as S
from . import vision as V

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the Hugging Face models are built from configs, never downloaded


@dataclass(frozen=True)
class Family:
    build: Callable[[], nn.Module]
    inputs: list[str]
    layers: tuple[str, ...]  # layer node ids the graph must list (module paths, dots -> underscores)
    head: str  # the classifier layer a test replaces with fresh weights
    insert_after: str  # where an identity layer goes
    identity: dict[str, Any]  # the layer inserted there with init "identity"
    parameters: tuple[str, ...] = ()  # parameter nodes the graph must have
    slow: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


def _lin(n: int) -> dict[str, Any]:
    return {"type": "Linear", "in_features": n, "out_features": n}


def _conv(c: int) -> dict[str, Any]:
    return {"type": "Conv2d", "in_channels": c, "out_channels": c, "kernel_size": 3, "padding": 1}


IMG = ["input:FP32:-1,3,32,32"]
FAMILIES: dict[str, Family] = {
    "resnet18": Family(
        V.resnet18,
        IMG,
        ("conv1", "layer1_0_conv1", "layer4_1_conv2", "layer2_0_downsample_0", "fc"),
        "fc",
        "layer1_0_conv1",
        {"type": "BatchNorm2d", "num_features": 16},
    ),
    "resnet50": Family(
        V.resnet50,
        ["input:FP32:-1,3,64,64"],
        ("layer4_2_conv3", "layer3_5_bn2", "fc"),
        "fc",
        "layer2_0_conv1",
        {"type": "Conv2d", "in_channels": 128, "out_channels": 128, "kernel_size": 1},
        slow=True,
    ),
    "vgg11_bn": Family(
        V.vgg11_bn,
        IMG,
        ("features_0", "features_1", "classifier_0", "classifier_3"),
        "classifier_3",
        "features_2",
        _conv(16),
    ),
    "mobilenet_v2": Family(
        V.MobileNetV2,
        IMG,
        ("features_0_0", "features_2_conv_3", "classifier_1"),
        "classifier_1",
        "features_2_conv_2",
        {"type": "ReLU6"},
    ),
    "mobilenet_v3_small": Family(
        V.MobileNetV3Small,
        IMG,
        ("features_1_block_3_fc1", "features_4_block_2", "classifier_3"),
        "classifier_3",
        "features_0_2",
        {"type": "BatchNorm2d", "num_features": 8},
    ),
    "efficientnet_b0": Family(
        V.EfficientNet,
        IMG,
        ("features_1_se_fc1", "features_2_depthwise_0", "classifier_1"),
        "classifier_1",
        "features_0_2",
        {"type": "PReLU", "num_parameters": 8},
    ),
    "densenet": Family(
        V.DenseNet, IMG, ("blocks_0_0_conv1", "transitions_0_3", "classifier"), "classifier", "stem_2", _conv(16)
    ),
    "convnext": Family(
        V.ConvNeXt,
        IMG,
        ("stem_0", "stages_0_0_dwconv", "stages_1_1", "head"),
        "head",
        "stages_0_0_pwconv1",
        {"type": "Linear", "in_features": 64, "out_features": 64},
        parameters=("stages_0_0_gamma",),
    ),
    "unet": Family(V.UNet, IMG, ("inc_0", "up1", "conv2_3", "outc"), "outc", "inc_2", _conv(8)),
    "vit": Family(
        S.ViT,
        IMG,
        ("patch_embed", "encoder_layers_0", "encoder_layers_1", "head"),
        "head",
        "encoder_layers_0",
        {
            "type": "TransformerEncoderLayer",
            "d_model": 32,
            "nhead": 4,
            "dim_feedforward": 64,
            "batch_first": True,
            "norm_first": True,
        },
        parameters=("cls_token", "pos_embed"),
    ),
    "lstm": Family(
        lambda: S.RNNClassifier("lstm"), ["ids:INT64:-1,-1"], ("embedding", "rnn", "fc"), "fc", "embedding", _lin(16)
    ),
    "gru": Family(
        lambda: S.RNNClassifier("gru"), ["ids:INT64:-1,-1"], ("embedding", "rnn", "fc"), "fc", "rnn_out0", _lin(48)
    ),
    "audio_cnn": Family(
        S.AudioCNN,
        ["frames:FP32:-1,16,-1"],
        ("conv1", "bn1", "pool", "act_1", "act_2", "fc"),
        "fc",
        "bn1",
        {"type": "BatchNorm1d", "num_features": 32},
    ),
    "two_inputs": Family(
        S.TwoTower,
        ["image:FP32:-1,3,16,16", "features:FP32:-1,6"],
        ("image_0", "meta_0", "label_head"),
        "label_head",
        "meta_1",
        {"type": "Hardtanh"},
        extra={"outputs": ["score", "label"]},
    ),
    "hf_bert": Family(
        S.hf_bert,
        ["input_ids:INT64:-1,-1"],
        (
            "bert_embeddings_word_embeddings",
            "bert_encoder_layer_0_attention_self_query",
            "bert_encoder_layer_1_output_LayerNorm",
            "classifier",
        ),
        "classifier",
        "bert_pooler_dense",
        _lin(32),
        parameters=("bert_embeddings_position_ids",),
        extra={"outputs": ["logits"], "vocab": 100},
    ),
    "hf_vit": Family(
        S.hf_vit,
        ["pixel_values:FP32:-1,3,32,32"],
        (
            "vit_embeddings_patch_embeddings_projection",
            "vit_layers_0_attention_q_proj",
            "vit_layers_1_mlp_fc2",
            "classifier",
        ),
        "classifier",
        "vit_layernorm",
        _lin(32),
        parameters=("vit_embeddings_cls_token", "vit_embeddings_position_embeddings"),
        extra={"outputs": ["logits"]},
    ),
    # -- issue 23: the Hugging Face families that failed before Core ATen, and constructs of our own -------------
    "gpt2": Family(
        H.gpt2,
        ["input_ids:INT64:-1,-1"],
        ("transformer_wpe", "transformer_h_0_attn_c_attn", "transformer_h_1_mlp_c_proj", "transformer_ln_f"),
        "transformer_h_1_mlp_c_proj",
        "transformer_h_0_attn_c_proj",
        _lin(32),
        parameters=("lm_head_weight",),  # tied: the embedding and the head read this one tensor
        extra={"outputs": ["logits"], "vocab": 100, "lengths": (24, 9)},
    ),
    "llama": Family(
        H.llama,
        ["input_ids:INT64:-1,-1"],
        ("model_embed_tokens", "model_layers_0_self_attn_q_proj", "model_layers_1_mlp_down_proj", "lm_head"),
        "lm_head",
        "model_layers_0_self_attn_o_proj",
        _lin(32),
        parameters=("model_norm_weight",),
        extra={"outputs": ["logits"], "vocab": 100, "lengths": (24, 9)},
    ),
    "qwen2": Family(
        H.qwen2,
        ["input_ids:INT64:-1,-1"],
        ("model_embed_tokens", "model_layers_1_self_attn_k_proj", "model_layers_1_mlp_up_proj"),
        "model_layers_1_mlp_down_proj",
        "model_layers_0_self_attn_o_proj",
        _lin(32),
        extra={"outputs": ["logits"], "vocab": 100, "lengths": (24, 9)},
    ),
    "mixtral": Family(
        H.mixtral,
        ["input_ids:INT64:-1,-1"],
        ("model_embed_tokens", "model_layers_0_self_attn_q_proj", "lm_head"),
        "lm_head",
        "model_layers_0_self_attn_o_proj",
        _lin(32),
        extra={"outputs": ["logits"], "vocab": 100, "lengths": (24, 9)},
    ),
    "albert": Family(
        H.albert,
        ["input_ids:INT64:-1,-1"],
        ("albert_embeddings_word_embeddings", "albert_encoder_embedding_hidden_mapping_in", "albert_pooler"),
        "classifier",
        "albert_pooler",
        _lin(32),
        parameters=("albert_embeddings_token_type_ids",),
        extra={"outputs": ["logits"], "vocab": 100, "lengths": (24, 9)},
    ),
    "electra": Family(
        H.electra,
        ["input_ids:INT64:-1,-1"],
        ("electra_embeddings_project", "electra_encoder_layer_1_output_dense", "classifier_out_proj"),
        "classifier_out_proj",
        "classifier_dense",
        _lin(32),
        parameters=("electra_embeddings_token_type_ids",),
        extra={"outputs": ["logits"], "vocab": 100, "lengths": (24, 9)},
    ),
    "deberta": Family(
        H.deberta,
        ["input_ids:INT64:-1,-1"],
        ("deberta_embeddings_word_embeddings", "deberta_encoder_layer_0_attention_self_query_proj", "pooler_dense"),
        "classifier",
        "pooler_dense",
        _lin(32),
        extra={"outputs": ["logits"], "vocab": 100, "lengths": (24, 9)},
    ),
    "t5_encoder": Family(
        H.t5_encoder,
        ["input_ids:INT64:-1,-1"],
        ("encoder_block_0_layer_0_SelfAttention_q", "encoder_block_1_layer_1_DenseReluDense_wo"),
        "encoder_block_1_layer_1_DenseReluDense_wo",
        "encoder_block_0_layer_0_SelfAttention_o",
        _lin(32),
        parameters=("encoder_final_layer_norm_weight",),
        extra={"outputs": ["last_hidden_state"], "vocab": 100, "lengths": (24, 9)},
    ),
    "swin": Family(
        H.swin,
        ["pixel_values:FP32:-1,3,32,32"],
        (
            "swin_embeddings_patch_embeddings_projection",
            "swin_encoder_layers_0_blocks_0_attention_q_proj",
            "classifier",
        ),
        "classifier",
        "swin_encoder_layers_1_blocks_0_mlp_fc2",
        _lin(32),
        extra={"outputs": ["logits"]},
    ),
    "segformer": Family(
        H.segformer,
        ["pixel_values:FP32:-1,3,32,32"],
        ("segformer_stages_0_patch_embeddings_proj", "decode_head_linear_fuse", "decode_head_classifier"),
        "decode_head_classifier",
        "decode_head_activation",
        _conv(32),
        extra={"outputs": ["logits"]},
    ),
    "dinov2": Family(
        H.dinov2,
        ["pixel_values:FP32:-1,3,32,32"],
        ("dinov2_embeddings_patch_embeddings_projection", "dinov2_encoder_layer_1_mlp_fc2", "classifier"),
        "classifier",
        "dinov2_encoder_layer_0_mlp_fc2",
        _lin(32),
        parameters=("dinov2_embeddings_cls_token", "dinov2_embeddings_position_embeddings"),
        extra={"outputs": ["logits"]},
    ),
    "mobilevit": Family(
        H.mobilevit,
        ["pixel_values:FP32:-1,3,32,32"],
        ("mobilevit_conv_stem_convolution", "mobilevit_conv_stem_normalization", "classifier"),
        "classifier",
        "mobilevit_conv_stem_normalization",
        {"type": "BatchNorm2d", "num_features": 8},
        extra={"outputs": ["logits"]},
    ),
    "wav2vec2": Family(
        H.wav2vec2,
        ["input_values:FP32:-1,-1"],
        ("wav2vec2_feature_extractor_conv_layers_0_conv", "wav2vec2_encoder_layers_1_attention_q_proj", "classifier"),
        "classifier",
        "wav2vec2_encoder_layers_0_attention_out_proj",
        _lin(32),
        extra={"outputs": ["logits"], "lengths": (400, 250)},
    ),
    "normalize": Family(H.Normalized, ["x:FP32:-1,16"], ("proj", "head"), "head", "proj", _lin(32)),
    "with_meta": Family(
        H.WithMeta,
        ["image:FP32:-1,12", "meta:FP32:-1,5"],
        ("image_1", "meta_0", "head"),  # the module `image` shares its name with the input: the layer is image_1
        "head",
        "image_1",
        _lin(16),
    ),
    "permuted": Family(H.Permuted, ["x:FP32:-1,-1,8"], ("proj", "head"), "head", "proj", _lin(6)),
}


#: The families a developer's quick run (`-m "not slow"`) imports, one for each kind of graph capture meets: a
#: residual CNN with batch norm, a transformer, a recurrent net (tuple-valued nodes, integer inputs), two inputs, a
#: Hugging Face model (attention masks), a 1-D CNN over a variable length, a decoder LM (causal masks, a tied head,
#: a cache turned off) and an input called `meta`. Capturing a model takes 0.5-4 s
#: (torch.export), so the rest of the matrix is marked slow: CI runs every family.
QUICK = ("resnet18", "vit", "lstm", "two_inputs", "hf_bert", "audio_cnn", "gpt2", "with_meta")


def params(names: list[str] | None = None, quick: tuple[str, ...] = QUICK) -> list[Any]:
    """`names` (default: all) as pytest parameters, the ones outside `quick` (and the slow ones) marked slow."""
    names = list(FAMILIES) if names is None else names
    return [n if n in quick and not FAMILIES[n].slow else pytest.param(n, marks=pytest.mark.slow) for n in names]


def example(family: Family, batch: int, seed: int = 0, length: int | None = None) -> tuple[torch.Tensor, ...]:
    """Inputs at `batch` rows; variable dims get a length other than the capture's (32), to test they vary: the
    family's first `lengths` entry (24 unless it needs more), or `length`."""
    g = torch.Generator().manual_seed(seed)
    size = length if length is not None else family.extra.get("lengths", (24,))[0]
    out = []
    for text in family.inputs:
        _, dtype, shape = text.split(":")
        dims = [batch if i == 0 else (size if d == "-1" else int(d)) for i, d in enumerate(shape.split(","))]
        if dtype == "INT64":
            out.append(torch.randint(1, family.extra.get("vocab", 50), dims, generator=g))
        else:
            out.append(torch.randn(dims, generator=g))
    return tuple(out)
