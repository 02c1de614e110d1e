"""Two users chat over mpim's reliable delivery, and one of them reads what arrived while it was away.

Run a master first (`mpim master`), then: python examples/chat.py [host:port]
"""

from __future__ import annotations

import asyncio
import sys

from mpim.sdk import Message, Session


async def main(address: str) -> None:
    inbox: dict[str, list[str]] = {"alice": [], "bob": []}

    def handler(name: str):  # type: ignore[no-untyped-def]
        def on_message(message: Message) -> None:
            text = message.json()["body"]
            inbox[name].append(text)
            print(f"{name} got seq {message.seq}: {text}")

        return on_message

    alice = Session(address, {"mid": 1001, "key": "alice-phone", "accepts": [1000]}, handler("alice"))
    bob = Session(address, {"mid": 1002, "key": "bob-phone", "accepts": [1000]}, handler("bob"))
    tasks = [asyncio.create_task(s.run()) for s in (alice, bob)]
    await asyncio.gather(alice.ready.wait(), bob.ready.wait())

    ack = await alice.send(to=1002, op=1000, body="hi bob")  # stored, then pushed
    print(f"alice's message {ack.id} accepted")  # ([upstream] ack = "only" also gives its seq)
    await bob.close()  # bob goes offline ...
    await alice.send(to=1002, op=1000, body="are you there?")
    bob = Session(address, {"mid": 1002, "key": "bob-phone", "accepts": [1000]}, handler("bob"))
    tasks.append(asyncio.create_task(bob.run()))  # ... and comes back: the message is waiting
    while "are you there?" not in inbox["bob"]:
        await asyncio.sleep(0.05)
    for s in (alice, bob):
        await s.close()
    for task in tasks:
        task.cancel()
    print("done")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:3101"))
