"""The privacy report as a self-contained HTML page: tables, matplotlib plots, thumbnails.

Every image is a PNG embedded as a ``data:`` URI and the style is inline, so the page is one
file that opens with no network (it references no URL at all). Plots compare the policies (and
the ``monolithic`` baseline) on every metric of :mod:`pedsam.stream.privacy.report`, with 95%
intervals as error bars; the leakage curves follow the worst worker's coverage of the current
frame and of the run's scene over time; per policy, the worst worker's view of the last evaluated
frame and its whole mosaic stand beside the true frame.
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
    ("mosaic", "panorama_coverage", "mosaic: share of the run's scene held (panorama)"),
    ("mosaic", "psnr_db_mean", "mosaic: PSNR over covered pixels (dB)"),
    ("mosaic", "ssim_mean", "mosaic: SSIM over covered pixels"),
    ("detection", "people_recall", "people recall vs the true frame"),
    ("detection", "faces_recall", "face recall vs the true frame"),
)
"""(group, key, title) of each figure of a policy's worst worker; ``key + "_ci"``, where the group
has it, is its 95% interval, and detection recalls carry their reference count."""

REFERENCE = {"people_recall": "people_reference", "faces_recall": "faces_reference"}

_ATTACKER_NAMES = {"hog": "OpenCV's HOG detector", "ssd": "an SSDLite CNN pedestrian detector",
                   "ssd+hog": "an SSDLite CNN pedestrian detector and OpenCV's HOG detector together",
                   "haar": "OpenCV's Haar cascade", "cnn": "dlib's CNN face detector"}


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
    figure, axes = plt.subplots(2, 7, figsize=(28, 7))
    width = 0.8 / max(1, len(videos))
    for axis in axes.flat[len(METRICS):]:
        axis.axis("off")
    for axis, (group, key, title) in zip(axes.flat, METRICS):
        for i, video in enumerate(videos):
            figures = [video["policies"][label][group] for label in labels]
            heights = np.array([np.nan if f[key] is None else f[key] for f in figures], float)
            spans = [f.get(key + "_ci") for f in figures]
            errors = np.array([[0.0, 0.0] if c is None else [h - c[0], c[1] - h] for h, c in zip(heights, spans)]).T
            axis.bar(np.arange(len(labels)) + i * width, heights, width, label=video["video"].rsplit("/", 1)[-1],
                     yerr=errors if any(c is not None for c in spans) else None, capsize=2)
        axis.set_title(title, fontsize=9)
        axis.set_xticks(np.arange(len(labels)) + width * (len(videos) - 1) / 2)
        axis.set_xticklabels(labels, rotation=40, ha="right", fontsize=8)
    axes.flat[0].legend(fontsize=8)
    figure.tight_layout()
    return _png(figure)


def _series(video: dict[str, Any]) -> str:
    """The leakage curves: the worst worker's coverage of the current frame and of the scene so far."""
    figure, axes = plt.subplots(1, 2, figsize=(14, 3.4))
    for axis, key, what in ((axes[0], "coverage", "coverage of the current frame"),
                            (axes[1], "panorama", "share of the scene so far (panorama)")):
        for label, policy in video["policies"].items():
            axis.plot(policy["series"]["frame"], policy["series"][key], label=label)
        axis.set_xlabel("frame (of those used)")
        axis.set_ylabel(f"worst worker: {what}", fontsize=9)
        axis.set_ylim(0, 1.05)
    axes[0].legend(fontsize=8, ncol=3)
    figure.suptitle(video["video"].rsplit("/", 1)[-1], fontsize=10)
    return _png(figure)


def _fmt(value: Any, interval: Sequence[float] | None = None, reference: int | None = None) -> str:
    """A figure, its 95% interval in brackets and its reference count (``of 26``), for a cell."""
    if value is None:
        text = "n/a"
    elif isinstance(value, float):
        text = f"{value:.3f}"
    else:
        text = html.escape(str(value))
    if interval is not None:
        text += f" <small>[{interval[0]:.2f}, {interval[1]:.2f}]</small>"
    if reference is not None:
        text += f" <small>of {reference}</small>"
    return text


def _cell(figures: dict[str, Any], group: str, key: str) -> str:
    values = figures[group]
    reference = values.get(REFERENCE[key]) if key in REFERENCE else None
    return f"<td>{_fmt(values[key], values.get(key + '_ci'), reference)}</td>"


def _coalition_row(policy: dict[str, Any]) -> str:
    """The worst coalition's attack figures, in the columns of the worker row."""
    c = policy["coalition"]
    cells = {
        ("exposure", "coalition_run_scene_share"): _fmt(policy["exposure"]["coalition_run_scene_share"]),
        ("mosaic", "coverage_mean"): _fmt(c["coverage"]["mean"], c["coverage"]["ci"]),
        ("mosaic", "panorama_coverage"): _fmt(c["panorama"]["share"]),
        ("mosaic", "psnr_db_mean"): _fmt(c["coverage"]["psnr_db"]),
        ("mosaic", "ssim_mean"): _fmt(c["coverage"]["ssim"]),
        ("detection", "people_recall"): _fmt(c["people"]["recall"], c["people"]["ci"], c["people"]["reference"]),
        ("detection", "faces_recall"): _fmt(c["faces"]["recall"], c["faces"]["ci"], c["faces"]["reference"]),
    }
    who = html.escape(c["coverage"]["party"])
    return (f"<tr><td><em>worst coalition</em> ({who})</td>"
            + "".join(f"<td>{cells.get((g, k), '')}</td>" for g, k, _ in METRICS) + "</tr>")


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
        f"{html.escape(_budget(report['budget']))}; tokens attacked as they cross the wire in "
        f"{html.escape(report['codec'])}. Each figure is the worst single worker of a policy, one worker "
        "over the whole run (for each figure, the worker whose whole-run figure is highest); the coalition "
        f"rows: the worst set of 2 up to {report['coalitions']} workers likewise. "
        "<em>monolithic</em> is one cloud server receiving whole frames. Brackets: 95% bootstrap intervals "
        f"over frames (seed {report['bootstrap']['seed']}, {report['bootstrap']['resamples']} resamples) for the "
        "fixed worker; <em>of N</em>: reference detections on the true frames. Exposure maxima and whole-run "
        "shares are exact counts of what was sent. Detections match on the visible part of each reference "
        "box (IoU of both boxes clipped to the pixels the worker holds, at least 0.5); people by "
        f"{html.escape(_ATTACKER_NAMES[report['person_attacker']], quote=False)}, faces by "
        f"{html.escape(_ATTACKER_NAMES[report['face_attacker']], quote=False)}.</p>",
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
            cells = "".join(_cell(policy, group, key) for group, key, _ in METRICS)
            who = html.escape(policy["mosaic"]["worker"])
            rows.append(f"<tr><td>{html.escape(label)} ({policy['servers']} servers; worst {who})</td>{cells}</tr>")
            if policy["coalition"] is not None:
                rows.append(_coalition_row(policy))
        parts.append(f"<table><tr><th>policy</th>{header}</tr>{''.join(rows)}</table>")
        parts.append(f"<p><img src='{_series(video)}' alt='leakage curves'></p>")
        if result.truth is not None:
            truth = _image_png(result.truth)
            for label, policy in video["policies"].items():
                figures = [f"<figure><img src='{truth}'><figcaption>true frame</figcaption></figure>"]
                who = html.escape(policy["mosaic"]["worker"])
                if label in result.views:
                    figures.append(f"<figure><img src='{_image_png(result.views[label])}'><figcaption>worst worker "
                                   f"{who}: its view of this frame</figcaption></figure>")
                if label in result.panoramas:
                    figures.append(f"<figure><img src='{_image_png(result.panoramas[label])}'><figcaption>{who}'s "
                                   "whole mosaic (grey: never received)</figcaption></figure>")
                parts.append(f"<h3>{html.escape(label)}</h3><div>" + "".join(figures) + "</div>")
    parts.append("</body></html>")
    return "\n".join(parts)
