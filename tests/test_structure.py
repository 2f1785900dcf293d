"""The import structure, read from the source (AST): floors, private modules, public APIs.

- No module outside ``jaxaccel/`` imports a private ``jaxaccel._x`` module (the core's plumbing is
  reached through ``jaxaccel.runtime`` and the package's public names).
- No example, notebook script or benchmark imports a private module of any of our packages
  (``science.gw._job``, ``transformers_jax._gguf``, ...): the public API must be enough for the
  project's own tutorials. (``benchmarks/_common`` is the benchmarks' own helper.)
- Imports only go down a floor: pallas_kernels < jaxaccel < {transformers_jax, science}, and
  transformers_jax and science never import each other.
- Library code never calls ``matplotlib.use`` or imports ``matplotlib.pyplot``.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pallas_kernels", "jaxaccel", "transformers_jax", "science")
FLOOR = {"pallas_kernels": 1, "jaxaccel": 2, "transformers_jax": 3, "science": 3}


def _files(*dirs):
    for d in dirs:
        yield from sorted((ROOT / d).rglob("*.py"))


def _imports(path: Path):
    """(line, absolute module name, imported names) for every import in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(ROOT).with_suffix("")
    package = list(rel.parts[:-1]) if rel.name != "__init__" else list(rel.parts[:-1])
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            yield node.lineno, mod, tuple(a.name for a in node.names)


def _private_parts(mod: str, names: tuple[str, ...]) -> list[str]:
    """The private modules an import reaches: ``a._b`` or ``from a import _b`` (when ``_b`` is a
    module of ours)."""
    parts = mod.split(".")
    if parts[0] not in PACKAGES:
        return []
    out = [mod] if any(p.startswith("_") and p != "__init__" for p in parts[1:]) else []
    for n in names:
        if n.startswith("_") and (
            ROOT.joinpath(*parts, n + ".py").exists() or ROOT.joinpath(*parts, n).is_dir()
        ):
            out.append(f"{mod}.{n}")
    return out


def test_no_private_core_module_outside_the_core():
    bad = []
    for path in _files(
        "transformers_jax", "science", "pallas_kernels", "tests", "examples", "benchmarks"
    ):
        for line, mod, names in _imports(path):
            for p in _private_parts(mod, names):
                if p.startswith("jaxaccel."):
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {p}")
    # tests may reach into the core's privates to test them; nothing else may
    bad = [b for b in bad if not b.startswith("tests/")]
    assert not bad, "\n".join(bad)


def test_examples_and_benchmarks_use_public_apis_only():
    bad = []
    for path in _files("examples", "benchmarks"):
        for line, mod, names in _imports(path):
            for p in _private_parts(mod, names):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {p}")
    assert not bad, "\n".join(bad)


def test_imports_only_go_down_a_floor():
    bad = []
    for pkg in PACKAGES:
        for path in _files(pkg):
            for line, mod, _ in _imports(path):
                top = mod.split(".")[0]
                if top in FLOOR and top != pkg and FLOOR[top] >= FLOOR[pkg]:
                    bad.append(f"{path.relative_to(ROOT)}:{line} ({pkg}) imports {mod}")
    assert not bad, "\n".join(bad)


def test_library_code_leaves_matplotlib_state_alone():
    bad = []
    for path in _files(*PACKAGES):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                f = node.func
                if f.attr == "use" and isinstance(f.value, ast.Name) and f.value.id == "matplotlib":
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} calls matplotlib.use")
        for line, mod, names in _imports(path):
            if mod == "matplotlib.pyplot" or (mod == "matplotlib" and "pyplot" in names):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports matplotlib.pyplot")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("pkg", PACKAGES)
def test_packages_state_their_public_api(pkg):
    """Each package's ``__init__`` has a docstring and re-exports explicitly (``x as x``) or lists
    ``__all__``."""
    tree = ast.parse((ROOT / pkg / "__init__.py").read_text())
    assert ast.get_docstring(tree), f"{pkg}/__init__.py has no docstring"
    has_all = any(
        isinstance(n, ast.Assign) and any(getattr(t, "id", None) == "__all__" for t in n.targets)
        for n in tree.body
    )
    explicit = [
        a.name == a.asname
        for n in tree.body
        if isinstance(n, ast.ImportFrom) and n.level
        for a in n.names
        if not a.name.startswith("_")
    ]
    assert has_all or (explicit and all(explicit)), f"{pkg}/__init__.py states no public API"
