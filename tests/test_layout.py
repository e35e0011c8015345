"""The package's shape, read from its source: imports flow one way, MLflow stays behind
``pipeline.tracking``, metric and tag names live in ``pipeline.names``, and no file or function
grows past what a reader takes in at once."""
import ast
import re
from pathlib import Path


PACKAGE = Path(__file__).resolve().parents[1] / "pipeline"
SOURCES = sorted(PACKAGE.rglob("*.py"))
MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 350
# A string literal that spells a metric key, an image key or a tag key of the project.
NAME_LITERAL = re.compile(r"""[rbf]?["'](?:(?:loss|prob|grad|eval|perf|traversal|samples)/|infogan\.|"""
                          r"""optuna\.(?:study|trial|state|retried_from|storage|direction|metric|best_))""")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every ``pipeline`` module that ``path`` imports, at the top or inside a function."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    known = {module_name(p) for p in SOURCES}
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = f"{base}.{node.module}" if node.level and node.module else (base if node.level else node.module)
            for alias in node.names:
                for candidate in (f"{target}.{alias.name}", target):
                    if candidate in known:
                        found.add(candidate)
                        break
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
    return found - {module_name(path)}


def find_cycle(graph: dict[str, set[str]]):
    """The first import cycle found in ``graph`` (module -> modules it imports), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str):
        state[node] = "open"
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == "open":
                return path[path.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        path.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_imports_form_no_cycle():
    graph = {module_name(p): imported_modules(p) for p in SOURCES}
    assert graph["pipeline.train"] >= {"pipeline.loop", "pipeline.runs", "pipeline.tracking"}  # the graph is read
    # A package imports its own modules to re-export them; that is not a dependency of theirs.
    packages = {module_name(p) for p in SOURCES if p.name == "__init__.py"}
    graph = {name: {d for d in deps if not (name in packages and d.startswith(name + "."))}
             for name, deps in graph.items()}
    assert find_cycle(graph) is None


def test_the_cycle_check_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_only_the_tracking_package_imports_mlflow():
    outside = []
    for path in SOURCES:
        if PACKAGE / "tracking" in path.parents:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            outside += [f"{path.relative_to(PACKAGE)}:{node.lineno}" for n in names if n.split(".")[0] == "mlflow"]
    assert outside == []


def test_metric_and_tag_names_are_spelled_only_in_names_py():
    spelled = [f"{path.relative_to(PACKAGE)}:{number}: {line.strip()}"
               for path in SOURCES if path.name != "names.py"
               for number, line in enumerate(path.read_text().splitlines(), start=1)
               if NAME_LITERAL.search(line)]
    assert spelled == []


def test_the_literal_check_sees_what_it_is_for():
    assert NAME_LITERAL.search('tracker.log_metrics({"loss/d": 1.0}, step=3)')
    assert NAME_LITERAL.search("tags={'infogan.stage': 'train'}")
    assert NAME_LITERAL.search('key = f"eval/cont_c{k}_slant"')
    assert not NAME_LITERAL.search("# logs loss/d every train.log_every steps")
    assert not NAME_LITERAL.search('path = "configs/eval.yaml"')
    assert NAME_LITERAL.search('tags = {"optuna.trial": trial.number}')
    assert not NAME_LITERAL.search("url = f\"sqlite:///{folder / 'optuna.db'}\"")


def test_no_module_or_function_is_too_long():
    too_long = []
    for path in SOURCES:
        source = path.read_text()
        if len(source.splitlines()) > MAX_MODULE_LINES:
            too_long.append(f"{path.relative_to(PACKAGE)}: {len(source.splitlines())} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {length} lines")
    assert too_long == []


MAX_PARAMETERS = 8


def parameter_count(node: ast.FunctionDef) -> int:
    """A function's parameters, ``self`` and ``cls`` not counted."""
    args = node.args
    named = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
    return len(named) - (named[:1] in (["self"], ["cls"])) + (args.vararg is not None) + (args.kwarg is not None)


def test_no_function_takes_more_than_eight_parameters():
    """The step's 19 positional arguments became a typed plan; what travels together is one object."""
    crowded = [f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name}: {parameter_count(node)}"
               for path in SOURCES for node in ast.walk(ast.parse(path.read_text()))
               if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and parameter_count(node) > MAX_PARAMETERS]
    assert crowded == []


def test_the_parameter_count_sees_what_it_is_for():
    def first(source: str) -> ast.FunctionDef:
        return ast.parse(source).body[0]

    assert parameter_count(first("def f(self, a, b=1, *c, d, **e): pass")) == 5
    assert parameter_count(first("def f(a, b, c, d, e, f, g, h, i): pass")) == 9


def test_the_step_s_rules_have_one_home():
    """Which option excludes another or does nothing under it is said in plan.py alone: config
    validation, the report and the step read it from there (tests/test_plan.py checks that they
    follow it)."""
    rule_words = re.compile(r"must be false with|[\"'][^\"']*has no effect|MOOT_UNDER|\.d_augment and |info_augment and ")
    elsewhere = [f"{path.relative_to(PACKAGE)}:{number}" for path in SOURCES if path.name != "plan.py"
                 for number, line in enumerate(path.read_text().splitlines(), start=1) if rule_words.search(line)]
    assert elsewhere == []
