"""Fixtures for the across-hosts tests: one lab world per module, a fresh consortium per test.

The world (namespaces, chain, one js-ipfs daemon per node host) is shared by a module's tests
to save its start-up (about a minute on 2 cores); each test deploys its own consortium and
starts its own nodes, and everything it cut or stopped is restored before the next. The
world is torn down in a finalizer whatever happens (and by an atexit hook if the interpreter
dies first): processes killed, namespaces deleted.

The chain is anvil unless ``FLEML_LAB_CHAIN=poa`` asks for the 3-sealer Clique network of
fleml_node/devnet/poa.py (its start-up alone takes minutes on 2 cores, so CI stays on anvil;
the sealer test always runs on Clique).

The test thread runs inside the observer host's namespace while a test runs, so the
Federation's chain reads travel over the lab's links like any auditor's would.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from fleml_node.devnet.executables import ExecutableNotFound, find_anvil, find_jsipfs

from .netns import unavailable_reason
from .world import LabFederation, World


def _skip_reason() -> str | None:
    reason = unavailable_reason()
    if reason:
        return reason
    try:
        find_anvil()
        find_jsipfs()
    except ExecutableNotFound as err:
        return f"anvil or js-ipfs is not installed (./fleml setup installs them): {err}"
    return None


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    chain = os.environ.get("FLEML_LAB_CHAIN", "anvil")  # "poa": the CI scenarios on Clique
    lab_world = World(tmp_path_factory.mktemp("lab"), members=3, chain=chain)
    try:
        yield lab_world.start()
    finally:
        lab_world.close()


@pytest.fixture
def lab_federation(world: World, tmp_path: Path) -> Iterator[LabFederation]:
    world.ensure_running()
    with world.lab.inside(world.observer):
        fed = world.federation(tmp_path)
        try:
            yield fed
        finally:
            fed.stop_all()
            world.lab.restore_all()


@pytest.fixture(scope="module")
def poa_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """The same layout on a 3-sealer Clique network (fleml_node/devnet/poa.py), one sealer
    per host."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    try:
        from fleml_node.devnet.poa import client_dir

        client_dir()
    except Exception as err:  # module or client missing
        pytest.skip(f"the PoA network is not available: {err}")
    lab_world = World(tmp_path_factory.mktemp("poa-lab"), members=3, chain="poa")
    try:
        yield lab_world.start()
    finally:
        lab_world.close()


@pytest.fixture
def poa_federation(poa_world: World, tmp_path: Path) -> Iterator[LabFederation]:
    poa_world.ensure_running()
    with poa_world.lab.inside(poa_world.observer):
        fed = poa_world.federation(tmp_path)
        try:
            yield fed
        finally:
            fed.stop_all()
            poa_world.lab.restore_all()
