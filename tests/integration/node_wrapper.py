"""Run the `fleml-node` CLI with one fault injected, for the integration tests.

Usage::

    python node_wrapper.py FAULT [fleml-node arguments ...]

The node is the real CLI (`fleml_node.cli.main`) in its own process; only the one function
named below is replaced before `main()` runs, so everything else (keys, chain, IPFS, the
event follower, the state folders) behaves as in production. Faults:

``tamper-put``
    Every object this node puts on IPFS has its last four bytes changed after the node
    hashed it, so what it stores differs from what it commits on chain (a member that
    tampers with its update, or an IPFS object swapped under a CID it announced).
``hang-in-training``
    The first local training prints ``FAULT hang-in-training`` and blocks for
    ever, so the test can SIGKILL the client while it is mid-round.
``crash-after-close``
    The aggregator prints ``FAULT crash-after-close round <r>`` and SIGKILLs itself when it
    is about to aggregate its first closed round: a crash between closing and finalizing.
``none``
    No fault (plain `fleml-node`).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def tamper_put() -> None:
    from fleml_node.storage.ipfs import IpfsStore

    real_put = IpfsStore.put

    def put(self: IpfsStore, data: bytes) -> str:
        _say(f"FAULT tamper-put: storing {len(data)} bytes with the last 4 changed")
        return real_put(self, data[:-4] + bytes(b ^ 0xFF for b in data[-4:]))

    IpfsStore.put = put  # type: ignore[method-assign]


def hang_in_training() -> None:
    import fleml_node.client as client_module

    def local_train(*_args: Any, **_kwargs: Any) -> Any:
        _say("FAULT hang-in-training: blocked in local training")
        threading.Event().wait()

    client_module.local_train = local_train  # type: ignore[assignment]


def crash_after_close() -> None:
    from fleml_node.aggregator import AggregatorNode

    def aggregate_and_finalize(self: AggregatorNode, info: Any) -> None:
        _say(f"FAULT crash-after-close round {info.round_id}: SIGKILL before aggregating")
        os.kill(os.getpid(), signal.SIGKILL)

    AggregatorNode._aggregate_and_finalize = aggregate_and_finalize  # type: ignore[method-assign]


FAULTS = {"none": lambda: None, "tamper-put": tamper_put, "hang-in-training": hang_in_training,
          "crash-after-close": crash_after_close}


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in FAULTS:
        sys.exit(f"usage: {sys.argv[0]} {{{','.join(FAULTS)}}} [fleml-node args ...]")
    FAULTS[sys.argv[1]]()
    from fleml_node.cli import main

    sys.argv = ["fleml-node", *sys.argv[2:]]
    main()
