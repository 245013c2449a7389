"""The import graph of messaging/: no import loops, the queue module a leaf, channels that import
nothing of the engine, the tasks imported by nobody but the composition root (ARCHITECTURE.md,
"Dependency direction").

Every module under messaging/ (migrations aside) is parsed with `ast`, imports inside
functions included: a function-level import only postpones a loop, it does not remove it.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "messaging"

# The only edges allowed to close a loop: the model methods the contract (SPEC §2) names,
# which delegate to the engine because the work is more than a few lines. The engine imports
# the models, so each of these closes a loop models ↔ engine; the imports stay inside the
# methods, so that importing the models never imports the engine.
ALLOWED_CYCLE_EDGES = {
    # Message.prepare_message_receivers / create_message_receivers,
    # MessageReceiver.objects.create_receiver
    ("messaging.models.engine", "messaging.engine.preparing"),
    # Message.prepare_and_send
    ("messaging.models.engine", "messaging.engine.sending"),
    # MessageReceiver.send
    ("messaging.models.engine", "messaging.engine.delivery"),
}

QUEUE = "messaging.engine.queue"
QUEUE_MAY_IMPORT = {"messaging.conf"}
TASKS = "messaging.tasks"
# The composition root (AppConfig.ready imports the tasks so they register with the queue).
MAY_IMPORT_TASKS = {"messaging.apps"}
# A channel gets what it sends (an Outgoing) and answers: it imports settings and its own
# package, never the engine, the models or anything that reads the database.
CHANNELS = "messaging.engine.channels"
CHANNELS_MAY_IMPORT = {"messaging.conf"}


def module_files() -> dict[str, Path]:
    modules = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        if "migrations" in path.relative_to(ROOT).parts:
            continue
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: Iterable[str]) -> str | None:
    """The module `name` is, or the closest module above it (an attribute's module)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imported_modules(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The messaging modules `module` imports, anywhere in it. `from a.b import c` is a.b.c when
    c is a module, else a.b; relative imports are resolved against the module's package."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names = [f"{source}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                target = _resolve(name, modules)
                if target and target != module:
                    found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = module_files()
    return {module: imported_modules(module, path, modules) for module, path in modules.items()}


def strongly_connected_components(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; only the components of more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph.get(successor, ())))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        components.append(sorted(component))
    return components


def describe(components: list[list[str]], graph: dict[str, set[str]]) -> str:
    lines = []
    for component in components:
        members = set(component)
        lines.append(f"Import loop of {len(component)} modules: {', '.join(component)}")
        ties = [
            f"    {a} <-> {b}"
            for a in component
            for b in sorted(graph[a] & members)
            if a < b and a in graph[b]
        ]
        lines.extend(["  two-way ties (cut one of these first):", *ties] if ties else [])
        lines.append("  edges within the loop:")
        lines.extend(f"    {a} -> {', '.join(sorted(graph[a] & members))}" for a in component)
    return "\n".join(lines)


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_the_graph_sees_the_imports(graph):
    """A sanity check of the parser: module-level, function-level and `from package import
    module` imports all count."""
    assert "messaging.engine.delivery" in graph[TASKS]  # from messaging.engine import delivery
    assert "messaging.models" in graph["messaging.engine.delivery"]  # from messaging.models import ...
    assert "messaging.engine.preparing" in graph["messaging.models.engine"]  # inside a method
    assert "migrations" not in " ".join(graph)


def test_imports_resolve_to_modules(tmp_path):
    path = tmp_path / "c.py"
    path.write_text(
        "from .. import x\nfrom .d import name\nimport messaging.a.d as alias\n"
        "def later():\n    from messaging.a import b, attribute\n"
    )
    modules = dict.fromkeys(
        ["messaging", "messaging.x", "messaging.a", "messaging.a.b", "messaging.a.d"], path
    )
    assert imported_modules("messaging.a.c", path, modules) == {
        "messaging.x",  # from .. import x: a module
        "messaging.a.d",  # from .d import name: an attribute of the module
        "messaging.a.b",  # inside a function
        "messaging.a",  # from messaging.a import attribute
    }


def test_cycle_detection_finds_a_loop():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"e2"}, "e2": {"e"}}
    assert strongly_connected_components(graph) == [["a", "b", "c"], ["e", "e2"]]
    assert "e <-> e2" in describe(strongly_connected_components(graph), graph)


def test_no_import_loops(graph):
    pruned = {
        module: targets - {t for (s, t) in ALLOWED_CYCLE_EDGES if s == module}
        for module, targets in graph.items()
    }
    loops = strongly_connected_components(pruned)
    assert not loops, (
        "messaging/ has import loops (ARCHITECTURE.md: models know nothing of services, the engine "
        "does not import tracking, views or tasks, read-side code only reads). Move the function "
        "to the module the dependency points at, or invert the call.\n" + describe(loops, pruned)
    )


def test_allowed_loop_edges_are_still_needed(graph):
    """An allowance that no longer exists is removed from the list, so it cannot hide a new one."""
    stale = sorted((s, t) for (s, t) in ALLOWED_CYCLE_EDGES if t not in graph.get(s, set()))
    assert not stale, f"These allowed edges are gone; remove them from ALLOWED_CYCLE_EDGES: {stale}"


def test_the_queue_module_is_a_leaf(graph):
    assert QUEUE in graph, "messaging/engine/queue.py is where services queue work"
    extra = graph[QUEUE] - QUEUE_MAY_IMPORT
    assert not extra, f"{QUEUE} may import nothing from messaging but conf; it imports {sorted(extra)}"


def channel_imports_out_of_bounds(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} imports {target}"
        for module, targets in graph.items()
        if module == CHANNELS or module.startswith(CHANNELS + ".")
        for target in targets
        if target not in CHANNELS_MAY_IMPORT and not (target == CHANNELS or target.startswith(CHANNELS + "."))
    )


def test_channels_import_nothing_but_settings_and_their_own_package(graph):
    assert {f"{CHANNELS}.email", f"{CHANNELS}.base"} <= set(graph)
    assert channel_imports_out_of_bounds(graph) == [], (
        "A channel gets what it sends (Outgoing, prepared by messaging.engine.outgoing); "
        "it must not import the engine, the models or the services."
    )


def test_the_channel_rule_sees_a_channel_reaching_into_the_engine():
    graph = {
        f"{CHANNELS}.email": {"messaging.conf", f"{CHANNELS}.base", "messaging.models"},
        f"{CHANNELS}.sms": {"messaging.engine.outgoing"},
        "messaging.engine.delivery": {"messaging.models", CHANNELS},
    }
    assert channel_imports_out_of_bounds(graph) == [
        f"{CHANNELS}.email imports messaging.models",
        f"{CHANNELS}.sms imports messaging.engine.outgoing",
    ]


def test_only_the_composition_root_imports_the_tasks(graph):
    importers = sorted(m for m, targets in graph.items() if TASKS in targets and m not in MAY_IMPORT_TASKS)
    assert not importers, (
        f"{importers} import {TASKS}; queue work through messaging.engine.queue instead "
        "(the tasks call the services, so a service importing them makes a loop)."
    )


def test_every_queued_task_is_registered():
    """Each task the queue module queues is registered by messaging.tasks, which
    MessagingConfig.ready() imports (so Django being set up is enough)."""
    from messaging.engine import queue

    source = (ROOT / "messaging" / "engine" / "queue.py").read_text()
    queued = set(re.findall(r'_task\("(\w+)"\)', source))
    assert queued, "the queue module queues tasks by name through _task(...)"
    assert queued <= set(queue._tasks), f"not registered: {sorted(queued - set(queue._tasks))}"
    from messaging import tasks

    for name in queued:
        assert queue._tasks[name] is getattr(tasks, name), name


def test_queueing_an_unregistered_task_says_why(monkeypatch):
    from messaging.engine import queue

    monkeypatch.setattr(queue, "_tasks", {})
    with pytest.raises(queue.TaskNotRegistered, match=r"messaging\.tasks has not been imported"):
        queue.deliver_message(1)
