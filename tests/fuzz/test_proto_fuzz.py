"""The goim codec against a small reference reading of the header table.

Whatever the bytes and however they are split, ``Decoder.feed``, ``decode`` and
``decode_message`` either return frames or raise ``RemoteProtocolError``; the
buffered tail stays under one maximal frame; a bad header is reported by the
very feed that completes its 16 bytes; valid frames round-trip exactly.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mpim.proto import (
    HEADER_SIZE,
    Decoder,
    Frame,
    RemoteProtocolError,
    decode,
    decode_message,
    decode_online,
    encode,
    encode_heartbeat_reply,
)
from tests.fuzz.model import reference
from tests.fuzz.strategies import CUTS, INT16, INT32, OPS, chunks, goim_streams

FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check_feed(max_body: int, stream: bytes, cuts: list[int]) -> None:
    expected, bad_at = reference(stream, max_body)
    decoder = Decoder(max_body)
    got: list[Frame] = []
    fed = 0
    for piece in chunks(stream, cuts):
        before, fed = fed, fed + len(piece)
        if bad_at is not None and fed >= bad_at:
            try:
                decoder.feed(piece)
            except RemoteProtocolError:
                assert got == [f for end, f in expected if end <= before]
                return
            raise AssertionError(f"bad header complete at byte {bad_at} but feed up to {fed} passed")
        got += decoder.feed(piece)
        done = [(end, f) for end, f in expected if end <= fed]
        assert got == [f for _, f in done]
        assert decoder.pending == fed - (done[-1][0] if done else 0)
        assert decoder.pending < HEADER_SIZE + max_body
    assert bad_at is None
    if decoder.pending:
        try:
            decoder.close()
        except RemoteProtocolError:
            assert decoder.pending == 0
        else:
            raise AssertionError("close() with a partial frame buffered did not raise")
    else:
        decoder.close()


def check_whole(max_body: int, stream: bytes) -> None:
    expected, bad_at = reference(stream, max_body)
    try:
        frames, tail = decode(stream, max_body)
    except RemoteProtocolError:
        assert bad_at is not None
    else:
        assert bad_at is None
        assert frames == [f for _, f in expected]
        assert tail == stream[expected[-1][0] if expected else 0 :]
    try:
        message = decode_message(stream, max_body)
    except RemoteProtocolError:
        assert bad_at is not None or not expected or expected[-1][0] != len(stream)
    else:
        assert bad_at is None and message == [f for _, f in expected]
        assert expected[-1][0] == len(stream)


def check_roundtrip(max_body: int, sent: list[Frame], cuts: list[int]) -> None:
    stream = b"".join(encode(f.op, f.body, f.ver, f.seq) for f in sent)
    decoder = Decoder(max_body)
    got: list[Frame] = []
    for piece in chunks(stream, cuts):
        got += decoder.feed(piece)
    assert got == sent and decoder.pending == 0
    decoder.close()
    assert decode(stream, max_body) == (sent, b"")
    if sent:
        assert decode_message(stream, max_body) == sent


def check_bad_header_at_once(max_body: int, prefix: list[Frame], bad: bytes, trailing: bytes) -> None:
    """Byte at a time: the error comes with the 16th byte of the bad header, not later."""
    good = b"".join(encode(f.op, f.body, f.ver, f.seq) for f in prefix)
    decoder = Decoder(max_body)
    stream = good + bad + trailing
    for i in range(len(stream)):
        if i == len(good) + HEADER_SIZE - 1:
            try:
                decoder.feed(stream[i : i + 1])
            except RemoteProtocolError:
                return
            raise AssertionError("bad header not reported when its 16 bytes were in")
        assert isinstance(decoder.feed(stream[i : i + 1]), list)
    raise AssertionError("stream ended before the bad header")


def bounded_frames(max_body: int) -> st.SearchStrategy[list[Frame]]:
    body = st.binary(max_size=min(max_body, 100))
    return st.lists(st.builds(Frame, INT16, OPS, INT32, body), max_size=8)


BODY_LIMITS = st.one_of(st.integers(0, 64), st.just(4096))


@st.composite
def bad_headers(draw: st.DrawFn, max_body: int) -> bytes:
    from tests.fuzz.strategies import raw_header

    if draw(st.booleans()):
        header_len = draw(INT16.filter(lambda h: h != HEADER_SIZE))
        pack_len = draw(INT32)
    else:
        header_len = HEADER_SIZE
        pack_len = draw(
            st.one_of(
                st.integers(-(1 << 31), HEADER_SIZE - 1),
                st.integers(HEADER_SIZE + max_body + 1, (1 << 31) - 1),
            )
        )
    return raw_header(pack_len, header_len, draw(INT16), draw(OPS), draw(INT32))


# (name, strategy, check) for the campaign; the tests below use the same triples.
TARGETS = [
    ("proto.feed", st.tuples(goim_streams(), CUTS), lambda a: check_feed(a[0][0], a[0][1], a[1])),
    ("proto.whole", goim_streams(), lambda a: check_whole(*a)),
    (
        "proto.roundtrip",
        BODY_LIMITS.flatmap(lambda m: st.tuples(st.just(m), bounded_frames(m), CUTS)),
        lambda a: check_roundtrip(*a),
    ),
    (
        "proto.bad_header",
        BODY_LIMITS.flatmap(
            lambda m: st.tuples(st.just(m), bounded_frames(m), bad_headers(m), st.binary(max_size=32))
        ),
        lambda a: check_bad_header_at_once(*a),
    ),
]


@FAST
@given(goim_streams(), CUTS)
def test_feed_split_anywhere_matches_reference(stream: tuple[int, bytes], cuts: list[int]) -> None:
    check_feed(stream[0], stream[1], cuts)


@FAST
@given(goim_streams())
def test_decode_and_decode_message_match_reference(stream: tuple[int, bytes]) -> None:
    check_whole(*stream)


@FAST
@given(BODY_LIMITS.flatmap(lambda m: st.tuples(st.just(m), bounded_frames(m))), CUTS)
def test_valid_frames_round_trip_in_any_split(case: tuple[int, list[Frame]], cuts: list[int]) -> None:
    check_roundtrip(case[0], case[1], cuts)


@settings(FAST, max_examples=150)
@given(
    BODY_LIMITS.flatmap(
        lambda m: st.tuples(st.just(m), bounded_frames(m), bad_headers(m), st.binary(max_size=32))
    )
)
def test_bad_header_reported_with_its_sixteenth_byte(case: tuple[int, list[Frame], bytes, bytes]) -> None:
    check_bad_header_at_once(*case)


@FAST
@given(st.binary(max_size=2048), CUTS, st.integers(0, 4096))
def test_arbitrary_bytes_raise_only_remote_protocol_error(
    data: bytes, cuts: list[int], max_body: int
) -> None:
    decoder = Decoder(max_body)
    for piece in chunks(data, cuts):
        try:
            decoder.feed(piece)
        except RemoteProtocolError:
            return
        assert decoder.pending <= HEADER_SIZE + max_body


@FAST
@given(st.integers(-(1 << 40), 1 << 40), INT16, INT32)
def test_heartbeat_reply_online_count(online: int, ver: int, seq: int) -> None:
    frames, tail = decode(encode_heartbeat_reply(max(online, 0), ver, seq))
    assert tail == b"" and len(frames) == 1 and (frames[0].ver, frames[0].seq) == (ver, seq)
    assert decode_online(frames[0].body) == min(max(online, 0), (1 << 31) - 1)
