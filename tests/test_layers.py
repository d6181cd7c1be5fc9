"""The import rule, read from the source itself.

    Layers, lowest first; a module imports only from its own layer or lower ones:

        0  pedsam.partitioner, pedsam.protos      pure logic; the wire contract
        1  pedsam.workers                         the remote side (may use protos, never partitioner)
        2  pedsam.stream.errors, .logs            the edge's error family and log format
        3  pedsam.stream.media                    video, images, sources, overlays, mask files
        4  pedsam.stream.fleet                    workers as the edge sees them
        5  pedsam.stream.core                     one frame to an embedding and masks
        6  pedsam.stream.runs                     the frame engine, the recorder
        7  pedsam.stream.web, .privacy, .bench,   applications of the library (not of each other)
           .mini
        8  pedsam.stream.cli, pedsam.stream       the command line; the package's API re-exports

    partitioner and workers never import each other, nor web, privacy, bench and mini one another;
    and no import circle exists anywhere, between modules of one layer included.

Every import counts: at module level, inside functions, and under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.support import ROOT

PACKAGES = ("partitioner", "protos", "workers", "stream")

LAYERS: tuple[tuple[str, ...], ...] = (
    ("pedsam.partitioner", "pedsam.protos"),
    ("pedsam.workers",),
    ("pedsam.stream.errors", "pedsam.stream.logs"),
    ("pedsam.stream.media",),
    ("pedsam.stream.fleet",),
    ("pedsam.stream.core",),
    ("pedsam.stream.runs",),
    ("pedsam.stream.web", "pedsam.stream.privacy", "pedsam.stream.bench", "pedsam.stream.mini"),
    ("pedsam.stream.cli", "pedsam.stream"),
)
APART = (("pedsam.partitioner", "pedsam.workers"), ("pedsam.stream.web", "pedsam.stream.privacy"),
         ("pedsam.stream.web", "pedsam.stream.bench"), ("pedsam.stream.privacy", "pedsam.stream.bench"),
         ("pedsam.stream.web", "pedsam.stream.mini"), ("pedsam.stream.privacy", "pedsam.stream.mini"),
         ("pedsam.stream.bench", "pedsam.stream.mini"))


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = ["pedsam", *path.relative_to(ROOT).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The pedsam modules ``name`` imports (a name imported from a package counts as its module
    when it is one)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found.update(t for t in targets if t.split(".")[0] == "pedsam")
    found.discard(name)
    return found


def layer(module: str) -> tuple[int, str]:
    best = (-1, "")
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > len(best[1]):
                best = (index, prefix)
    assert best[0] >= 0, f"{module} belongs to no layer: add it to the rule"
    return best


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports(name, path, known) & known for name, path in found.items()}


def test_no_module_imports_a_higher_layer_or_a_sibling_kept_apart() -> None:
    wrong = []
    for name, targets in graph().items():
        (mine, home) = layer(name)
        for target in targets:
            (theirs, there) = layer(target)
            if theirs > mine or (home, there) in APART or (there, home) in APART:
                wrong.append(f"{name} (layer {mine}) imports {target} (layer {theirs})")
    assert wrong == []


def test_no_import_circles() -> None:
    edges = graph()
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    circles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                circles.append([*path[path.index(target):], target])
            elif target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert circles == []


def test_the_rule_sees_the_imports_it_judges() -> None:
    """The checker itself: it finds relative, function-level and package-level imports."""
    edges = graph()
    assert "pedsam.stream.core.offload" in edges["pedsam.stream.core.encoder"]  # a module from a package
    assert "pedsam.stream.runs.engine" in edges["pedsam.stream.runs.job"]
    assert "pedsam.workers.service" in edges["pedsam.stream.cli.workers"]  # inside a function
    assert layer("pedsam.stream.cli.main")[0] == 8 and layer("pedsam.stream.media.video")[0] == 3


def test_no_file_anywhere_imports_the_old_top_level_names() -> None:
    """Everything imports through pedsam.*: a bare ``stream`` or ``workers`` import would work in a
    checkout (its folders are on sys.path) and break in an installed wheel."""
    offenders = []
    for folder in (*PACKAGES, "tests", "samples"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                    [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
                offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in PACKAGES]
    assert offenders == []
