"""The package's layout: each module short, data flowing one way, the public names where promised.

* every module of ``rlhf_lab`` has at most 300 lines;
* the import graph between its modules (every ``import``, at module level or inside a function,
  read with ``ast``) has no cycle;
* an algorithm module imports no other algorithm module: of ``rlhf_lab.algos`` it imports only
  the plumbing (``loop``, ``evaluate``, ``experience``), and the plumbing imports no algorithm;
* every algorithm module's entry point is ``train``;
* every name of the public API (DESIGN.md, "Public API") is importable where it says, and every
  name the chapters import from ``rlhf_lab`` or reach as ``module.name`` is importable there.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "rlhf_lab"
MAX_LINES = 300
ALGORITHMS = ("sft", "reinforce", "a2c", "ppo", "reward_model", "best_of_n", "dpo", "grpo")
PLUMBING = ("loop", "evaluate", "experience")
# DESIGN.md's public API: module -> names (shared/DESIGN.md lives beside the repository)
API = {
    "rlhf_lab.core": ["token_logprobs", "sequence_logprobs", "entropy_from_logits", "kl_penalty", "masked_mean",
                      "masked_whiten", "gae"],
    "rlhf_lab.algos.reinforce": ["reinforce_loss"],
    "rlhf_lab.algos.ppo": ["ppo_policy_loss", "value_loss"],
    "rlhf_lab.algos.reward_model": ["bradley_terry_loss"],
    "rlhf_lab.algos.dpo": ["dpo_loss", "simpo_loss"],
    "rlhf_lab.algos.grpo": ["group_advantages", "rloo_advantages", "grpo_loss"],
    "rlhf_lab.algos.best_of_n": ["bon_kl_bound", "exact_best_of_n"],
    "rlhf_lab.exact": ["kl_regularized_optimum", "kl", "entropy", "expected"],
}
DESIGN = ROOT.parent / "shared" / "DESIGN.md"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports(path: Path) -> set[str]:
    """The modules of ``rlhf_lab`` that ``path`` imports (``from pkg import submodule`` counts as
    the submodule)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "rlhf_lab"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "rlhf_lab":
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                found.add(sub if sub in MODULES else node.module)
    return found & set(MODULES)


GRAPH = {name: imports(path) for name, path in MODULES.items()}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_short(name):
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{MODULES[name].relative_to(ROOT)} has {lines} lines (at most {MAX_LINES})"


def test_the_import_graph_has_no_cycle():
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(GRAPH[node]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep]
                pytest.fail("import cycle: " + " → ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for name in sorted(GRAPH):
        if name not in state:
            visit(name, [name])


def test_the_listed_modules_exist():
    algos = {n.rsplit(".", 1)[1] for n in MODULES if n.startswith("rlhf_lab.algos.")}
    assert set(ALGORITHMS) | set(PLUMBING) == algos, "list every module of rlhf_lab.algos in ALGORITHMS or PLUMBING"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_an_algorithm_imports_only_plumbing_from_algos(algorithm):
    used = {n.rsplit(".", 1)[1] for n in GRAPH[f"rlhf_lab.algos.{algorithm}"] if n.startswith("rlhf_lab.algos.")}
    assert used <= set(PLUMBING), f"algos/{algorithm}.py imports {sorted(used - set(PLUMBING))}"


@pytest.mark.parametrize("plumbing", PLUMBING)
def test_the_plumbing_imports_no_algorithm(plumbing):
    used = {n.rsplit(".", 1)[1] for n in GRAPH[f"rlhf_lab.algos.{plumbing}"] if n.startswith("rlhf_lab.algos.")}
    assert not used & set(ALGORITHMS), f"algos/{plumbing}.py imports {sorted(used & set(ALGORITHMS))}"


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_is_trained_by_train(algorithm):
    assert callable(importlib.import_module(f"rlhf_lab.algos.{algorithm}").train)


def test_the_old_entry_points_are_aliases():
    from rlhf_lab.algos import best_of_n, dpo, grpo

    assert grpo.train_grpo is grpo.train and dpo.train_dpo is dpo.train
    assert best_of_n.train_rejection_sampling is best_of_n.train


@pytest.mark.parametrize("module", sorted(API))
def test_the_public_api_is_importable_where_design_says(module):
    missing = [name for name in API[module] if not hasattr(importlib.import_module(module), name)]
    assert not missing, f"{module} lacks {missing}"


def design_api(text: str) -> dict[str, set[str]]:
    """module -> names, from the bullets of DESIGN.md's "Public API" section."""
    section = text.split("### Public API", 1)[1].split("\n## ", 1)[0]
    api: dict[str, set[str]] = {}
    module = None
    for line in section.splitlines():
        heading = re.match(r"^`(rlhf_lab[\w.]*)`", line)
        if heading:
            module = heading.group(1)
        if line.startswith("- ") and module:
            for called in re.findall(r"`([\w.]+)\(", line):  # `name(...)` or `algo.name(...)`
                where, _, name = called.rpartition(".")
                api.setdefault(f"{module}.{where}" if where else module, set()).add(name)
    return api


@pytest.mark.skipif(not DESIGN.exists(), reason="shared/DESIGN.md is not beside this checkout")
def test_the_api_list_covers_design_md():
    listed = {module: set(names) for module, names in API.items()}
    for module, names in design_api(DESIGN.read_text(encoding="utf-8")).items():
        assert names <= listed.get(module, set()), f"DESIGN.md lists {sorted(names)} in {module}; update API"


def chapter_code(path: Path) -> list[ast.Module]:
    """The code cells of a MyST chapter, parsed (lines starting with % or ! dropped)."""
    trees = []
    for cell in re.findall(r"^```\{code-cell\}[^\n]*\n(.*?)^```", path.read_text(encoding="utf-8"), re.M | re.S):
        source = "\n".join(line for line in cell.splitlines() if not line.lstrip().startswith(("%", "!", ":")))
        try:
            trees.append(ast.parse(source))
        except SyntaxError:
            continue
    return trees


@pytest.mark.parametrize("chapter", sorted((ROOT / "chapters").glob("*.md")), ids=lambda p: p.stem)
def test_every_name_a_chapter_uses_is_importable(chapter):
    missing = []
    for tree in chapter_code(chapter):
        modules = {}  # a name bound to an rlhf_lab module -> the module
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "rlhf_lab":
                parent = importlib.import_module(node.module)
                for a in node.names:
                    try:
                        modules[a.asname or a.name] = importlib.import_module(f"{node.module}.{a.name}")
                    except ModuleNotFoundError:
                        if not hasattr(parent, a.name):
                            missing.append(f"from {node.module} import {a.name}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules
                    and not hasattr(modules[node.value.id], node.attr)):
                missing.append(f"{modules[node.value.id].__name__}.{node.attr}")
    assert not missing, f"{chapter.name} uses names that are gone: {sorted(set(missing))}"
