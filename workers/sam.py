"""segment_anything's model classes, imported without running the package's ``__init__``.

``import segment_anything`` runs its ``__init__``, which imports the predictor and the automatic
mask generator, and through them torchvision, which pulls in ``torch._dynamo``: about a second
of every process's start here, for code pedsam does not use. The model classes live in
``segment_anything.modeling``, which needs only torch.

Importing this module registers the ``segment_anything`` package in ``sys.modules`` without
executing its ``__init__`` (when nothing has imported it yet), then imports
``segment_anything.modeling``. The package completes itself when anyone asks it for a name it
does not have yet (``from segment_anything import SamPredictor``): its real ``__init__`` runs
then, so code that wants the whole package still gets it.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
from typing import Any

__all__ = ["Attention", "Block", "ImageEncoderViT", "MaskDecoder", "PromptEncoder", "Sam", "TwoWayTransformer",
           "get_rel_pos"]

_lock = threading.Lock()


def _register_without_init() -> None:
    if "segment_anything" in sys.modules:
        return
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or spec.loader is None or spec.submodule_search_locations is None:
        raise ImportError("segment_anything is not installed")
    package = importlib.util.module_from_spec(spec)
    loader = spec.loader
    completed = False

    def complete(name: str) -> Any:
        """Run the package's real ``__init__`` once, then answer as the package would."""
        nonlocal completed
        with _lock:
            if not completed:
                completed = True
                loader.exec_module(package)
        try:
            return package.__dict__[name]
        except KeyError:
            raise AttributeError(f"module 'segment_anything' has no attribute {name!r}") from None

    package.__getattr__ = complete  # type: ignore[method-assign]
    sys.modules["segment_anything"] = package


_register_without_init()

from segment_anything.modeling import (  # noqa: E402  (after the registration above, on purpose)
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)
from segment_anything.modeling.image_encoder import Attention, Block, get_rel_pos  # noqa: E402
