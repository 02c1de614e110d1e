"""``mpim push`` on the command line, against a stand-in ingress socket (no router)."""

from __future__ import annotations

from collections.abc import Iterator

import msgpack
import pytest
import zmq

from mpim import push
from mpim.cli import build_parser


@pytest.fixture
def ingress() -> Iterator[tuple[str, zmq.Socket[bytes]]]:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    yield f"tcp://127.0.0.1:{port}", sock
    ctx.destroy(linger=0)


def cli(*argv: str) -> int:
    return push.run(build_parser().parse_args(["push", *argv]), "")


def test_room_without_type_is_refused(
    ingress: tuple[str, zmq.Socket[bytes]], capsys: pytest.CaptureFixture[str]
) -> None:
    endpoint, sock = ingress
    assert cli("room", "--op", "1000", "--room", "1000", "--endpoint", endpoint) == 2
    err = capsys.readouterr().err
    assert err == (
        "mpim push room: room id '1000' has no type: clients join full room ids such as "
        "'live://1000' (pass --raw-room to push to '1000' anyway)\n"
    )
    assert not sock.poll(0)  # nothing was sent


def test_raw_room_sends_the_room_id_as_given(ingress: tuple[str, zmq.Socket[bytes]]) -> None:
    endpoint, sock = ingress
    argv = ["room", "--op", "1000", "--room", "1000", "--raw-room", "--body", "x", "--no-wait"]
    assert cli(*argv, "--endpoint", endpoint) == 0
    assert sock.poll(5000)
    _, frame = sock.recv_multipart()
    request = msgpack.unpackb(frame, raw=False)
    assert (request["kind"], request["room"], request["reply"]) == ("room", "1000", False)
