"""The BERT backbone: `keras_hub.models.BertBackbone` at a named size.

Example:

>>> from tfllm.models.backbone import BackboneConfig, build_backbone
>>> backbone = build_backbone(BackboneConfig(num_layers=1, hidden_dim=32, num_heads=2,
...                                          intermediate_dim=64), vocab_size=100)
>>> backbone.count_params() > 0
True
"""

from __future__ import annotations

from dataclasses import dataclass

SIZES = {
    "tiny": dict(num_layers=2, hidden_dim=128, num_heads=2, intermediate_dim=512),
    "mini": dict(num_layers=4, hidden_dim=256, num_heads=4, intermediate_dim=1024),
    "small": dict(num_layers=4, hidden_dim=512, num_heads=8, intermediate_dim=2048),
    "medium": dict(num_layers=8, hidden_dim=512, num_heads=8, intermediate_dim=2048),
    "base": dict(num_layers=12, hidden_dim=768, num_heads=12, intermediate_dim=3072),
    # all-MiniLM-L6-v2's shape: random init at this size is the fair baseline for it.
    "l6h384": dict(num_layers=6, hidden_dim=384, num_heads=12, intermediate_dim=1536),
}


@dataclass
class BackboneConfig:
    """Transformer dimensions (the named sizes are in `SIZES` and configs/pretrain/)."""

    num_layers: int = 2
    hidden_dim: int = 128
    num_heads: int = 2
    intermediate_dim: int = 512
    max_sequence_length: int = 512
    dropout: float = 0.1


def build_backbone(cfg: BackboneConfig, vocab_size: int, dtype: str | None = None):
    """A randomly initialised `keras_hub.models.BertBackbone`."""
    import keras_hub

    if cfg.hidden_dim % cfg.num_heads:
        raise ValueError(f"hidden_dim {cfg.hidden_dim} is not divisible by num_heads {cfg.num_heads}")
    return keras_hub.models.BertBackbone(
        vocabulary_size=vocab_size,
        num_layers=cfg.num_layers,
        num_heads=cfg.num_heads,
        hidden_dim=cfg.hidden_dim,
        intermediate_dim=cfg.intermediate_dim,
        dropout=cfg.dropout,
        max_sequence_length=cfg.max_sequence_length,
        dtype=dtype,
    )
