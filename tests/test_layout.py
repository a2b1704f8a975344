"""The shape of the code: no import cycle, one list of engines and one of precisions, and the
modules that need torch only where torch is used."""
import ast
import re
from pathlib import Path

from click.testing import CliRunner

from conftest import tiny_study_file, without_torch
from transferfeat import engines
from transferfeat.cli import main
from transferfeat.engines.torchnet import PRECISIONS
from transferfeat.render import Renderer
from transferfeat.study import Study

PACKAGE = Path(__file__).resolve().parents[1] / "transferfeat"


def import_graph() -> dict[str, set]:
    """Module -> the transferfeat modules it imports, function-local imports included."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
                prefix = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                edges |= {f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in modules else prefix for a in node.names}
            elif isinstance(node, ast.Import):
                edges |= {a.name for a in node.names}
        graph[name] = {e for e in edges if e in modules and e != name}
    return graph


def cycles(graph: dict) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
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
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))
    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 30 and "transferfeat.state" in graph["transferfeat.training"]
    assert cycles(graph) == []
    assert cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]          # the check can fail


def test_folder_holds_paths_only():
    """folder.py knows file names; what the files say is state.py's and snapshots.py's."""
    graph = import_graph()
    assert graph["transferfeat.folder"] <= {"transferfeat.errors"}
    text = (PACKAGE / "folder.py").read_text()
    assert not re.search(r"def (is_done|damage|resume_point|final_weights|final_snapshot|read_\w+|write_\w+)\(", text)


def source_hits(pattern: str) -> list[str]:
    return [f"{p.relative_to(PACKAGE.parent)}:{i}" for p in sorted(PACKAGE.rglob("*.py"))
            for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(pattern, line)]


def test_one_list_of_engines_and_one_of_precisions():
    hits = source_hits(r"[\"']fp32[\"'],\s*[\"']tf32[\"']")
    assert [h.split(":")[0] for h in hits] == ["transferfeat/engines/torchnet/__init__.py"], hits
    assert source_hits(r"[\"']caffe[\"'],\s*[\"']torch[\"']|[\"']torch[\"'],\s*[\"']caffe[\"']") == []
    assert engines.names() == ("caffe", "torch")
    help_text = CliRunner().invoke(main, ["train", "--help"]).output
    assert "[caffe|torch]" in help_text and "[" + "|".join(PRECISIONS) + "]" in help_text


def test_without_torch_the_torch_engine_says_how_to_install_it(tmp_path):
    """In a fresh interpreter where `import torch` fails: a one-line hint, never a traceback."""
    r = without_torch("doctor")
    assert r.returncode == 0 and "Traceback" not in r.stdout
    assert "missing torch" in r.stdout and "pip install 'transferfeat[torch]'" in r.stdout
    study = Study.load(tiny_study_file(tmp_path))
    Renderer(study).render_all(study.select(["half0A"]), tmp_path / "results")
    r = without_torch("train", "half0A", "--root", tmp_path / "results", "--engine", "torch")
    assert r.returncode == 1 and "Traceback" not in r.stdout
    from transferfeat.engines.pytorch import INSTALL_HINT
    assert r.stdout.strip().splitlines()[-1] == f"Error: the torch engine needs PyTorch, which is not installed: {INSTALL_HINT}"
    assert "TF_TORCH=torch==2.13.0 bash scripts/setup.sh" in INSTALL_HINT
    r = without_torch("train", "half0A", "--root", tmp_path / "results", "--engine", "torch", "--precision", "fp64")
    assert r.returncode == 2 and "'fp64' is not one of 'fp32', 'tf32', 'bf16'" in r.stdout


def test_the_readme_layout_table_lists_every_module():
    """Every module of the package (and every subpackage) is named in the README's layout table."""
    readme = (PACKAGE.parent / "README.md").read_text()
    table = readme[readme.index("| stage | module | knows |"):readme.index("A new family is one class")]
    named = set(re.findall(r"`([\w/.]+)`", table))
    for path in PACKAGE.glob("*.py"):
        if path.name != "__init__.py":
            assert path.name in named, path.name
    for sub in (p for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        assert f"{sub.name}/" in named, sub.name
