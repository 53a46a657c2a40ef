"""The embedded backbone's settings and the version of the planting recipe: read by the build, the cache checks and
the command line without importing torch (merginguriel.embedded.plant builds the weights)."""

from __future__ import annotations

from dataclasses import dataclass

from merginguriel.errors import InputError

PLANT_VERSION = "5"  # bump when the planted weights change: a cached backbone of another version is refused


@dataclass(frozen=True)
class BackboneSettings:
    """The embedded backbone's architecture and seed.

    Args:
        hidden_size: encoder width.
        num_layers: transformer layers.
        num_heads: attention heads (must divide hidden_size into heads of at least 4 dimensions, an even number).
        max_length: the longest input in tokens; max_position_embeddings is max_length + 2 as in XLM-R.
        seed: seed of the planted meaning space, the languages' distortions and the weights.
    """

    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    max_length: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads or (self.hidden_size // self.num_heads) % 2 or self.hidden_size // self.num_heads < 4:
            raise InputError(
                f"num_heads ({self.num_heads}) must split hidden_size ({self.hidden_size}) into heads of an even size "
                "of at least 4; e.g. --num_heads 4 --hidden_size 128"
            )
        if self.num_layers < 1 or self.max_length < 8:
            raise InputError(f"backbone settings out of range (num_layers {self.num_layers} >= 1, max_length {self.max_length} >= 8 required)")
