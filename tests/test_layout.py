"""The package's shape: pipeline/ in wings with no import circle, and nothing below the CLI importing the API."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"pipeline": "atrous.pipeline", "models": "atrous.models", "targets": "atrous.targets", "atrous": "atrous"}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in PACKAGES.items():
        for path in (ROOT / folder).rglob("*.py"):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            name = ".".join((package, *parts[:-1])) if parts[-1] == "__init__" else ".".join((package, *parts))
            found[name] = path
    return found


def _imports(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Every project module each module imports, at its top or inside a function (deferred imports count: a
    circle through them is still a circle in the design)."""
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                subs = {f"{base}.{a.name}" for a in node.names} & modules.keys()
                out.update(subs or {base})
        graph[name] = {m for m in out if m in modules and m != name}
    return graph


def _circles(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while not part or part[-1] != v:
                part.append(stack.pop())
                on.discard(part[-1])
            if len(part) > 1:
                found.append(sorted(part))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    graph = _imports(_modules())
    assert len(graph) > 80
    assert _circles(graph) == []


def test_a_circle_is_found_when_there_is_one():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_stages_stay_at_the_top_and_the_rest_has_wings():
    pipeline = ROOT / "pipeline"
    for stage in ("source", "export", "fold", "ingest", "optimize", "build", "artifact", "runner", "verify"):
        assert (pipeline / f"{stage}.py").is_file(), stage
    for wing, members in {"tuning": ("tune", "measure", "database", "default_record", "algorithm_table"),
                          "devices": ("device", "rpc", "bundle", "runtime_build", "cuda", "gpupack"),
                          "bench": ("compare", "suite", "layers", "pointwise", "profile", "peak")}.items():
        for member in members:
            assert (pipeline / wing / f"{member}.py").is_file(), f"{wing}/{member}"
    assert (pipeline / "devices" / "vulkan" / "backend.py").is_file()


def test_nothing_below_the_cli_imports_the_api():
    graph = _imports(_modules())
    users = sorted(m for m, deps in graph.items() if "atrous.api" in deps and m not in ("atrous", "atrous.api"))
    assert users == []
