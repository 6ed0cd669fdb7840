"""The chain path and the in-memory simulator decide every round identically.

Both run the same seeded federation (four members, FLEML, a label-flipper) for two rounds; in
round 2 one member publishes bytes other than those it committed, one publishes garbage and one
an update with a NaN. Per member the status, the reason and the coefficient (exact floats), the
flagged set and the aggregate's hash must be the same. Fields that exist only on a chain
(contract address, chain id, CIDs, gas) are outside the comparison.
"""

import random
import struct
import threading

from fleml_node.simulate import SimulationConfig, run_chain, run_memory
from fleml_node.storage import content_hash

CONFIG = SimulationConfig(dataset="mnist", num_clients=4, malicious_fraction=0.25,
                          attack="label_flip", defenses=("fleml",), rounds=2,
                          max_client_samples=100, validation_size=200, test_samples=300,
                          seed=5)


def nan_bytes(blob: bytes) -> bytes:
    start = 8 + struct.unpack("<Q", blob[:8])[0]
    return blob[:start] + struct.pack("<f", float("nan")) + blob[start + 4:]


def corrupt(round_id: int, client: int, blob: bytes):
    """Round 2: member 0 tampers, member 1 sends garbage, member 2 a NaN; member 3 is honest."""
    if round_id != 2 or client == 3:
        return None
    if client == 0:
        return blob[:-4] + b"\x00\x00\x80\x3f", content_hash(blob)
    # seeded garbage: both modes must see the same bytes
    published = random.Random(client).randbytes(4096) if client == 1 else nan_bytes(blob)
    return published, content_hash(published)


def decisions(records):
    return [(r.round, r.members, r.flagged, r.aggregate_sha256) for r in records]


def test_chain_path_and_memory_mode_decide_identically(tmp_path, ipfs_api, monkeypatch):
    """The chain run steps its members on threads (CONFIG.member_threads): their training
    must still run one member at a time, as in memory mode, and on several threads."""
    from fleml_node import client as client_module

    real_train, lock = client_module.local_train, threading.Lock()
    training, most, threads = [0], [0], set()

    def counted(*args, **kwargs):
        with lock:
            training[0] += 1
            most[0] = max(most[0], training[0])
            threads.add(threading.current_thread().name)
        try:
            return real_train(*args, **kwargs)
        finally:
            with lock:
                training[0] -= 1

    monkeypatch.setattr(client_module, "local_train", counted)
    memory = run_memory(CONFIG, "fleml", lambda r: None, corrupt=corrupt)
    chain = run_chain(CONFIG, "fleml", tmp_path, ipfs_api, lambda r: None, corrupt=corrupt)
    assert CONFIG.member_threads > 1 and most[0] == 1
    assert len(threads) > 1 and all(name.startswith("member") for name in threads)
    assert decisions(chain) == decisions(memory)
    assert [r.accuracy for r in chain] == [r.accuracy for r in memory]

    round2 = {m["index"]: m for m in memory[1].members}
    assert round2[0]["status"] == "rejected" and round2[0]["reason"].startswith("tampered")
    assert round2[1]["status"] == "rejected" and round2[1]["reason"].startswith("invalid")
    assert round2[2]["status"] == "rejected" and "NaN" in round2[2]["reason"]
    assert round2[3]["status"] != "rejected" and round2[3]["coefficient"] is not None
    assert memory[1].flagged[:3] == [0, 1, 2]
    # round 1 had no fault: every member was screened in, with a coefficient each
    assert all(m["status"] != "rejected" for m in memory[0].members)
