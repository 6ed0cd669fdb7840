"""`fleml-node explorer`: a read-only web view of a consortium's rounds, from the chain and IPFS.

It reads the chain over JSON-RPC, the reports and models over an IPFS API and the contract from
a deployment record, like `fleml-node audit`; it loads no key and sends no transaction. Every
HTML page has a JSON twin under ``/api/``. What it caches is only what can no longer change:
the part of a round up to its finalization (or abandonment) once that block is deeper than the
chain profile's confirmations, the reports (checked against their on-chain hash), and logs,
block times and receipts of confirmed blocks. A round's status, its attestations and whether it
is accepted are read from the chain on every request, so restarting the explorer changes
nothing it shows.
"""

from fleml_node.explorer.data import Explorer, ExplorerLinks

__all__ = ["Explorer", "ExplorerLinks"]
