from __future__ import annotations

import struct

import pytest

from mpim.proto import (
    HEADER_SIZE,
    Decoder,
    Frame,
    Op,
    RemoteProtocolError,
    decode,
    decode_message,
    decode_online,
    encode,
    encode_heartbeat_reply,
)


def raw(pack_len: int, header_len: int = 16, ver: int = 1, op: int = 2, seq: int = 0) -> bytes:
    return struct.pack(">ihhii", pack_len, header_len, ver, op, seq)


def test_encode_is_goim_layout() -> None:
    frame = encode(Op.AUTH, b"tok", ver=1, seq=7)
    assert frame == bytes.fromhex("00000013 0010 0001 00000007 00000007") + b"tok"


def test_heartbeat_reply_carries_online_count() -> None:
    frame = encode_heartbeat_reply(1234, ver=1, seq=9)
    assert frame[:16] == raw(20, op=Op.HEARTBEAT_REPLY, seq=9)
    assert decode_online(frame[16:]) == 1234


def test_round_trip_many_frames_in_one_read() -> None:
    frames = [encode(op, bytes([op]) * op, ver=1, seq=op) for op in range(20)]
    out, tail = decode(b"".join(frames))
    assert tail == b""
    assert out == [Frame(1, op, op, bytes([op]) * op) for op in range(20)]


def test_byte_at_a_time() -> None:
    stream = encode(Op.AUTH, b'{"mid":1}', seq=1) + encode(Op.HEARTBEAT, seq=2) + encode(1000, b"x" * 300)
    decoder = Decoder()
    got: list[Frame] = []
    for i in range(len(stream)):
        got.extend(decoder.feed(stream[i : i + 1]))
        assert decoder.pending < HEADER_SIZE + 4096
    assert [f.op for f in got] == [Op.AUTH, Op.HEARTBEAT, 1000]
    assert got[0].body == b'{"mid":1}' and got[2].body == b"x" * 300
    decoder.close()


@pytest.mark.parametrize("split", range(1, 40))
def test_every_split_point(split: int) -> None:
    stream = encode(4, b"hello", seq=3) + encode(4, b"world!", seq=4)
    decoder = Decoder()
    got = decoder.feed(stream[:split]) + decoder.feed(stream[split:])
    assert [(f.seq, f.body) for f in got] == [(3, b"hello"), (4, b"world!")]


def test_trailing_partial_frame_is_kept() -> None:
    frames, tail = decode(encode(2) + encode(4, b"abc")[:10])
    assert len(frames) == 1 and len(tail) == 10


def test_empty_body_at_max_and_over() -> None:
    assert decode(encode(4, b"a" * 4096))[0][0].body == b"a" * 4096
    with pytest.raises(RemoteProtocolError, match="packLen 4113"):
        decode(encode(4, b"a" * 4097))


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (raw(15), "packLen 15 < 16"),
        (raw(0), "packLen 0 < 16"),
        (raw(-1), "packLen -1 < 16"),
        (raw(16 + 4097), "packLen 4113 > 16"),
        (raw(0x7FFFFFFF), "> 16"),
        (raw(20, header_len=15), "headerLen 15 != 16"),
        (raw(20, header_len=20), "headerLen 20 != 16"),
        (raw(20, header_len=0), "headerLen 0 != 16"),
    ],
)
def test_invalid_headers_fail_before_body_arrives(header: bytes, reason: str) -> None:
    decoder = Decoder()
    with pytest.raises(RemoteProtocolError, match=reason):
        for byte in header:
            decoder.feed(bytes([byte]))


def test_custom_max_body() -> None:
    with pytest.raises(RemoteProtocolError):
        decode(encode(4, b"12345"), max_body=4)
    assert decode(encode(4, b"1234"), max_body=4)[0][0].body == b"1234"


def test_truncated_stream_at_close() -> None:
    decoder = Decoder()
    decoder.feed(encode(4, b"abcdef")[:-1])
    with pytest.raises(RemoteProtocolError, match="stream closed inside a frame"):
        decoder.close()
    decoder.feed(encode(2)[:5])
    with pytest.raises(RemoteProtocolError):
        decoder.close()


def test_buffer_never_grows_past_one_frame() -> None:
    decoder = Decoder(max_body=100)
    big = encode(4, b"z" * 100)
    for _ in range(1000):
        decoder.feed(big[:50])
        decoder.feed(big[50:])
        assert decoder.pending == 0
    with pytest.raises(RemoteProtocolError):
        decoder.feed(b"\x00" * 16)


def test_websocket_message_must_hold_whole_frames() -> None:
    assert [f.op for f in decode_message(encode(2) + encode(4))] == [2, 4]
    with pytest.raises(RemoteProtocolError, match="ends inside a frame"):
        decode_message(encode(4, b"abc")[:-1])
    with pytest.raises(RemoteProtocolError, match="ends inside a frame"):
        decode_message(b"\x00\x00")
    with pytest.raises(RemoteProtocolError, match="empty"):
        decode_message(b"")
