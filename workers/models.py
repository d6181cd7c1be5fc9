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
import textwrap
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from pedsam.workers.sam import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from pedsam.workers.errors import CheckpointError
from pedsam.workers.presets import (
    DEFAULT_SEED,
    PRESETS,
    RANDOM_WEIGHTS_NOTICE,
    TRAINED_NOTICE,
    ModelPreset,
    get_preset,
)

__all__ = [
    "DEFAULT_SEED", "PRESETS", "RANDOM_WEIGHTS_NOTICE", "TRAINED_NOTICE", "ModelPreset", "ModelSource", "build_sam",
    "fingerprint", "get_preset", "infer_preset", "load_checkpoint", "trainable_sam",
]


class _SkipInit(TorchFunctionMode):
    """Skips every in-place tensor operation (``normal_``, ``uniform_``, ``zero_``...) while
    modules are built: their weights are then whatever ``torch.empty`` gave, as after
    ``to_empty``, at no cost.

    Not the ``meta`` device: its tensors' ``normal_`` and ``empty_like`` run Python reference
    kernels whose first calls import ``torch._dynamo`` and ``sympy``, about two and a half
    seconds of every worker's and edge's start on this CPU.
    """

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        target = args[0] if args else kwargs.get("tensor")  # torch.nn.init passes it by name
        if (name.endswith("_") and not name.startswith("_") and name != "requires_grad_"
                and isinstance(target, torch.Tensor)):
            return target
        return func(*args, **kwargs)


def _build_architecture(preset: ModelPreset, *, initialised: bool = False) -> Sam:
    """SAM's modules for ``preset`` with uninitialised weights, cheaply (with ``initialised``:
    with their constructors' own initialisation, as training starts from).

    The image encoder and the mask decoder (nearly every weight) are built without their
    constructors' initialisation (:class:`_SkipInit`): their weights come next from a checkpoint
    or the seeded generator, so that random initialisation would be thrown away (for ViT-B it
    took longer than loading the checkpoint). The prompt encoder is built for real: its random
    Fourier features are a buffer drawn at construction.
    """
    grid = preset.grid_size
    with nullcontext() if initialised else _SkipInit():
        image_encoder = ImageEncoderViT(
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
        )
        mask_decoder = MaskDecoder(
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
        )
    prompt_encoder = PromptEncoder(
        embed_dim=preset.prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(preset.img_size, preset.img_size),
        mask_in_chans=16,
    )
    return Sam(
        image_encoder=image_encoder,
        prompt_encoder=prompt_encoder,
        mask_decoder=mask_decoder,
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


def trainable_sam(preset: str | ModelPreset, *, seed: int = DEFAULT_SEED) -> Sam:
    """SAM's modules for ``preset`` initialised as SAM's own constructors do (PyTorch's defaults,
    zero position embeddings and relative-position tables), from ``seed``; in train mode."""
    spec = get_preset(preset) if isinstance(preset, str) else preset
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sam = _build_architecture(spec, initialised=True)
    sam.train()
    return sam


def build_sam(
    preset: str | ModelPreset,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    seed: int = DEFAULT_SEED,
    shipped: bool = True,
) -> Sam:
    """Build a SAM model in eval mode on the CPU.

    With ``checkpoint`` the weights come from that file (an official SAM ``.pth`` state dict,
    memory-mapped: pages are read when first used); otherwise from the preset's shipped weights
    when it has some (pedsam-mini) and ``shipped`` is true; otherwise from a generator seeded
    with ``seed``, identical across processes and machines for the same torch version.
    """
    spec = get_preset(preset) if isinstance(preset, str) else preset
    if checkpoint is None and shipped and spec.shipped is not None:
        from pedsam.workers.shipped import shipped_path

        checkpoint = shipped_path(spec.name)
    # The prompt encoder's random Fourier features are drawn from torch's global generator at
    # construction: seed it, without disturbing the caller's, so edge, workers and references
    # build the same model.
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


def read_state(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The state dict of a SAM checkpoint file, memory-mapped where the file allows it.

    Raises:
        CheckpointError: missing, unreadable, or not a state dict of tensors.
    """
    file = Path(path)
    label = f"checkpoint {str(file)!r}"
    if not file.is_file():
        raise CheckpointError(f"{label} does not exist or is not a file")
    try:
        try:
            state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # an old-format (non-zip) file cannot be mapped
            if "mmap" not in str(exc):
                raise
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        reason = textwrap.shorten(reason, 160, placeholder=" ...")  # whole words only
        raise CheckpointError(f"{label} is not a readable torch state dict ({reason})") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{label} does not hold a state dict of tensors")
    return state


def infer_preset(path: str | os.PathLike[str]) -> str:
    """The preset whose architecture a checkpoint file has (from its tensors' shapes).

    Raises:
        CheckpointError: unreadable, or no preset has this architecture.
    """
    state = read_state(path)
    embed = state.get("image_encoder.patch_embed.proj.weight")
    depth = len({key.split(".")[2] for key in state if key.startswith("image_encoder.blocks.")})
    for name, spec in PRESETS.items():
        if embed is not None and tuple(embed.shape) == (spec.embed_dim, 3, spec.patch_size, spec.patch_size) \
                and depth == spec.depth and _img_size(state) == spec.img_size:
            return name
    raise CheckpointError(
        f"checkpoint {str(path)!r} fits none of the presets {', '.join(sorted(PRESETS))}; "
        "is it a SAM checkpoint?"
    )


def _img_size(state: dict[str, torch.Tensor]) -> int | None:
    pos = state.get("image_encoder.pos_embed")
    embed = state.get("image_encoder.patch_embed.proj.weight")
    if pos is None or embed is None or pos.dim() != 4:
        return None
    return int(pos.shape[1]) * int(embed.shape[-1])


def load_checkpoint(sam: Sam, path: str | os.PathLike[str], *, preset_name: str = "") -> None:
    """Load a SAM state dict into ``sam``, naming what is wrong with a file that does not fit."""
    label = f"checkpoint {str(Path(path))!r}"
    state = read_state(path)
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
    # assign: the module takes the (memory-mapped) tensors themselves, no copy into fresh storage
    sam.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()}, assign=True)


def fingerprint(sam: Sam, preset: ModelPreset) -> str:
    """SHA-256 (hex) over the preset's encoder geometry and the weights a worker computes with:
    the windowed blocks whole, and the per-token layers of the global blocks (everything but
    their relative-position tables), which the offload plan runs on workers.

    It covers exactly what a worker computes with, so edge and worker agree on it when and only
    when a worker's results are valid for the edge. It does not depend on where the model
    computes: the weights are hashed as float32 host bytes whatever their device (the edge and
    the worker compute it before moving their blocks to a GPU), and ``--compute-dtype`` is not
    part of it (a worker reports that in ``Describe``).
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
            array = tensor.detach().to("cpu", torch.float32).contiguous().numpy()
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
        return self.checkpoint is None and get_preset(self.preset).shipped is None

    @property
    def shipped_weights(self) -> bool:
        """The weights pedsam ships for this preset (pedsam-mini), not a file the user gave."""
        return self.checkpoint is None and get_preset(self.preset).shipped is not None

    @property
    def banner(self) -> str | None:
        """The line every output a person sees carries (overlay, web page, CLI note), or None
        for a checkpoint the user gave."""
        if self.random_weights:
            return RANDOM_WEIGHTS_NOTICE
        return TRAINED_NOTICE if self.shipped_weights else None

    def build(self) -> Sam:
        return build_sam(self.preset, checkpoint=self.checkpoint, seed=self.seed)

    def describe(self) -> str:
        if self.shipped_weights:
            return f"{self.preset}: {TRAINED_NOTICE}"
        if self.checkpoint is None:
            return f"{self.preset} with UNTRAINED seeded random weights (seed {self.seed})"
        return f"{self.preset} from {Path(self.checkpoint).name}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)



