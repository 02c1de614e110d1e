"""Room order (README "Pushing messages": pushes to one room reach every member in the order
the router accepted them; with several hosts, "a room's order is the same at every client").

Two checks, both ``room-order``:

- **real time**: when push A was answered before push B was sent, A was accepted first, so a
  connection that got both must get A first (pushes with an unknown outcome have no known
  answer time and order nothing);
- **one order for all**: the orders the connections saw must fit one sequence per room. Each
  connection's consecutive pair (A then B) is an edge A -> B; a cycle in a room's graph means
  two clients saw two pushes in opposite orders.
"""

from __future__ import annotations

from collections import defaultdict

from bench.chaos.checker.base import Violation
from bench.chaos.checker.model import Model, Push
from bench.chaos.history import Op


def check(model: Model) -> list[Violation]:
    out: list[Violation] = []
    edges: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    witness: dict[tuple[str, str], tuple[Op, Op]] = {}
    for conn in model.conns.values():
        seen: list[tuple[Push, Op]] = []
        for f in conn.frames:
            push = model.item_of(f)[1]
            if push is not None and push.target == "room":
                seen.append((push, f))
        latest: tuple[Push, Op] | None = None  # the push received so far that was sent last
        for i, (push, f) in enumerate(seen):
            if latest is not None and push.op.end is not None and push.op.end < latest[0].op.time:
                out.append(
                    Violation(
                        "room-order",
                        f"{conn.id} got {push.body} after {latest[0].body}, but {push.body} was answered"
                        f" before {latest[0].body} was sent",
                        [push.op, latest[0].op, latest[1], f],
                    )
                )
            if latest is None or push.op.time > latest[0].op.time:
                latest = (push, f)
            if i:
                prev, pf = seen[i - 1]
                if prev.body != push.body:
                    edges[push.room][prev.body].add(push.body)
                    witness.setdefault((prev.body, push.body), (pf, f))
    for room, graph in edges.items():
        cycle = _cycle(graph)
        if cycle:
            pairs = list(zip(cycle, cycle[1:] + cycle[:1], strict=True))
            ops = [o for pair in pairs[:4] for o in witness.get(pair, ())]
            out.append(
                Violation(
                    "room-order",
                    f"room {room}: clients saw pushes in conflicting orders: "
                    + " -> ".join([*cycle, cycle[0]]),
                    ops,
                )
            )
    return out


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle of the graph (iterative depth-first search), or []."""
    state: dict[str, int] = {}  # 1 on the path, 2 done
    for root in list(graph):
        if root in state:
            continue
        path: list[str] = []
        stack: list[tuple[str, list[str]]] = [(root, sorted(graph.get(root, ())))]
        state[root] = 1
        path.append(root)
        while stack:
            node, todo = stack[-1]
            if not todo:
                stack.pop()
                path.pop()
                state[node] = 2
                continue
            nxt = todo.pop()
            if state.get(nxt) == 1:
                return path[path.index(nxt) :]
            if nxt not in state:
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(graph.get(nxt, ()))))
    return []
