"""``python -m bench.fuzz_campaign --minutes 10``: the tests/fuzz properties with a big budget.

The same (name, strategy, check) targets as the CI fuzz tests, run round-robin in
time slices until the time is up: every target gets an equal share of the wall
clock, in batches of fresh Hypothesis runs (no example database, new random
seeds each batch). Worker targets talk to one real in-process worker over
loopback, as in the tests. A failure is shrunk by Hypothesis and reported with
its reproducing example; the campaign goes on. ``--record`` appends the result
table to bench/RESULTS.md under "Fuzzing campaign".
"""

from __future__ import annotations

import argparse
import datetime
import io
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.reporting import with_reporter

from tests.fuzz import (
    test_auth_fuzz,
    test_config_fuzz,
    test_gozero_fuzz,
    test_http_fuzz,
    test_proto_fuzz,
    test_proxyproto_fuzz,
    test_worker_fuzz,
)
from tests.fuzz.worker_rig import WorkerRig

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "RESULTS.md"
HEADING = "## Fuzzing campaign"


@dataclass
class Target:
    name: str
    strategy: st.SearchStrategy[Any]
    check: Callable[..., None]
    needs_worker: bool
    examples: int = 0
    seconds: float = 0.0
    batches: int = 0
    findings: list[str] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)


def targets() -> list[Target]:
    out = []
    for module in (test_proto_fuzz, test_proxyproto_fuzz, test_auth_fuzz, test_config_fuzz, test_http_fuzz):
        out += [Target(name, strategy, check, False) for name, strategy, check in module.TARGETS]
    for worker_module in (test_worker_fuzz, test_gozero_fuzz):
        out += [Target(name, strategy, check, True) for name, strategy, check in worker_module.TARGETS]
    return out


def _signature(exc: BaseException) -> str:
    """Type and innermost frame: one finding however often it is hit."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
    return f"{type(exc).__name__} at {where}"


def run_batch(target: Target, rig: WorkerRig | None, examples: int) -> BaseException | None:
    """One Hypothesis run of ``examples`` examples; returns the failure, if any."""

    def prop(value: Any) -> None:
        target.examples += 1
        if target.needs_worker:
            target.check(rig, value)
        else:
            target.check(value)

    test = settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        print_blob=True,
    )(given(target.strategy)(prop))
    report = io.StringIO()
    try:
        with with_reporter(lambda text: print(text, file=report)):
            test()
    except Exception as exc:
        key = _signature(exc)
        if key not in target.seen:
            target.seen.add(key)
            notes = "\n".join(getattr(exc, "__notes__", []))
            tail = "".join(traceback.format_exception_only(exc)).strip()
            text = f"{target.name}: {key}\n{tail}\n{notes or report.getvalue()}".strip()
            target.findings.append(text)
            print(f"\n!! finding in {target.name}:\n{text}\n", flush=True)
        return exc
    return None


def campaign(
    minutes: float, only: list[str], batch: int, worker_batch: int, slice_seconds: float
) -> list[Target]:
    chosen = [t for t in targets() if not only or any(t.name.startswith(p) for p in only)]
    deadline = time.monotonic() + minutes * 60
    slice_seconds = slice_seconds or max(5.0, minutes * 60 / (3 * len(chosen)))
    rig: WorkerRig | None = None
    try:
        while time.monotonic() < deadline:
            for target in chosen:
                if target.needs_worker and rig is None:
                    rig = WorkerRig(**test_worker_fuzz.RIG_SECTIONS).__enter__()
                end = min(deadline, time.monotonic() + slice_seconds)
                while time.monotonic() < end:
                    started = time.monotonic()
                    failure = run_batch(target, rig, worker_batch if target.needs_worker else batch)
                    target.seconds += time.monotonic() - started
                    target.batches += 1
                    if failure is not None and target.needs_worker and rig is not None:
                        rig.__exit__(None, None, None)  # a fresh worker after a failed check
                        rig = WorkerRig(**test_worker_fuzz.RIG_SECTIONS).__enter__()
                print(
                    f"{target.name:18} {target.examples:>9} examples {target.seconds:7.1f} s "
                    f"{len(target.findings)} finding(s)",
                    flush=True,
                )
                if time.monotonic() >= deadline:
                    break
    finally:
        if rig is not None:
            rig.__exit__(None, None, None)
    return chosen


def report(chosen: list[Target], command: str, minutes: float) -> str:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    ).stdout.strip()
    import hypothesis

    lines = [
        f"### Run of {datetime.date.today().isoformat()}, commit {commit or '?'}",
        "",
        f"Command: `{command}` ({minutes:g} min). Machine: 2 vCPU VM shared with other work, "
        f"CPython {platform.python_version()}, Hypothesis {hypothesis.__version__}. "
        "Examples count every call of the property, shrinking included.",
        "",
        "| target | examples | seconds | examples/s | findings |",
        "|---|---:|---:|---:|---|",
    ]
    for t in chosen:
        rate = t.examples / t.seconds if t.seconds else 0.0
        found = "; ".join(f.splitlines()[0].split(": ", 1)[1] for f in t.findings) or "none"
        lines.append(f"| {t.name} | {t.examples:,} | {t.seconds:.0f} | {rate:,.0f} | {found} |")
    total = sum(t.examples for t in chosen)
    lines += ["", f"Total: {total:,} examples, {sum(len(t.findings) for t in chosen)} finding(s)."]
    for t in chosen:
        for finding in t.findings:
            lines += ["", "```", finding[:3000], "```"]
    return "\n".join(lines) + "\n"


def record(block: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else "# mpim benchmark results\n"
    if HEADING not in text:
        RESULTS.write_text(text.rstrip("\n") + f"\n\n{HEADING}\n\n" + block)
        return
    start = text.index(HEADING)
    following = text.find("\n## ", start + len(HEADING))
    end = len(text) if following < 0 else following + 1
    section = text[:end].rstrip("\n") + "\n\n" + block
    RESULTS.write_text(section + ("\n" + text[end:] if following >= 0 else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.fuzz_campaign", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget for all targets")
    parser.add_argument("--only", action="append", default=[], help="target name prefix (repeatable)")
    parser.add_argument("--batch", type=int, default=1000, help="examples per Hypothesis run, pure targets")
    parser.add_argument("--worker-batch", type=int, default=200, help="examples per run, worker targets")
    parser.add_argument("--slice", type=float, default=0.0, help="seconds per target per round; 0 = 3 rounds")
    parser.add_argument("--record", action="store_true", help="append the result to bench/RESULTS.md")
    args = parser.parse_args(argv)
    command = "python -m bench.fuzz_campaign " + " ".join(sys.argv[1:] if argv is None else argv)
    os.environ.setdefault("PYTHONHASHSEED", "0")
    chosen = campaign(args.minutes, args.only, args.batch, args.worker_batch, args.slice)
    block = report(chosen, command.strip(), args.minutes)
    print("\n" + block)
    if args.record:
        record(block)
        print(f"appended to {RESULTS}")
    return 1 if any(t.findings for t in chosen) else 0


if __name__ == "__main__":
    sys.exit(main())
