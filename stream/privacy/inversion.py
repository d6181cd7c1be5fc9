"""Token inversion: pixels back from first-segment tokens, as a server can do it.

A server's first-segment input is SAM's prologue, ``t = W x + b + pos`` per token, where ``x``
is the token's 16x16x3 patch of normalised pixels and ``W`` (C x 768), ``b`` and ``pos`` are the
model's public weights. The server solves for ``x`` with the pseudo-inverse of ``W``: exactly
when ``C >= 768`` (ViT-B/L/H) and ``W`` is well conditioned, as the minimum-norm patch
consistent with the tokens otherwise (the ``tiny`` test preset has ``C = 64``); tokens that
crossed a lossy wire codec get the noise-aware (Wiener) inverse instead (:class:`TokenInverter`).
Patches are independent, so inverting a server's windows is inverting the whole grid and masking.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from pedsam.workers.sam import Sam

from pedsam.stream.core.predictor import PreparedImage, prepare_image

__all__ = ["TokenInverter", "prologue"]


@torch.inference_mode()
def prologue(sam: Sam, image: np.ndarray) -> tuple[np.ndarray, PreparedImage]:
    """HxWx3 uint8 RGB frame -> (its first-segment tokens (Ht, Wt, C) float32, the prepared frame).

    The tokens are what the split encoder cuts into windows (patch_embed + pos_embed).
    """
    prepared = prepare_image(sam, image)
    encoder = sam.image_encoder
    x = encoder.patch_embed(prepared.tensor)  # (1, Ht, Wt, C)
    if encoder.pos_embed is not None:
        x = x + encoder.pos_embed
    return x[0].numpy().astype(np.float32), prepared


@dataclass(frozen=True, slots=True)
class TokenInverter:
    """Inverts a SAM prologue: tokens -> normalised patches -> RGB pixels.

    The projection is kept as its SVD ``W = U diag(s) Vh``. Exact tokens (fp32 on the wire) are
    inverted with the pseudo-inverse. Tokens that crossed a lossy codec carry an error of known
    size (RMS ``sigma`` per token, from the wire: :mod:`pedsam.stream.privacy.wire`), which the
    pseudo-inverse would amplify along the projection's weak directions; the attacker then uses
    the Wiener (Tikhonov) inverse ``Vh^T diag(s / (s^2 + sigma^2)) U^T`` instead: the best linear
    estimate under a unit-variance prior on normalised pixels (SAM normalises pixels to about
    zero mean and unit variance).

    Attributes:
        u: (C, r) float32 left singular vectors of the patch projection (C x P*P*3).
        s: (r,) float32 singular values, descending; directions below ``1e-6`` of the largest
            are dropped as the pseudo-inverse does.
        vh: (r, P*P*3) float32 right singular vectors, columns in the conv's (channel, y, x) order.
        bias: (C,) float32 projection bias.
        pos: (Ht, Wt, C) float32 position embedding, or zeros.
        mean, std: (3,) float32 pixel normalisation, RGB, 0-255 scale.
        patch: patch side, pixels.
    """

    u: np.ndarray
    s: np.ndarray
    vh: np.ndarray
    bias: np.ndarray
    pos: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    patch: int

    @classmethod
    def for_model(cls, sam: Sam) -> TokenInverter:
        encoder = sam.image_encoder
        proj = encoder.patch_embed.proj
        weight = proj.weight.detach().double().reshape(proj.weight.shape[0], -1)  # (C, 3*P*P)
        u, s, vh = torch.linalg.svd(weight, full_matrices=False)
        keep = s > s[0] * 1e-6
        bias = proj.bias.detach().float().numpy() if proj.bias is not None else np.zeros(weight.shape[0], np.float32)
        grid = encoder.img_size // proj.kernel_size[0]
        pos = (
            encoder.pos_embed.detach()[0].float().numpy()
            if encoder.pos_embed is not None
            else np.zeros((grid, grid, weight.shape[0]), np.float32)
        )
        return cls(
            u=u[:, keep].float().numpy(),
            s=s[keep].float().numpy(),
            vh=vh[keep].float().numpy(),
            bias=bias,
            pos=pos,
            mean=sam.pixel_mean.detach().flatten().float().numpy(),
            std=sam.pixel_std.detach().flatten().float().numpy(),
            patch=int(proj.kernel_size[0]),
        )

    def invert(self, tokens: np.ndarray, sigma: np.ndarray | None = None, *, at: tuple[int, int] = (0, 0)
               ) -> np.ndarray:
        """(Ht, Wt, C) tokens -> (Ht*P, Wt*P, 3) uint8 RGB, the padded encoder input recovered.

        ``sigma``: (Ht, Wt) RMS error of each token's values as received (None or 0: exact).
        ``at``: the token (y, x) of the grid where ``tokens`` start (whose position embedding
        they carry); the whole grid starts at (0, 0)."""
        h, w, c = tokens.shape
        p = self.patch
        top, left = at
        centred = (tokens - self.bias - self.pos[top : top + h, left : left + w]).reshape(-1, c)
        coords = centred @ self.u  # (Ht*Wt, r)
        if sigma is None or not np.any(sigma):
            coords = coords / self.s
        else:
            noise = np.square(sigma.reshape(-1, 1).astype(np.float32))
            coords = coords * (self.s / (np.square(self.s) + noise))
        patches = coords @ self.vh  # (Ht*Wt, 3*P*P), (channel, y, x) order
        patches = patches.reshape(h, w, 3, p, p).transpose(0, 3, 1, 4, 2).reshape(h * p, w * p, 3)
        pixels = patches * self.std + self.mean
        return np.asarray(np.clip(np.rint(pixels), 0, 255), np.uint8)

    def reconstruct(self, tokens: np.ndarray, prepared: PreparedImage, sigma: np.ndarray | None = None) -> np.ndarray:
        """Tokens -> the frame as the server recovers it: (H, W, 3) uint8 at the frame's size."""
        full = self.invert(tokens, sigma)
        h, w = prepared.input_size
        height, width = prepared.original_size
        return np.asarray(cv2.resize(full[:h, :w], (width, height), interpolation=cv2.INTER_AREA), np.uint8)

    def pixel_error(self, sigma: np.ndarray, prepared: PreparedImage) -> np.ndarray:
        """Per-token RMS error of the received values (Ht, Wt) -> the RMS error the attacker
        expects of each recovered pixel, (H, W) float32 grey levels at the frame's size: the
        Wiener estimate's posterior spread, ``sigma^2 / (s^2 + sigma^2)`` per kept direction and
        the prior's 1 per direction the projection does not see, averaged over the patch."""
        size = self.vh.shape[1]
        noise = np.square(sigma.astype(np.float64))[..., None]  # (Ht, Wt, 1)
        seen = np.sum(noise / (np.square(self.s.astype(np.float64)) + noise), axis=-1) if np.any(sigma) else 0.0
        mse = (seen + (size - self.s.size)) / size  # (Ht, Wt), normalised units squared
        p = self.patch
        rms = np.broadcast_to(np.sqrt(mse) * float(np.mean(self.std)), sigma.shape)
        full = np.repeat(np.repeat(rms, p, axis=0), p, axis=1).astype(np.float32)
        h, w = prepared.input_size
        height, width = prepared.original_size
        return np.asarray(cv2.resize(full[:h, :w], (width, height), interpolation=cv2.INTER_AREA), np.float32)
