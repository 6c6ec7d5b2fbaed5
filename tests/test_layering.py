"""The op layer imports downwards only: no import cycles among kops' modules.

Module-level imports are read from the source (imports inside functions are deliberate lazy
edges and not counted); importing ``a.b.c`` also runs the package ``a.b``.
"""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kops"


def _module_name(path: Path) -> str:
    parts = ("kops",) + path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)


def _graph():
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.parse(path.read_text()).body:  # module level only
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")
                if node.level:
                    base = base[: len(base) - node.level + 1]
                    prefix = ".".join(base + ([node.module] if node.module else []))
                else:
                    prefix = node.module or ""
                for alias in node.names:
                    full = f"{prefix}.{alias.name}"
                    targets.add(full if full in modules else prefix)
            elif isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
        edges = set()
        for target in targets:
            if not target.startswith("kops"):
                continue
            parts = target.split(".")
            for i in range(1, len(parts) + 1):  # the target and the packages it runs
                parent = ".".join(parts[:i])
                if parent in modules and not name.startswith(parent + ".") and parent != name and parent != "kops":
                    edges.add(parent)
        graph[name] = edges
    return graph


def test_no_import_cycles():
    graph = _graph()
    state, stack, cycles = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_kernel_table_imports_nothing_of_kops():
    assert _graph()["kops.kernels"] == set()
