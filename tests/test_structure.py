"""The package's rules of shape: which modules may import Luigi or the test kit, and module sizes."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "pipeline"
LUIGI_ALLOWED = {"tasks.py", "settings.py", "scheduler.py"}  # and everything in cli/
MAX_LINES = 400


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = ".".join(("pipeline", *path.relative_to(ROOT).parent.parts))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join([*base, node.module] if node.module else base)
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
    return names


def _production_modules():
    return [p for p in ROOT.rglob("*.py") if "testing" not in p.relative_to(ROOT).parts]


def test_the_rules_see_real_imports():
    """The checker itself: it finds luigi in tasks.py and the test kit in the kit's own modules."""
    assert "luigi" in _imports(ROOT / "tasks.py")
    assert "pipeline.testing.fileserver_handler" in _imports(ROOT / "testing" / "fileserver.py")


def test_no_production_module_imports_the_test_kit():
    offenders = [
        str(p.relative_to(ROOT))
        for p in _production_modules()
        if any(n == "pipeline.testing" or n.startswith("pipeline.testing.") for n in _imports(p))
    ]
    assert offenders == []


def test_luigi_is_imported_only_by_the_wiring_settings_and_commands():
    offenders = [
        str(p.relative_to(ROOT))
        for p in _production_modules()
        if any(n == "luigi" or n.startswith("luigi.") for n in _imports(p))
        and p.name not in LUIGI_ALLOWED
        and p.relative_to(ROOT).parts[0] != "cli"
    ]
    assert offenders == []


def test_no_production_module_is_over_the_size_limit():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in _production_modules()}
    assert {k: v for k, v in sizes.items() if v > MAX_LINES} == {}


def test_no_print_outside_the_commands():
    """The domain and the wiring log; only cli/ prints."""
    offenders = []
    for p in _production_modules():
        if p.relative_to(ROOT).parts[0] == "cli":
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                offenders.append(f"{p.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
