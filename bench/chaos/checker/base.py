"""What a rule finds: a :class:`Violation` names the rule, says what went wrong and lists the
operations involved; the :class:`Report` gathers them and gives the verdict.

Some rules check guarantees that an issue added (issue 22: host leases, counts within
their window). Their violations carry that issue's number; a run started with
``--known-pending issue-22`` (against a checkout from before it) still finds and prints
them, but lists them apart as known-pending instead of failing the verdict. Nothing else
is relaxed by that flag.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from bench.chaos.history import Op

SHOWN_PER_RULE = 3  # violations printed in full per rule (all are counted, and all go to summary.json)


@dataclass
class Violation:
    rule: str
    message: str
    ops: list[Op]
    issue: int | None = None  # the open issue whose fix this guarantee waits for

    def text(self) -> str:
        tag = f" [issue {self.issue}]" if self.issue else ""
        lines = [f"{self.rule}{tag}: {self.message}"]
        lines += [f"    {op.brief()}" for op in self.ops[:8]]
        if len(self.ops) > 8:
            lines.append(f"    ... and {len(self.ops) - 8} more operations")
        return "\n".join(lines)


@dataclass
class Report:
    violations: list[Violation]
    known_pending: frozenset[int] = frozenset()
    stats: dict[str, int] = field(default_factory=dict)

    @property
    def failing(self) -> list[Violation]:
        return [v for v in self.violations if v.issue not in self.known_pending or v.issue is None]

    @property
    def pending(self) -> list[Violation]:
        return [v for v in self.violations if v.issue is not None and v.issue in self.known_pending]

    @property
    def valid(self) -> bool:
        return not self.failing

    def by_rule(self, violations: list[Violation]) -> Counter[str]:
        return Counter(v.rule for v in violations)

    def text(self) -> str:
        """The first violations of each rule with their operations, failing ones first."""
        out: list[str] = []
        for title, group in (("violations", self.failing), ("known-pending", self.pending)):
            if not group:
                continue
            counts = self.by_rule(group)
            out.append(f"{title}: " + ", ".join(f"{rule} {n}" for rule, n in sorted(counts.items())))
            for rule in sorted(counts):
                shown = [v for v in group if v.rule == rule][:SHOWN_PER_RULE]
                out += [v.text() for v in shown]
                if counts[rule] > len(shown):
                    out.append(f"  ({counts[rule] - len(shown)} more {rule} violations in summary.json)")
        return "\n".join(out)
