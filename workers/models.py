"""SAM model presets, seeded random weights, checkpoint loading and model fingerprints.

The builder returns a standard :class:`segment_anything.modeling.Sam`, so the reference
implementation is always one call away. The edge and the workers build the same model from
the same (preset, checkpoint, seed); the fingerprint of the windowed blocks lets a worker
refuse an edge that expects other weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from pedsam.workers.errors import CheckpointError, ModelError

DEFAULT_SEED = 0


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
}


def get_preset(name: str) -> ModelPreset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ModelError(
            f"unknown model preset {name!r}; choose one of {', '.join(sorted(PRESETS))}"
        ) from None


def _build_architecture(preset: ModelPreset) -> Sam:
    grid = preset.grid_size
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=preset.depth,
            embed_dim=preset.embed_dim,
            img_size=preset.img_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=preset.num_heads,
            patch_size=preset.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=preset.global_attn_indexes,
            window_size=preset.window_size,
            out_chans=preset.prompt_embed_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=preset.prompt_embed_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(preset.img_size, preset.img_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2,
                embedding_dim=preset.prompt_embed_dim,
                mlp_dim=preset.decoder_mlp_dim,
                num_heads=preset.decoder_heads,
            ),
            transformer_dim=preset.prompt_embed_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=preset.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def _randomize(sam: Sam, seed: int) -> None:
    """Give every parameter seeded random values, including the ones SAM initialises to
    constants (position embeddings, relative-position tables, norm scales), so that equivalence
    tests exercise every term."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sam.named_parameters():
            if param.dim() >= 2 and "rel_pos" not in name and "pos_embed" not in name:
                fan_in = param[0].numel()
                bound = (1.0 / fan_in) ** 0.5
                param.uniform_(-bound, bound, generator=gen)
            elif name.endswith("weight") and param.dim() == 1:  # norm scales
                param.normal_(1.0, 0.1, generator=gen)
            else:  # biases, position embeddings, relative-position tables
                param.normal_(0.0, 0.02 if "pos" in name else 0.1, generator=gen)


def build_sam(
    preset: str | ModelPreset,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    seed: int = DEFAULT_SEED,
) -> Sam:
    """Build a SAM model in eval mode on the CPU.

    With ``checkpoint`` the weights come from that file (an official SAM ``.pth`` state dict);
    otherwise from a generator seeded with ``seed``, identical across processes and machines
    for the same torch version.
    """
    spec = get_preset(preset) if isinstance(preset, str) else preset
    # Some of SAM's state is drawn from torch's global generator at construction (the prompt
    # encoder's random Fourier features are a buffer, not a parameter): seed it too, without
    # disturbing the caller's generator, so edge, workers and references build the same model.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = _build_architecture(spec)
    if checkpoint is None:
        _randomize(sam, seed)
    else:
        load_checkpoint(sam, checkpoint, preset_name=spec.name)
    sam.eval()
    sam.requires_grad_(False)
    return sam


def load_checkpoint(sam: Sam, path: str | os.PathLike[str], *, preset_name: str = "") -> None:
    """Load a SAM state dict into ``sam``, naming what is wrong with a file that does not fit."""
    file = Path(path)
    label = f"checkpoint {str(file)!r}"
    if not file.is_file():
        raise CheckpointError(f"{label} does not exist or is not a file")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"{label} is not a readable torch state dict ({reason[:120]})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{label} does not hold a state dict of tensors")
    expected = sam.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        (k, tuple(state[k].shape), tuple(expected[k].shape))
        for k in expected
        if k in state and state[k].shape != expected[k].shape
    ]
    for_preset = f" for preset {preset_name}" if preset_name else ""
    if wrong:
        key, got, want = wrong[0]
        raise CheckpointError(
            f"{label} does not fit{for_preset}: {key} has shape {got}, expected {want}"
            f" ({len(wrong)} tensors differ; is it a checkpoint of another model size?)"
        )
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first: {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first: {unexpected[0]})")
        raise CheckpointError(f"{label} does not fit{for_preset}: keys {'; '.join(parts)}")
    sam.load_state_dict(state)


def fingerprint(sam: Sam, preset: ModelPreset) -> str:
    """SHA-256 (hex) over the preset's encoder geometry and the weights a worker computes with:
    the windowed blocks whole, and the per-token layers of the global blocks (everything but
    their relative-position tables), which the offload plan runs on workers.

    It covers exactly what a worker computes with, so edge and worker agree on it when and only
    when a worker's results are valid for the edge.
    """
    digest = hashlib.sha256()
    geometry = {
        "img_size": preset.img_size,
        "patch_size": preset.patch_size,
        "embed_dim": preset.embed_dim,
        "num_heads": preset.num_heads,
        "window_size": preset.window_size,
        "segments": preset.segments(),
        "global_blocks": preset.global_attn_indexes,
    }
    digest.update(json.dumps(geometry, sort_keys=True).encode())
    blocks = sam.image_encoder.blocks
    for index in range(preset.depth):
        windowed = index in preset.windowed_blocks
        for name, tensor in sorted(blocks[index].state_dict().items()):
            if not windowed and "rel_pos" in name:
                continue
            array = tensor.detach().to(torch.float32).contiguous().numpy()
            digest.update(f"{index}.{name}:{tuple(array.shape)}".encode())
            digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


@dataclass(frozen=True, kw_only=True, slots=True)
class ModelSource:
    """Where a model's weights come from; the same value on edge and workers gives the same model."""

    preset: str
    checkpoint: str | None = None
    seed: int = DEFAULT_SEED

    @property
    def random_weights(self) -> bool:
        return self.checkpoint is None

    def build(self) -> Sam:
        return build_sam(self.preset, checkpoint=self.checkpoint, seed=self.seed)

    def describe(self) -> str:
        if self.checkpoint is None:
            return f"{self.preset} with UNTRAINED seeded random weights (seed {self.seed})"
        return f"{self.preset} from {Path(self.checkpoint).name}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


RANDOM_WEIGHTS_NOTICE = "UNTRAINED random weights: masks are not meaningful"

