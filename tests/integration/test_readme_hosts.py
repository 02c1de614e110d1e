"""The README's "Several hosts" commands, run as pasted: redis-server, two masters from
examples/host-a.toml and host-b.toml, a client on host B and two pushes through host A.

Only what cannot be shared with other runs on the machine is changed: every port (in the
commands and in copies of the two example configs), ``.venv/bin/mpim`` (this interpreter)
and ``redis-server`` (the binary the Redis tests use, with its files in the test's folder).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from tests.redis_support import redis_binary
from tests.support import ROOT, free_port

PORTS = (6379, 3101, 3102, 3111, 3112, 4101, 4102, 4111, 4112)


def commands() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("Two hosts on one machine, copy-paste")
    block = text[start:].split("\n\n", 2)[1]
    lines = [line[4:] for line in block.splitlines()]
    assert all(line for line in lines) and lines[0].startswith("redis-server"), lines
    return "\n".join(lines)


def remap(text: str, ports: dict[int, int]) -> str:
    alternatives = "|".join(map(str, ports))
    return re.sub(rf"(?<!\d)({alternatives})(?!\d)", lambda m: str(ports[int(m[1])]), text)


def test_the_several_hosts_commands_run_as_pasted(tmp_path: Path) -> None:
    ports = {port: free_port() for port in PORTS}
    for name in ("host-a", "host-b"):
        config = (ROOT / "examples" / f"{name}.toml").read_text()
        (tmp_path / f"{name}.toml").write_text(remap(config, ports))
    script = remap(commands(), ports)
    script = script.replace("examples/host-", f"{tmp_path}/host-")
    script = script.replace(".venv/bin/mpim", f"{sys.executable} -m mpim")
    script = script.replace("redis-server ", f"{redis_binary()} --dir {tmp_path} ", 1)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        ["bash", "-c", f"set -e\n{script}\nsleep 1\nkill $(jobs -p) || true\nwait || true\n"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        out, _ = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out = proc.communicate()[0]
        raise AssertionError(f"the commands did not finish:\n{out[-3000:]}") from None
    finally:
        with_masters = subprocess.run(["pkill", "-TERM", "-g", str(proc.pid)], check=False)
        assert with_masters.returncode in (0, 1)
        subprocess.run(
            [
                redis_binary().replace("redis-server", "redis-cli"),
                "-p",
                str(ports[6379]),
                "shutdown",
                "nosave",
            ],
            check=False,
            capture_output=True,
        )
    assert proc.returncode == 0, out[-3000:]
    assert out.count('"code":0') == 2, out[-3000:]  # both pushes answered ok through host A
    assert "push op=1000 body=hello from A" in out, out[-3000:]
    assert "push op=1000 body=room via A" in out, out[-3000:]
