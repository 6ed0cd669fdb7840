"""FLEML: federated learning with entropy-based meta-learned aggregation on an EVM chain.

Subpackages
-----------
learning   datasets (offline), non-IID partitions, models, local training, evaluation
attacks    data and model poisoning used by simulated malicious clients
defense    FLEML (entropy detection + meta-learned weighting) and the baseline aggregators
storage    pickle-free serialization, hashing and IPFS
chain      contract bindings and the event follower
client, aggregator, audit, simulate, cli   the nodes, the round audit, experiments, `fleml-node`
"""

__version__ = "0.1.0"
