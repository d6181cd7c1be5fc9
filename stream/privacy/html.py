"""The privacy report as a self-contained HTML page: tables, matplotlib plots, thumbnails.

Every image is a PNG embedded as a ``data:`` URI, so the page is one file. Plots compare the
policies (and the ``monolithic`` baseline) on every metric of :mod:`pedsam.stream.privacy.report`.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from pedsam.stream.privacy.report import VideoResult  # noqa: E402

__all__ = ["METRICS", "render_html"]

METRICS: tuple[tuple[str, str, str], ...] = (
    ("exposure", "max_frame_share", "largest share of one frame's picture"),
    ("exposure", "max_scene_share", "largest share of the scene over the horizon"),
    ("exposure", "max_run_scene_share", "largest share of the scene since the start"),
    ("exposure", "coalition_run_scene_share", "worst coalition: share of the scene since the start"),
    ("exposure", "max_distinct_windows", "distinct window slots seen over the horizon"),
    ("exposure", "longest_run", "longest run on one piece of scene (frames)"),
    ("exposure", "edge_share", "picture windows the edge computed itself"),
    ("mosaic", "coverage_mean", "mosaic: coverage of the current frame (mean)"),
    ("mosaic", "psnr_db_mean", "mosaic: PSNR over covered pixels (dB)"),
    ("mosaic", "ssim_mean", "mosaic: SSIM over covered pixels"),
    ("detection", "people_recall", "HOG people recall vs the true frame"),
    ("detection", "faces_recall", "Haar face recall vs the true frame"),
)


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _image_png(image: np.ndarray, height: int = 180) -> str:
    scale = height / image.shape[0]
    small = cv2.resize(image, (max(1, round(image.shape[1] * scale)), height), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".png", cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
    assert ok
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def _bars(videos: Sequence[dict[str, Any]]) -> str:
    labels = list(videos[0]["policies"])
    figure, axes = plt.subplots(2, 6, figsize=(24, 7))
    width = 0.8 / max(1, len(videos))
    for axis, (group, key, title) in zip(axes.flat, METRICS):
        for i, video in enumerate(videos):
            values = [video["policies"][label][group][key] for label in labels]
            heights = [np.nan if v is None else v for v in values]
            axis.bar(np.arange(len(labels)) + i * width, heights, width, label=video["video"].rsplit("/", 1)[-1])
        axis.set_title(title, fontsize=9)
        axis.set_xticks(np.arange(len(labels)) + width * (len(videos) - 1) / 2)
        axis.set_xticklabels(labels, rotation=40, ha="right", fontsize=8)
    axes.flat[0].legend(fontsize=8)
    figure.tight_layout()
    return _png(figure)


def _series(video: dict[str, Any]) -> str:
    figure, axis = plt.subplots(figsize=(8, 3.2))
    for label, policy in video["policies"].items():
        axis.plot(policy["series"]["frame"], policy["series"]["coverage"], label=label)
    axis.set_xlabel("frame (of those used)")
    axis.set_ylabel("worst server's coverage")
    axis.set_ylim(0, 1.05)
    axis.legend(fontsize=8, ncol=3)
    axis.set_title(video["video"].rsplit("/", 1)[-1], fontsize=10)
    return _png(figure)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return html.escape(str(value))


def _budget(budget: dict[str, Any]) -> str:
    """A budget in words, e.g. ``frame cap auto, scene cap 0.5 of the scene since the start, over budget: edge``."""
    caps = [f"frame cap {budget.get('frame_cap', 'auto')}"]
    if budget.get("scene_cap") is not None:
        caps.append(f"scene cap {budget['scene_cap']} of the scene since the start")
    if budget.get("horizon_cap") is not None:
        caps.append(f"{budget['horizon_cap']} frames' worth of scene over {budget['horizon']} frames")
    if budget.get("run_cap") is not None:
        caps.append(f"runs of at most {budget['run_cap']} frames")
    if budget.get("coalition_cap") is not None:
        caps.append(f"coalitions of {budget['coalition']} capped at {budget['coalition_cap']}")
    return ", ".join(caps) + f" (horizon {budget['horizon']} frames), over budget: {budget['on_exceed']}"


def render_html(report: dict[str, Any], results: Sequence[VideoResult]) -> str:
    """The report page (one self-contained HTML string)."""
    videos = report["videos"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>pedsam privacy report</title>",
        "<style>body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse;"
        "font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}th{background:#f3f3f3}"
        "td:first-child{text-align:left}img{max-width:100%}figure{display:inline-block;margin:4px;text-align:center;font-size:12px}"
        "</style></head><body>",
        "<h1>pedsam privacy report</h1>",
        f"<p>Model {html.escape(report['model'])} (patch embedding {report['embed_dim']} channels from "
        f"{report['patch_pixels']} pixel values per patch); {report['servers']} shares per frame, scheme "
        f"{html.escape(report['scheme'])}, pooled with {report['pool_size']} servers per slot; budget "
        f"{html.escape(_budget(report['budget']))}. Each figure is the worst single server of a policy (the "
        f"coalition column: the worst set of up to {report['coalitions']} servers); "
        "<em>monolithic</em> is one cloud server receiving whole frames.</p>",
    ]
    if report.get("defaults"):
        defaults = report["defaults"]
        parts.append(f"<p><em>defaults</em> is a run with no flags: rotation {html.escape(defaults['rotation'])}, "
                     f"scheme {html.escape(defaults['scheme'])}, budget {html.escape(_budget(defaults))}.</p>")
    if report["random_weights"]:
        parts.append("<p><strong>Seeded random weights.</strong> Token inversion needs only the patch "
                     "embedding, which a server knows for any public model; untrained weights invert as well "
                     "as trained ones when the projection is square.</p>")
    parts.append(f"<img src='{_bars(videos)}' alt='metrics by policy'>")
    for video, result in zip(videos, results):
        name = html.escape(video["video"])
        motion = video["motion"]
        camera = (
            f"camera offset range {motion['offset_range_px']} px, {motion['cuts']} cuts"
            if motion["estimated"]
            else "no motion estimate (offset 0)"
        )
        parts.append(f"<h2>{name}</h2><p>{video['frames']} frames (stride {video['stride']}), "
                     f"{video['size'][0]}x{video['size'][1]}, {video['windows_per_frame']} windows per frame; "
                     f"{camera}; token inversion PSNR {_fmt(video['inversion_psnr_db'])} dB.</p>")
        header = "".join(f"<th>{html.escape(title)}</th>" for _, _, title in METRICS)
        rows = []
        for label, policy in video["policies"].items():
            cells = "".join(f"<td>{_fmt(policy[group][key])}</td>" for group, key, _ in METRICS)
            rows.append(f"<tr><td>{html.escape(label)} ({policy['servers']} servers)</td>{cells}</tr>")
        parts.append(f"<table><tr><th>policy</th>{header}</tr>{''.join(rows)}</table>")
        parts.append(f"<p><img src='{_series(video)}' alt='coverage over time'></p>")
        if result.truth is not None:
            figures = [f"<figure><img src='{_image_png(result.truth)}'><figcaption>true frame</figcaption></figure>"]
            for label, view in result.views.items():
                figures.append(f"<figure><img src='{_image_png(view)}'><figcaption>{html.escape(label)}: worst "
                               "server's mosaic</figcaption></figure>")
            parts.append("<div>" + "".join(figures) + "</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
