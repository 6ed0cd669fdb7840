"""What a Flower ClientApp sends so that a FLEML strategy can use it.

A reply carries the client's stable id (ConfigRecord ``"fleml"``, key ``"client-id"``), its
update or its trained weights (one ArrayRecord: under ``"update"`` the update itself, under any
other key, e.g. Flower's usual ``"arrays"``, the trained weights, from which the strategy takes
``weights - global``), and a MetricRecord with the sample count (``"num-examples"``).

Sending the update keeps it exact: ``(global + update) - global`` rounds in float32, so a
client that wants the strategy to see exactly what it trained sends the update.
"""

from __future__ import annotations

from collections.abc import Mapping

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from torch import Tensor

from fleml_node.flower.strategy import CLIENT_ID, FLEML_RECORD, UPDATE_RECORD, arrays_to_params

NODE_CONFIG_ID = "fleml-client-id"


def client_id(context: Context) -> str:
    """The client's stable id: node config ``fleml-client-id`` (a real SuperNode sets it with
    ``--node-config "fleml-client-id='hospital-7'"``), else ``partition-<n>`` from the
    simulation's ``partition-id``. Flower's node id is not used: it changes between runs."""
    config = context.node_config
    if NODE_CONFIG_ID in config:
        return str(config[NODE_CONFIG_ID])
    if "partition-id" in config:
        return f"partition-{int(config['partition-id']):04d}"
    raise ValueError(f"no stable client id: set node config {NODE_CONFIG_ID!r}")


def global_params(message: Message) -> dict[str, Tensor]:
    """The global model a train message carries, as named float32 tensors."""
    records = message.content.array_records
    if len(records) != 1:
        raise ValueError("expected one ArrayRecord (the global model) in the train message")
    return arrays_to_params(next(iter(records.values())))


def train_content(cid: str, num_examples: int, *, update: Mapping[str, Tensor] | None = None,
                  weights: Mapping[str, Tensor] | None = None,
                  metrics: Mapping[str, float] | None = None) -> RecordDict:
    """The reply's records: exactly one of ``update`` and ``weights``."""
    if (update is None) == (weights is None):
        raise ValueError("give exactly one of update and weights")
    tensors = update if update is not None else weights
    key = UPDATE_RECORD if update is not None else "arrays"
    return RecordDict({
        key: ArrayRecord({k: v.detach().cpu().contiguous() for k, v in tensors.items()}),
        "metrics": MetricRecord({"num-examples": int(num_examples), **(metrics or {})}),
        FLEML_RECORD: ConfigRecord({CLIENT_ID: cid}),
    })


def train_reply(message: Message, cid: str, num_examples: int, **kwargs) -> Message:
    """A reply to a train message; keyword arguments as :func:`train_content`."""
    return Message(train_content(cid, num_examples, **kwargs), reply_to=message)
