"""Transformer, recurrent and audio families, a two-input model with a dict of outputs, and Hugging Face models
from small random configs (no hub access)."""

from __future__ import annotations

import torch
from torch import nn


class ViT(nn.Module):
    """Patch conv, class token, position embedding, pre-norm encoder layers, a head on the class token."""

    def __init__(
        self, image: int = 32, patch: int = 8, dim: int = 32, depth: int = 2, heads: int = 4, classes: int = 10
    ) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        n = (image // patch) ** 2
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
        self.pos_embed = nn.Parameter(torch.randn(1, n + 1, dim) * 0.02)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(
                dim, heads, 2 * dim, dropout=0.1, activation="gelu", batch_first=True, norm_first=True
            ),
            depth,
            enable_nested_tensor=False,
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + self.pos_embed
        x = self.norm(self.encoder(x))
        return self.head(x[:, 0])


class RNNClassifier(nn.Module):
    def __init__(self, kind: str = "lstm", vocab: int = 50, dim: int = 16, hidden: int = 24, classes: int = 3) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, dim, padding_idx=0)
        rnn = nn.LSTM if kind == "lstm" else nn.GRU
        self.rnn = rnn(dim, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(0.3)
        self.fc = nn.Linear(4 * hidden, classes)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.rnn(self.embedding(ids))
        pooled = torch.cat([out.mean(1), out.amax(1)], dim=1)
        return self.fc(self.dropout(pooled))


class AudioCNN(nn.Module):
    """A 1-D CNN over frames of features (batch, mel bins, frames); frames may vary."""

    def __init__(self, mels: int = 16, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(mels, 32, 5, padding=2)
        self.bn1 = nn.BatchNorm1d(32)
        self.pool = nn.MaxPool1d(2)
        self.conv2 = nn.Conv1d(32, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm1d(32)
        self.act = nn.ELU()
        self.gap = nn.AdaptiveAvgPool1d(1)
        self.fc = nn.Linear(32, classes)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.act(self.bn1(self.conv1(frames))))
        x = self.act(self.bn2(self.conv2(x)))
        return self.fc(self.gap(x).squeeze(-1))


class TwoTower(nn.Module):
    """An image and a feature vector in; a dict of two outputs (dict keys become output names)."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.meta = nn.Sequential(nn.Linear(6, 8), nn.Tanh())
        self.score_head = nn.Linear(16, 1)
        self.label_head = nn.Linear(16, 4)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.cat([self.image(image), self.meta(features)], dim=1)
        return {"score": torch.sigmoid(self.score_head(h)), "label": self.label_head(h).softmax(-1)}


def hf_bert() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=3,
    )
    torch.manual_seed(0)
    return BertForSequenceClassification(cfg).eval()


def hf_vit() -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(
        image_size=32,
        patch_size=8,
        num_channels=3,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        num_labels=5,
    )
    torch.manual_seed(0)
    return ViTForImageClassification(cfg).eval()
