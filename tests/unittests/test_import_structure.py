"""The package's modules import one way: lobes / dataio / metrics / tasks <- model
<- training, inference; inference never loads the training code."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "speechbrain_mowe"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph():
    """``{module: {package modules it imports}}``, imports inside functions included;
    a package importing its own children is not counted (that is re-exporting)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parent + ([node.module] if node.module else []))
                targets.add(base)
                targets.update(f"{base}.{alias.name}" for alias in node.names)
        graph[name] = {
            t for t in targets if t in modules and t != name and not t.startswith(name + ".")
        }
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules (first = last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_cycle_would_be_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_layers_point_one_way():
    graph = import_graph()
    low = ("speechbrain_mowe.lobes", "speechbrain_mowe.dataio", "speechbrain_mowe.metrics")
    high = ("speechbrain_mowe.model", "speechbrain_mowe.training", "speechbrain_mowe.inference")
    for module, targets in graph.items():
        if module.startswith(low) or module == "speechbrain_mowe.tasks":
            assert not {t for t in targets if t.startswith(high)}, module
        if not module.startswith("speechbrain_mowe.training"):
            assert not {t for t in targets if t.startswith("speechbrain_mowe.training")}, module


def test_inference_loads_no_training_code_and_no_metric():
    probe = (
        "import sys, speechbrain_mowe.inference\n"
        "print(sorted(m for m in sys.modules if m.startswith('speechbrain_mowe.training')"
        " or m.startswith('speechbrain_mowe.metrics') or m == 'sacrebleu'))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
