"""Update compression: round trips within their bounds, int8 unbiasedness, top-k error feedback
across rounds and restarts, hashes over the compressed bytes, hostile bytes refused with a
reason, and a compressed round decided and re-verified by the round engine."""

import json
import math
import struct

import pytest
import safetensors.torch
import torch

from fleml_node.defense import make_defense
from fleml_node.learning import TrainConfig, flatten, get_params
from fleml_node.round_engine import (
    DefenseInputs,
    RoundEngine,
    Submission,
    encode_state,
    encode_update,
    flagged_bitmap,
    verify_round,
)
from fleml_node.storage import InvalidPayload, content_hash, encode_tensors
from fleml_node.storage.compression import (
    Codec,
    EncodingMismatch,
    ResidualFile,
    UpdateEncoder,
    compress,
    decode_update,
    encoding_of,
)
from fleml_node.task import TaskConfig, validation_data

ROUND = 2
SPEC_UPDATE_SEED = 5


def update(seed=SPEC_UPDATE_SEED, scale=1e-2):
    g = torch.Generator().manual_seed(seed)
    return {"conv.weight": scale * torch.randn(4, 1, 3, 3, generator=g),
            "conv.bias": scale * torch.randn(4, generator=g),
            "fc.weight": scale * torch.randn(10, 16, generator=g),
            "fc.bias": torch.zeros(10)}  # an all-zero tensor: int8 scale 0


class Spec:
    def __init__(self, tensors):
        self.names = tuple(tensors)
        self.shapes = tuple(tuple(t.shape) for t in tensors.values())


def roundtrip(tensors, codec, **kw):
    blob, residual = compress(tensors, codec, round=ROUND, extra={"member": "0xabc"}, **kw)
    payload = decode_update(blob, codec, expected_round=ROUND, expected_spec=Spec(tensors))
    assert list(payload.tensors) == list(tensors)
    assert payload.extra == {"member": "0xabc"} and payload.round == ROUND
    return blob, payload.tensors, residual


# -- round trips -------------------------------------------------------------------------------
def test_none_is_the_dense_encoding_byte_for_byte():
    u = update()
    blob, out, _ = roundtrip(u, Codec("none"))
    assert blob == encode_tensors(u, kind="update", round=ROUND, extra={"member": "0xabc"})
    assert all(torch.equal(out[k], u[k]) for k in u)


def test_fp16_is_within_half_precision_and_half_the_bytes():
    u = update()
    blob, out, _ = roundtrip(u, Codec("fp16"))
    for k in u:
        err = (out[k] - u[k]).abs()
        # relative 2**-11 for normal values, absolute 2**-25 below 2**-14 (subnormals)
        assert bool((err <= u[k].abs() * 2**-11 + 2**-25).all()), k
    dense = len(encode_tensors(u, kind="update", round=ROUND, extra={"member": "0xabc"}))
    assert len(blob) < 0.75 * dense


def test_fp16_refuses_values_beyond_its_range():
    with pytest.raises(InvalidPayload, match="float16 range"):
        compress({"w": torch.tensor([1e5])}, Codec("fp16"), round=1)


def test_int8_is_within_one_step_of_its_per_tensor_scale():
    u = update()
    _, out, _ = roundtrip(u, Codec("int8"), generator=torch.Generator().manual_seed(0))
    for k in u:
        step = float(u[k].abs().max()) / 127
        assert float((out[k] - u[k]).abs().max()) <= step * (1 + 1e-5), k
    assert torch.equal(out["fc.bias"], torch.zeros(10))


def test_int8_is_unbiased_over_many_draws():
    x = {"w": torch.linspace(-1.0, 1.0, 41)}  # scale 1/127; values between the levels
    codec, draws = Codec("int8"), 2000
    total = torch.zeros(41, dtype=torch.float64)
    for i in range(draws):
        blob, _ = compress(x, codec, round=1, generator=torch.Generator().manual_seed(i))
        total += decode_update(blob, codec).tensors["w"].double()
    step = 1 / 127
    # one draw errs by < step with variance <= step**2 / 4: the mean's sd is step / 2 / sqrt(N)
    bound = 5 * step / 2 / math.sqrt(draws)
    assert float((total / draws - x["w"].double()).abs().max()) < bound
    # and a single draw is not simply round-to-nearest (it is stochastic)
    one = decode_update(compress(x, codec, round=1, generator=torch.Generator().manual_seed(0))[0],
                        codec).tensors["w"]
    nearest = torch.round(x["w"] * 127) / 127
    assert not torch.allclose(one, nearest)


def test_int8_bytes_are_reproducible_from_the_members_stream():
    enc = UpdateEncoder(Codec("int8"), seed=3, member_index=1)
    again = UpdateEncoder(Codec("int8"), seed=3, member_index=1)
    other = UpdateEncoder(Codec("int8"), seed=3, member_index=2)
    u = update()
    assert enc.encode(u, ROUND, {}) == again.encode(u, ROUND, {})
    assert enc.encode(u, ROUND, {}) != other.encode(u, ROUND, {})


def test_topk_sends_the_largest_entries_of_update_plus_residual():
    u = update()
    codec = Codec("topk", 0.1)
    flat = flatten(u)
    residual = torch.zeros_like(flat)
    residual[-1] = 5.0  # an old residual large enough to be sent now
    blob, out, after = roundtrip(u, codec, residual=residual)
    sent = flatten(out)
    acc = flat + residual
    k = codec.k(flat.numel())
    assert int((sent != 0).sum()) == k == math.ceil(0.1 * flat.numel())
    assert float(sent[-1]) == 5.0
    threshold = acc.abs().sort(descending=True).values[k - 1]
    assert bool((acc[sent != 0].abs() >= threshold).all())
    assert torch.equal(sent + after, acc)  # nothing is lost: it is sent or kept
    dense = len(encode_tensors(u, kind="update", round=ROUND, extra={"member": "0xabc"}))
    assert len(blob) < 0.5 * dense


def test_topk_error_feedback_accumulates_and_survives_a_restart(tmp_path):
    codec, file = Codec("topk", 0.05), tmp_path / "member.residual.safetensors"
    updates = [update(seed) for seed in range(6)]
    first = UpdateEncoder(codec, seed=0, member_index=0, residual_file=file)
    blobs = [first.encode(updates[r - 1], r, {}) for r in (1, 2, 3)]
    # a new process (a restart) continues from the file
    restarted = UpdateEncoder(codec, seed=0, member_index=0, residual_file=file)
    blobs += [restarted.encode(updates[r - 1], r, {}) for r in (4, 5, 6)]
    # the same rounds without any restart give the same bytes
    memory = UpdateEncoder(codec, seed=0, member_index=0)
    assert blobs == [memory.encode(updates[r - 1], r, {}) for r in range(1, 7)]
    # error feedback: what was sent plus the residual is everything the member produced
    sent = sum(flatten(decode_update(b, codec).tensors) for b in blobs)
    _, _, residual = ResidualFile(file).load(sent.numel(), codec)
    produced = sum(flatten(u) for u in updates)
    assert torch.allclose(sent + residual, produced, atol=1e-6)
    assert float(residual.abs().sum()) > 0


def test_topk_encoding_a_round_again_after_a_restart_starts_from_the_same_residual(tmp_path):
    codec, file = Codec("topk", 0.05), tmp_path / "r.safetensors"
    enc = UpdateEncoder(codec, 0, 0, file)
    enc.encode(update(1), 1, {})
    second = enc.encode(update(2), 2, {})
    # crashed before submitting round 2: the restarted node trains and encodes round 2 again
    assert UpdateEncoder(codec, 0, 0, file).encode(update(2), 2, {}) == second


def test_a_residual_file_for_another_model_or_fraction_starts_from_zero(tmp_path):
    file = tmp_path / "r.safetensors"
    UpdateEncoder(Codec("topk", 0.05), 0, 0, file).encode(update(1), 1, {})
    fresh = UpdateEncoder(Codec("topk", 0.1), 0, 0).encode(update(2), 2, {})
    assert UpdateEncoder(Codec("topk", 0.1), 0, 0, file).encode(update(2), 2, {}) == fresh
    file.write_bytes(b"not safetensors")
    assert UpdateEncoder(Codec("topk", 0.1), 0, 0, file).encode(update(2), 2, {}) == fresh


def test_the_residual_file_is_safetensors_not_pickle(tmp_path):
    file = tmp_path / "r.safetensors"
    UpdateEncoder(Codec("topk", 0.05), 0, 0, file).encode(update(1), 1, {})
    tensors = safetensors.torch.load_file(str(file))
    assert set(tensors) == {"before", "after"}
    assert not file.read_bytes().startswith(b"\x80")  # no pickle protocol header


# -- hostile bytes ------------------------------------------------------------------------------
def forge(encoding, tensors, **document):
    """A compressed payload built by hand, as a cheater would."""
    doc = {"encoding": encoding, "extra": {}, "format": 1, "kind": "update", "round": ROUND,
           "spec": [["w", [8]]], **document}
    doc = {k: v for k, v in doc.items() if v is not None}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
    return safetensors.torch.save(tensors, metadata={"fleml": text})


W8 = Spec({"w": torch.zeros(8)})


@pytest.mark.parametrize(("blob", "codec", "reason"), [
    (forge("int8", {"values": torch.tensor([1, 2, 3, 4, 5, 6, 7, -128], dtype=torch.int8),
                    "scales": torch.tensor([0.1])}), Codec("int8"), "codes must lie in"),
    (forge("int8", {"values": torch.zeros(8, dtype=torch.int8),
                    "scales": torch.tensor([-0.1])}), Codec("int8"), "scales must be >= 0"),
    (forge("int8", {"values": torch.zeros(8, dtype=torch.int8),
                    "scales": torch.tensor([float("nan")])}), Codec("int8"), "NaN/Inf"),
    (forge("int8", {"values": torch.zeros(8, dtype=torch.int16),
                    "scales": torch.tensor([0.1])}), Codec("int8"), "expected 'I8'"),
    (forge("int8", {"values": torch.zeros(7, dtype=torch.int8),
                    "scales": torch.tensor([0.1])}), Codec("int8"), "expected \\[8\\]"),
    (forge("int8", {"values": torch.zeros(8, dtype=torch.int8)}), Codec("int8"),
     "holds exactly the tensors"),
    (forge("fp16", {"values": torch.tensor([1.0] * 7 + [float("inf")]).half()}),
     Codec("fp16"), "NaN/Inf"),
    (forge("topk", {"indices": torch.tensor([8], dtype=torch.int32),
                    "values": torch.tensor([1.0])}, topk_fraction=0.1), Codec("topk", 0.1),
     "indices must lie in"),
    (forge("topk", {"indices": torch.tensor([3, 3], dtype=torch.int32),
                    "values": torch.tensor([1.0, 2.0])}, topk_fraction=0.25),
     Codec("topk", 0.25), "strictly increasing"),
    (forge("topk", {"indices": torch.tensor([1, 2], dtype=torch.int32),
                    "values": torch.tensor([1.0, 2.0])}, topk_fraction=0.25),
     Codec("topk", 0.1), "top-k with fraction 0.25"),
    (forge("topk", {"indices": torch.tensor([1, 2], dtype=torch.int32),
                    "values": torch.tensor([1.0, 2.0])}, topk_fraction=None),
     Codec("topk", 0.25), "must have exactly the fields"),
    (forge("fp16", {"values": torch.zeros(8).half()}, kind="model"), Codec("fp16"),
     "expected an 'update'"),
    (forge("fp16", {"values": torch.zeros(8).half()}, round=ROUND + 1), Codec("fp16"),
     "expected round 2"),
    (forge("fp16", {"values": torch.zeros(8).half()}, spec=[["w", [2**25]]]),
     Codec("fp16"), "dense they exceed the cap"),
    (forge("topk", {"indices": torch.tensor([1], dtype=torch.int32),
                    "values": torch.tensor([1.0])}, topk_fraction=1e-12,
           spec=[["w", [10**12]]]), Codec("topk", 1e-12), "dense they exceed the cap"),
    (forge("fp16", {"values": torch.zeros(8).half()}, spec=[["v", [8]]]), Codec("fp16"),
     "lacks tensors"),
    (forge("int8", {"values": torch.zeros(2000, dtype=torch.int8),
                    "scales": torch.zeros(2000)}, spec=[[f"w{i}", [1]] for i in range(2000)]),
     Codec("int8"), "2000 tensors, above the cap"),
    (forge("gzip", {"values": torch.zeros(8).half()}), Codec("fp16"),
     "encoded as 'gzip', but the task's compression is fp16"),
], ids=lambda v: v.split(",")[0] if isinstance(v, str) else "_")
def test_malformed_compressed_blobs_are_refused_with_a_reason(blob, codec, reason):
    """Each forged payload fails for the named reason (the parameter ids are the reasons)."""
    spec = None if "cap" in reason else W8
    with pytest.raises(InvalidPayload, match=reason):
        decode_update(blob, codec, expected_round=ROUND, expected_spec=spec)


def test_a_blob_in_another_encoding_than_the_tasks_is_refused_by_name():
    u = update()
    dense = encode_update(u, ROUND, 10, "0xabc")
    int8 = compress(u, Codec("int8"), round=ROUND, generator=torch.Generator())[0]
    with pytest.raises(EncodingMismatch, match=r"dense float32 \('none'\).*compression is int8"):
        decode_update(dense, Codec("int8"))
    with pytest.raises(EncodingMismatch, match="encoded as 'int8'.*compression is none"):
        decode_update(int8, Codec("none"))
    with pytest.raises(EncodingMismatch, match="encoded as 'int8'.*compression is topk"):
        decode_update(int8, Codec("topk"))
    assert encoding_of(int8) == "int8" and encoding_of(dense) == "none"


def test_truncated_flipped_and_random_bytes_never_crash_the_decoder():
    codecs = [Codec(e) for e in ("fp16", "int8", "topk")]
    blobs = [compress(update(), c, round=ROUND, generator=torch.Generator())[0] for c in codecs]
    g = torch.Generator().manual_seed(0)
    for codec, blob in zip(codecs, blobs, strict=True):
        header_end = 8 + struct.unpack("<Q", blob[:8])[0]
        cases = [blob[:n] for n in (0, 7, 8, 20, header_end, len(blob) - 1)]
        cases.append(struct.pack("<Q", 2**62) + blob[8:])  # a header length far too large
        for _ in range(60):  # one byte changed somewhere in the header or data
            pos = int(torch.randint(len(blob), (1,), generator=g))
            cases.append(blob[:pos] + bytes([blob[pos] ^ 0x5A]) + blob[pos + 1:])
        cases.append(bytes(torch.randint(256, (500,), generator=g, dtype=torch.uint8).tolist()))
        for case in cases:
            try:
                decode_update(case, codec, expected_round=ROUND, expected_spec=Spec(update()))
            except InvalidPayload:
                pass  # a clean rejection; anything else fails the test


# -- a compressed round through the round engine and its verification ---------------------------
TASK = TaskConfig(dataset="mnist", seed=1, num_clients=4, validation_size=60,
                  train=TrainConfig(epochs=1, batch_size=16, lr=0.05))


def member(i):
    return f"0x{i:040x}"


def members_submissions(task, base, rounds_encoders=None):
    encoders = rounds_encoders or [UpdateEncoder.for_task(task, i) for i in range(4)]
    subs = []
    for i, enc in enumerate(encoders):
        g = torch.Generator().manual_seed(i)
        u = {k: 1e-3 * torch.randn(v.shape, generator=g) for k, v in base.items()}
        if i == 3:
            u = {k: -10 * v for k, v in u.items()}  # a sign-flipping member
        blob = encode_update(u, ROUND, 100, member(i), enc)
        subs.append(Submission(member(i), i, content_hash(blob), f"cid{i}", blob))
    return subs


@pytest.mark.parametrize("compression", ["fp16", "int8", "topk"])
def test_a_compressed_round_is_decided_on_the_committed_bytes_and_verifies(compression):
    task = TaskConfig(**{**TASK.__dict__, "compression": compression, "topk_fraction": 0.05})
    base = get_params(task.initial_model())
    subs = members_submissions(task, base)
    dense_size = len(encode_update(base, ROUND, 100, member(0)))
    assert all(len(s.blob) < 0.6 * dense_size for s in subs)
    # the commitment is the hash of exactly the compressed bytes that travel
    assert all(s.update_hash == content_hash(s.blob) for s in subs)
    outcome = RoundEngine(task, make_defense("fedavg")).decide(ROUND, base, subs)
    assert [d.status for d in outcome.decisions] == ["accepted"] * 4
    report = outcome.report(task, {"hash": "0x", "cid": ""}, {"hash": "0x", "cid": ""}, subs)
    assert report["task"]["compression"] == compression
    checked = verify_round(ROUND, subs, base, outcome.result_params, report,
                           flagged_bitmap(outcome.bitmap_indices, 4))
    assert all(ok for _, ok, _ in checked.checks), checked.checks
    assert all(m.ok for m in checked.members)
    # an auditor who reads the task's compression otherwise rejects every update: not a pass
    report["task"]["compression"] = "none"
    wrong = verify_round(ROUND, subs, base, outcome.result_params, report,
                         flagged_bitmap(outcome.bitmap_indices, 4))
    assert not all(m.ok for m in wrong.members)
    assert all("task's compression is none" in m.detail for m in wrong.members)


def test_a_member_publishing_dense_bytes_in_a_compressed_task_is_rejected_with_the_reason():
    task = TaskConfig(**{**TASK.__dict__, "compression": "int8"})
    base = get_params(task.initial_model())
    subs = members_submissions(task, base)
    dense = encode_update({k: torch.zeros_like(v) for k, v in base.items()}, ROUND, 100,
                          member(2))
    subs[2] = Submission(member(2), 2, content_hash(dense), "cid2", dense)
    outcome = RoundEngine(task, make_defense("fedavg")).decide(ROUND, base, subs)
    assert outcome.rejected == {member(2): "invalid: update is encoded as dense float32 "
                                           "('none'), but the task's compression is int8"}
    tampered = Submission(member(1), 1, subs[0].update_hash, "cid1", subs[1].blob)
    outcome = RoundEngine(task, make_defense("fedavg")).decide(ROUND, base, [subs[0], tampered])
    assert outcome.rejected[member(1)].startswith("tampered")


def test_fleml_on_a_topk_round_re_runs_bit_for_bit_from_the_committed_inputs():
    task = TaskConfig(**{**TASK.__dict__, "compression": "topk", "topk_fraction": 0.1})
    base = get_params(task.initial_model())
    validation = validation_data(task)
    subs = members_submissions(task, base)
    engine = RoundEngine(task, make_defense("fleml"), validation)
    outcome = engine.decide(ROUND, base, subs)
    after = "0x" + content_hash(encode_state(outcome.state_after)).hex()
    report = outcome.report(task, {"hash": "0x", "cid": ""}, {"hash": "0x", "cid": ""}, subs,
                            inputs={"defense_state": {"after": {"hash": after, "cid": ""}}})
    checked = verify_round(ROUND, subs, base, outcome.result_params, report,
                           flagged_bitmap(outcome.bitmap_indices, 4),
                           DefenseInputs(validation, outcome.state_before))
    names = {name: ok for name, ok, _ in checked.checks}
    assert all(ok for ok in names.values()), checked.checks
    assert any(name.startswith("fleml re-run") for name in names)


# -- end to end: chain + IPFS, client and aggregator nodes, the audit ----------------------------
def test_a_topk_round_on_chain_and_ipfs_passes_the_audit(tmp_path, ipfs_api):
    """Members publish top-k bytes on IPFS and commit their hash; the aggregator decodes them
    the same way; the audit re-runs FLEML from the committed bytes; residuals are on disk.
    (One round keeps it to seconds; rounds after the first are covered without a chain.)"""
    from eth_account import Account

    from fleml_node.aggregator import AggregatorNode
    from fleml_node.audit import audit_round
    from fleml_node.chain.contract import Consortium, connect
    from fleml_node.chain.events import EventFollower
    from fleml_node.client import ClientNode
    from fleml_node.devnet.anvil import LocalAnvil, test_keys
    from fleml_node.devnet.consortium import deploy_local_consortium
    from fleml_node.devnet.executables import ExecutableNotFound, find_anvil
    from fleml_node.storage import IpfsStore
    from fleml_node.task import client_data

    try:
        find_anvil()
    except ExecutableNotFound as err:
        pytest.skip(f"anvil is not installed: {err}")

    task = TaskConfig(dataset="mnist", seed=3, num_clients=4, alpha=1.0, validation_size=100,
                      max_client_samples=60, train=TrainConfig(epochs=1, batch_size=32, lr=0.05),
                      compression="topk", topk_fraction=0.1)
    with LocalAnvil(accounts=6, log_file=tmp_path / "anvil.log") as anvil:
        keys = test_keys(6)
        w3 = connect(anvil.url)
        record = deploy_local_consortium(w3, keys, 4, tmp_path / "deployment.json")
        store = IpfsStore(ipfs_api, timeout=20, retries=1)
        clients = []
        for i in range(4):
            consortium = Consortium(w3, record, Account.from_key(keys[2 + i]))
            x, y = client_data(task, i)
            follower = EventFollower(consortium, tmp_path / f"client{i}.json")
            clients.append(ClientNode(consortium, store, follower, task, x, y, i))
        aggregator = AggregatorNode(Consortium(w3, record, Account.from_key(keys[1])), store,
                                    make_defense("fleml"), task, until_round=1,
                                    round_seconds=600, validation=validation_data(task))
        for _ in range(200):
            did = aggregator.step()
            for c in clients:
                c.poll_once()
            if did == "done":
                break
        assert [s.status for s in clients[0].history] == ["submitted"]
        dense = len(encode_update(get_params(task.initial_model()), 1, 60, member(0)))
        assert all(0 < s.bytes_up < 0.25 * dense for c in clients for s in c.history)
        assert (tmp_path / "client0.residual.safetensors").exists()
        reader = Consortium(w3, record, None)
        verdict = audit_round(reader, store, 1)
        assert verdict.verdict == "PASS", "\n".join(verdict.lines())
        assert all(m.ok for m in verdict.members) and len(verdict.members) == 4
        assert [len(s.accepted) for s in aggregator.summaries] == [4]
