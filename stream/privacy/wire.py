"""What crossed the wire: first-segment tokens through the edge's wire codec, as a worker decodes them.

The edge sends a worker its windows' tokens as ``(N, C)`` rows encoded with
:func:`pedsam.workers.codec.encode` (``--codec``: ``fp32`` exact, ``fp16``, or ``int8`` with one
float32 scale per token). Every codec works token by token, so passing the whole grid through it
gives each window's tokens bit for bit as they travel. The lossless stage after the codec
(``--compression``) does not change a value, so it plays no part here.

The attacker also knows how good each token is: int8 carries its scale (the quantisation step),
fp16 its magnitude. :func:`through_wire` returns that as the expected error of each decoded value,
which the mosaic uses to keep the best view of a scene pixel.
"""

from __future__ import annotations

import numpy as np
import torch

from pedsam.protos import pedsam_pb2 as pb
from pedsam.workers import codec as wire

__all__ = ["through_wire", "token_error"]

_FP16_STEP = 2.0**-11  # half an fp16 ulp, relative


def through_wire(tokens: np.ndarray, codec: str) -> tuple[np.ndarray, np.ndarray]:
    """(Ht, Wt, C) float32 tokens -> (the tokens a worker decodes (Ht, Wt, C) float32, the RMS
    error the worker expects of each token's values (Ht, Wt) float32; 0 for fp32).

    Raises:
        ValueError: an unknown codec name.
    """
    h, w, c = tokens.shape
    rows = torch.from_numpy(np.ascontiguousarray(tokens, np.float32).reshape(h * w, c))
    sent = wire.encode(rows, wire.codec_id(codec))
    decoded = wire.decode(sent, (h * w, c)).numpy().astype(np.float32, copy=False)
    return decoded.reshape(h, w, c), token_error(sent, decoded).reshape(h, w)


def token_error(sent: pb.Tensor, decoded: np.ndarray) -> np.ndarray:
    """The RMS error a receiver expects of each token's values: (N,) float32 for ``sent`` and its
    decoded (N, C) rows; 0 for fp32."""
    if sent.codec == pb.CODEC_INT8:
        # Rounding to a step s leaves a uniform error on [-s/2, s/2]: RMS s / sqrt(12).
        sigma = np.frombuffer(sent.scales, np.float32) / np.sqrt(12.0)
    elif sent.codec == pb.CODEC_FP16:
        sigma = np.sqrt(np.mean(decoded**2, axis=1)) * _FP16_STEP / np.sqrt(3.0)
    else:
        sigma = np.zeros(len(decoded), np.float32)
    return np.asarray(sigma, np.float32)
