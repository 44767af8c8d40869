"""The shape of the code base: no import circle, small modules, every Redis key spelled in keys.py alone."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = {"detektr": REPO / "detektr", "detektr.workers": REPO / "workers", "detektr.beat": REPO / "beat"}
MAX_LINES = 400


def package_modules() -> dict[str, Path]:
    """Every module of the installed package by its import name (workers/ and beat/ as detektr.workers, .beat)."""
    modules = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([package, *parts])] = path
    return modules


MODULES = package_modules()


def _resolve(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def module_level_imports(module: str, path: Path) -> set[str]:
    """The package's modules that `module` imports when it is imported (not in functions, not for type checking)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    is_package = path.name == "__init__.py"

    def visit(statements: list[ast.stmt]) -> None:
        for node in statements:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, ast.Import):
                found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                target = _resolve(module, is_package, node)  # `from . import keys`: an edge to keys alone
                found.update(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target
                             for alias in node.names)
            elif isinstance(node, (ast.If, ast.Try, ast.With)):
                visit(node.body)
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                visit(getattr(node, "orelse", []))
                visit(getattr(node, "finalbody", []))

    visit(tree.body)
    edges = set()
    for name in found:
        while name and name not in MODULES:  # `from detektr.x import y` where y is a name, not a module
            name = name.rpartition(".")[0]
        if name and name != module:
            edges.add(name)
    return edges - {module}


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle in `graph`, as the list of modules around it; [] when there is none."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return []


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_no_import_circle_among_the_package_modules():
    graph = {module: module_level_imports(module, path) for module, path in MODULES.items()}
    assert graph["detektr.celery_app"] >= {"detektr.worker_hooks", "detektr.celeryconfig", "detektr.config"}
    assert find_cycle(graph) == []


def test_importing_detektr_builds_no_celery_app_and_connects_no_signal():
    probe = ("import sys, detektr; from detektr import processor, Frame; "
             "print(sorted(m for m in sys.modules if m in ('detektr.celery_app', 'detektr.worker_hooks', "
             "'detektr.tasks', 'celery')))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def test_every_module_imports_alone_in_a_fresh_interpreter():
    env_probe = "import importlib, sys; importlib.import_module(sys.argv[1])"
    running = {name: subprocess.Popen([sys.executable, "-c", env_probe, name], cwd=REPO, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True)
               for name in MODULES if name != "detektr.__main__"}  # `python -m detektr`: runs the command
    failed = {}
    for name, process in running.items():
        output, _ = process.communicate(timeout=120)
        if process.returncode != 0:
            failed[name] = output.strip().splitlines()[-1:]
    assert failed == {}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_longer_than_a_sitting(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{module} has {lines} lines"


KEY_LIKE = re.compile(r"^(detektr|frames|results):\S")


def test_every_redis_key_is_spelled_in_keys_py_alone():
    spelled = []
    for module, path in MODULES.items():
        if module == "detektr.keys" or module.startswith("detektr.workers"):  # processors may name their streams
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and KEY_LIKE.match(node.value):
                spelled.append(f"{module}:{node.lineno}: {node.value!r}")
    assert spelled == []


def test_every_key_of_keys_py_is_listed_in_the_contract():
    import inspect

    from detektr import keys

    page = (REPO / "docs" / "contract.md").read_text()
    missing = []
    for name, value in vars(keys).items():
        if name.startswith("_") or name == "annotations":
            continue
        if isinstance(value, str):
            spelled = value
        elif inspect.isfunction(value) and value.__module__ == keys.__name__:
            made = value(*["\0"] * len(inspect.signature(value).parameters))  # "\0" marks each variable part
            spelled = (made[0] if isinstance(made, list) else made).split("\0")[0]
        else:
            continue
        if spelled not in page:
            missing.append(f"{name}: {spelled!r}")
    assert missing == [], "keys missing from docs/contract.md"
