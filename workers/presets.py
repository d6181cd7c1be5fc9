"""SAM model presets: the architecture of each model size, with no torch in sight.

The command line, the config file and the edge read preset names from here without importing
torch; :mod:`pedsam.workers.models` builds the models.
"""

from __future__ import annotations

from dataclasses import dataclass

from pedsam.workers.errors import ModelError

__all__ = ["DEFAULT_SEED", "PRESETS", "RANDOM_WEIGHTS_NOTICE", "TRAINED_NOTICE", "ModelPreset", "get_preset"]

DEFAULT_SEED = 0

RANDOM_WEIGHTS_NOTICE = "UNTRAINED random weights: masks are not meaningful"

# What every output of pedsam-mini's shipped weights carries (overlay banner, web page, CLI note).
TRAINED_NOTICE = "pedsam-mini (small model trained on synthetic scenes)"


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelPreset:
    """The architecture of one SAM model: image encoder, prompt encoder and mask decoder."""

    name: str
    img_size: int = 1024
    patch_size: int = 16
    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_head_hidden_dim: int = 256
    official_checkpoint: str | None = None
    shipped: str | None = None  # weights in pedsam.workers.trained, used when no checkpoint is given
    prompt_prior: bool = False  # trained to read prompts also as a mask input (stream.core.predictor.prompt_prior)
    # A click's or a tracker's mask keeps only the prompted parts (stream.core.predictor.MaskDecoder).
    prompted_region: bool = False
    # The chosen mask's outline is fitted to the frame's colour edges (stream.core.edges).
    refine_edges: bool = False

    @property
    def grid_size(self) -> int:
        """Token grid side (tokens per row and per column), e.g. 64 for SAM at 1024 px."""
        return self.img_size // self.patch_size

    @property
    def windowed_blocks(self) -> tuple[int, ...]:
        return tuple(i for i in range(self.depth) if i not in self.global_attn_indexes)

    def segments(self) -> tuple[tuple[int, ...], ...]:
        """Maximal runs of consecutive windowed blocks, in order; segment ``i`` is entry ``i``."""
        runs: list[list[int]] = []
        previous = -2
        for block in self.windowed_blocks:
            if block == previous + 1 and runs:
                runs[-1].append(block)
            else:
                runs.append([block])
            previous = block
        return tuple(tuple(run) for run in runs)


PRESETS: dict[str, ModelPreset] = {
    "vit_b": ModelPreset(
        name="vit_b",
        embed_dim=768,
        depth=12,
        num_heads=12,
        global_attn_indexes=(2, 5, 8, 11),
        official_checkpoint="sam_vit_b_01ec64.pth",
    ),
    "vit_l": ModelPreset(
        name="vit_l",
        embed_dim=1024,
        depth=24,
        num_heads=16,
        global_attn_indexes=(5, 11, 17, 23),
        official_checkpoint="sam_vit_l_0b3195.pth",
    ),
    "vit_h": ModelPreset(
        name="vit_h",
        embed_dim=1280,
        depth=32,
        num_heads=16,
        global_attn_indexes=(7, 15, 23, 31),
        official_checkpoint="sam_vit_h_4b8939.pth",
    ),
    # SAM's architecture at a size tests can afford: a 32x32 token grid padded to 42x42 (9
    # windows, the last row and column of windows partly padding, as in ViT-B), two segments
    # of two windowed blocks and two global blocks.
    "tiny": ModelPreset(
        name="tiny",
        img_size=512,
        embed_dim=64,
        depth=6,
        num_heads=2,
        global_attn_indexes=(2, 5),
        prompt_embed_dim=64,
        decoder_mlp_dim=256,
        decoder_heads=4,
        iou_head_hidden_dim=64,
    ),
    # pedsam-mini: tiny's geometry (9 windows, two segments) a little wider, with weights trained
    # by samples/train_mini.py and shipped in the package (pedsam.workers.trained).
    "mini": ModelPreset(
        name="mini",
        img_size=512,
        embed_dim=96,
        depth=6,
        num_heads=3,
        global_attn_indexes=(2, 5),
        prompt_embed_dim=64,
        decoder_mlp_dim=256,
        decoder_heads=4,
        iou_head_hidden_dim=64,
        shipped="pedsam-mini.pth",
        prompt_prior=True,
        prompted_region=True,
        refine_edges=True,
    ),
}


def get_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelError(
            f"unknown model preset {name!r}; choose one of {', '.join(sorted(PRESETS))}"
        ) from None
