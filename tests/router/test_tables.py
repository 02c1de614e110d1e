"""What only the in-memory tables do (expiry slots); the shared contract is in
test_session_contract.py."""

from __future__ import annotations

from mpim.router.tables import SessionTable


def test_sweep_after_a_long_pause_and_renewed_twice() -> None:
    table = SessionTable(2.0, 0.5, now=0.0)
    a, _ = table.worker("h", "w1", 100)
    table.put(a, "k", 1, "", "ip", 0.0)
    table.renew(a, ["k"], 1.0)
    table.renew(a, ["k"], 1.0)  # (filed once, in one slot)
    assert table.sweep(2.9) == []
    assert [c.key for c in table.sweep(1000.0)] == ["k"]
    table.put(a, "k2", 1, "", "ip", 1000.0)
    assert table.sweep(1001.0) == []


def test_a_session_numbers_its_connections_and_forgets_them_with_the_last() -> None:
    table = SessionTable(10.0, 1.0, now=0.0)
    a, _ = table.worker("h", "w1", 100)
    table.put(a, "k1", 7, "", "ip", 0.0)
    table.put(a, "k2", 7, "", "ip", 0.0)
    assert sorted(table.sessions[7].conns) == [1, 2]
    table.remove(a, "k1")
    table.remove(a, "k2")
    assert table.sessions == {} and table.by_key == {} and table.ip_count == {}
