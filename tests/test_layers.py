"""The layer rule: every ``study`` import, including those inside functions, points down the layer list, and the
import graph has no cycle. A failure names ``file:line``."""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "study"
# lowest first; packages on one rank may not import each other
LAYERS = [("core",), ("vme", "track"), ("data",), ("models",), ("evaluation",), ("train",), ("tune",), ("report",),
          ("cli",)]
RANK = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(module: str) -> str:
    """The layer package of a module; entry points (``study/__main__.py``, ``study/__init__.py``, a package's
    ``__main__.py`` alias such as ``python -m study.tune``) stand at the top, with the CLI."""
    parts = module.split(".")
    if len(parts) == 1 or parts[-1] == "__main__":
        return "cli"
    return parts[1]


def study_imports(path: Path):
    """(line, imported module) of every import of a ``study`` module in the file, at any depth."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("study"):
            if node.module == "study":
                yield from ((node.lineno, f"study.{alias.name}") for alias in node.names)
            else:
                # `from study.data import tasks` names a module: resolve to it when it is one
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    exists = (PACKAGE.parent / (sub.replace(".", "/") + ".py")).is_file() or \
                        (PACKAGE.parent / sub.replace(".", "/")).is_dir()
                    yield node.lineno, sub if exists else node.module
        elif isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names if alias.name.startswith("study"))
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: relative import; write the absolute module")


def graph():
    edges = defaultdict(dict)  # module -> {imported module: line}
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, imported in study_imports(path):
            if imported != "study":
                edges[module_name(path)].setdefault(imported, f"{path.relative_to(PACKAGE.parent)}:{line}")
    return edges


def upward(edges) -> list[str]:
    problems = []
    for module, imported in edges.items():
        own = package_of(module)
        for target, where in imported.items():
            other = package_of(target)
            if other == own or own == "cli":
                continue
            if RANK[other] >= RANK[own]:
                problems.append(f"{where}: {module} ({own}, layer {RANK[own] + 1}) imports {target} ({other}, layer "
                                f"{RANK[other] + 1})")
    return problems


def cycles(edges) -> list[str]:
    """Each cycle of the module graph once, as ``a -> b -> a`` with the file:line of its first edge."""
    found, state, stack = [], {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in edges.get(node, {}):
            if state.get(target) == "open":
                loop = stack[stack.index(target):] + [target]
                found.append(f"{edges[loop[0]][loop[1]]}: " + " -> ".join(loop))
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_every_package_is_a_known_layer():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == set(RANK), f"packages without a layer or layers without a package: {packages ^ set(RANK)}"
    assert not [p.name for p in PACKAGE.glob("*.py") if p.name not in ("__init__.py", "__main__.py")], \
        "modules belong in a layer package"


def test_imports_point_down_the_layers():
    problems = upward(graph())
    assert not problems, "imports pointing up the layers:\n" + "\n".join(problems)


def test_import_graph_has_no_cycle():
    problems = cycles(graph())
    assert not problems, "import cycles:\n" + "\n".join(problems)


@pytest.mark.parametrize("edges, expected", [
    ({"study.core.a": {"study.cli.train.b": "study/core/a.py:3"}}, 1),  # up
    ({"study.vme.a": {"study.track.b": "study/vme/a.py:3"}}, 1),  # sideways between packages of one rank
    ({"study.cli.train.a": {"study.core.b": "study/train/a.py:3"}}, 0),  # down
    ({"study.tune.driver.__main__": {"study.cli.tune": "study/tune/__main__.py:3"}}, 0),  # an entry-point alias
])
def test_the_rule_itself(edges, expected):
    assert len(upward(edges)) == expected


def test_a_cycle_is_found():
    edges = {"study.data.a": {"study.data.b": "study/data/a.py:1"},
             "study.data.b": {"study.data.a": "study/data/b.py:2"}}
    assert cycles(edges) == ["study/data/a.py:1: study.data.a -> study.data.b -> study.data.a"]


@pytest.mark.e2e
@pytest.mark.parametrize("module", ["study.cli.tune", "study.cli.train", "study.cli.dual_encoder", "study.cli"])
def test_the_commands_that_start_ray_do_not_import_it_first(module):
    """``init_ray`` sets the variables that keep a local Ray on loopback; Ray reads them when it is first imported,
    so a command that starts Ray must not import it (through any module) before ``init_ray`` runs."""
    import subprocess
    import sys

    code = f"import sys, {module}; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False", f"importing {module} imports ray"
