"""The import rules of the package's shape (../shared/spec/architecture.md), read from the source."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "musetalk"
STAGES = ("models", "audio", "face", "video", "speech")
DRIVERS = ("pipeline", "realtime", "train", "eval", "distributed", "cli", "integrations")
FRAMEWORKS = {  # a framework, and the only modules that may import it
    "ray": ("musetalk.distributed",),
    "aiortc": ("musetalk.realtime.outputs.webrtc", "musetalk.realtime.outputs.paced_track", "musetalk.realtime.outputs.publish",
               "musetalk.integrations"),
    "pipecat": ("musetalk.integrations.pipecat",),
}


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(absolute module, at module level) for every import in ``path``."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(alias.name, id(node) in top) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((name, id(node) in top))
    return found


SOURCES = {_module(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_stages_do_not_know_their_drivers():
    bad = [(m, name) for m, imports in SOURCES.items() if any(_within(m, f"musetalk.{s}") for s in STAGES)
           for name, _ in imports if any(_within(name, f"musetalk.{d}") for d in DRIVERS)]
    assert bad == []


def test_inference_stands_without_training_and_only_cli_imports_cli():
    bad = [(m, name) for m, imports in SOURCES.items() for name, _ in imports
           if (_within(name, "musetalk.train") and (_within(m, "musetalk.pipeline") or _within(m, "musetalk.realtime")))
           or (_within(name, "musetalk.cli") and not _within(m, "musetalk.cli"))]
    assert bad == []


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_frameworks_are_imported_only_by_their_integration(framework):
    bad = [m for m, imports in SOURCES.items() for name, _ in imports
           if _within(name, framework) and not any(_within(m, owner) for owner in FRAMEWORKS[framework])]
    assert bad == []


def test_outputs_depend_on_the_engine_never_the_other_way():
    below = ("musetalk.realtime.engine", "musetalk.realtime.avatars")
    bad = [(m, name) for m, imports in SOURCES.items() if any(_within(m, b) for b in below)
           for name, _ in imports if any(_within(name, f"musetalk.realtime.{o}") for o in ("outputs", "web", "server",
                                                                                       "media"))]
    assert bad == []


def test_no_import_circles_at_module_level():
    graph = {m: {n for n, top in imports if top and n in SOURCES and n != m} for m, imports in SOURCES.items()}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                return trail + [node, nxt]
            if nxt not in state and (cycle := visit(nxt, trail + [node])):
                return cycle
        state[node] = 2
        return None

    cycles = [c for m in graph if m not in state and (c := visit(m, []))]
    assert cycles == []


def test_importing_the_package_does_not_import_torch():
    code = "import sys, musetalk, musetalk.cli.main; print(sorted({'torch', 'aiortc', 'pipecat', 'ray'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
