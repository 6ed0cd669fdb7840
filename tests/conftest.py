"""Fixtures shared by the test folders that need a real IPFS daemon."""

from collections.abc import Iterator

import pytest

from fleml_node.devnet.ipfs import ensure_test_daemon


@pytest.fixture(scope="session")
def ipfs_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """API address of a running IPFS daemon: $FLEML_IPFS_API, else one started for the session."""
    with ensure_test_daemon(tmp_path_factory.mktemp("ipfs-repo")) as addr:
        yield addr
