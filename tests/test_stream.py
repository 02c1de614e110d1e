"""The link's framing: length-prefixed frames of records, split anywhere, batched per loop turn."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mpim import records, stream
from mpim.records import Bye, Disconnect, Hello


class Recorder(stream.FrameProtocol):
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.frames: list[bytes] = []

    def on_frame(self, payload: bytes) -> None:
        self.frames.append(payload)


class Transport:
    def __init__(self) -> None:
        self.data = bytearray()
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.data += data

    def get_write_buffer_size(self) -> int:
        return 0

    def abort(self) -> None:
        self.aborted = True

    def close(self) -> None:
        pass


def turn(loop: asyncio.AbstractEventLoop) -> None:
    loop.call_soon(loop.stop)
    loop.run_forever()


@pytest.mark.parametrize("step", [1, 3, 7, 1000])
def test_what_one_turn_sends_is_one_frame_and_splits_back_anywhere(loop: Any, step: int) -> None:
    sender, receiver = Recorder(loop), Recorder(loop)
    transport = Transport()
    sender.connection_made(transport)
    sender.send(records.encode(Hello("h", "1", 2)))
    sender.send(records.encode(Disconnect("k")))
    turn(loop)
    sender.send(records.encode(Bye()))
    turn(loop)
    data = bytes(transport.data)
    for i in range(0, len(data), step):
        receiver.data_received(data[i : i + step])
    decode = records.Decoder(list[records.WorkerRecord])
    assert [decode(f) for f in receiver.frames] == [[Hello("h", "1", 2), Disconnect("k")], [Bye()]]


def test_an_oversized_frame_closes_the_link(loop: Any) -> None:
    receiver = Recorder(loop)
    transport = Transport()
    receiver.connection_made(transport)
    receiver.data_received((stream.MAX_FRAME + 1).to_bytes(4, "big") + b"x")
    assert transport.aborted and receiver.frames == []
