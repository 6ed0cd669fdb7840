"""Fixtures for the storage tests: a real IPFS daemon, a small model and payload builders.

The daemon is the one named by ``FLEML_IPFS_API`` (started by the test runner) or, when that
is unset, a js-ipfs daemon started once for the session by
:func:`fleml_node.devnet.ipfs.ensure_test_daemon`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import safetensors.torch
import torch
from torch import nn

from fleml_node.devnet.ipfs import ensure_test_daemon
from fleml_node.storage import IpfsStore


class SmallCnn(nn.Module):
    """An MNIST-style CNN, small enough for fast tests (about 8k parameters)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3)
        self.conv2 = nn.Conv2d(4, 8, 3)
        self.fc = nn.Linear(8 * 5 * 5, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc(x.flatten(1))


@pytest.fixture(scope="session")
def ipfs_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """API address of a running IPFS daemon for the whole session."""
    with ensure_test_daemon(tmp_path_factory.mktemp("ipfs-repo")) as addr:
        yield addr


@pytest.fixture
def store(ipfs_api: str) -> Iterator[IpfsStore]:
    """A store on the session daemon with short timeouts."""
    with IpfsStore(ipfs_api, timeout=10.0, retries=1, backoff=0.05) as ipfs:
        yield ipfs


@pytest.fixture
def model_state() -> dict[str, torch.Tensor]:
    """The state dict of a freshly initialised :class:`SmallCnn` (fixed seed)."""
    torch.manual_seed(0)
    return dict(SmallCnn().state_dict())


@pytest.fixture
def craft() -> Callable[..., bytes]:
    """Build safetensors bytes directly, bypassing the encoder's own checks.

    ``craft(tensors, document=None, metadata=None)``: ``document`` defaults to the matching
    FLEML metadata; ``metadata`` replaces the whole ``__metadata__`` map.
    """

    def build(
        tensors: dict[str, torch.Tensor],
        document: dict[str, Any] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> bytes:
        if metadata is None:
            doc = document or {
                "extra": {},
                "format": 1,
                "kind": "update",
                "round": 1,
                "spec": [[name, list(t.shape)] for name, t in tensors.items()],
            }
            metadata = {"fleml": json.dumps(doc, sort_keys=True, separators=(",", ":"))}
        return safetensors.torch.save(tensors, metadata=metadata)

    return build


@pytest.fixture
def make_raw_cid() -> Callable[[bytes], str]:
    """CIDv1 (raw codec, sha2-256, base32) of a single-block object, as IPFS computes it."""

    def cid_of(data: bytes) -> str:
        digest = bytes([0x01, 0x55, 0x12, 0x20]) + hashlib.sha256(data).digest()
        return "b" + base64.b32encode(digest).decode("ascii").lower().rstrip("=")

    return cid_of


@pytest.fixture
def unused_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (just released by the kernel)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
