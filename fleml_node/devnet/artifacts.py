"""Export the compiled consortium from brownie's build into the package, as package data.

An installed ``fleml-node`` deploys (``simulate``, the devnet) from
``fleml_node/contracts/FlemlConsortium.json``, so that file is tracked in git and shipped by
``pip install .``. It keeps only what deploying and binding need (ABI, bytecode, deployed
bytecode, compiler settings), not brownie's ASTs and source maps (over 1 MB), plus the sha1 of
every Solidity source it was compiled from (brownie's own source hash), so a test can tell when
the sources moved on without it.

``tools/setup.sh`` runs ``python -m fleml_node.devnet.artifacts`` after ``brownie compile``;
run the same by hand after compiling, and commit the file with the contract change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from fleml_node.chain.deploy import ARTIFACT_RESOURCE
from fleml_node.chain.deployment import CONTRACT_NAME
from fleml_node.storage.local import atomic_write

log = logging.getLogger(__name__)

BUILD_ARTIFACT = Path("build/contracts") / f"{CONTRACT_NAME}.json"
"""brownie's artifact, relative to the project root."""
KEPT_FIELDS = ("contractName", "abi", "bytecode", "deployedBytecode", "compiler")


def source_sha1(path: Path) -> str:
    """brownie's hash of a Solidity source file: sha1 of its bytes, hex."""
    return hashlib.sha1(path.read_bytes(), usedforsecurity=False).hexdigest()


def slim_artifact(build: dict[str, Any], project_root: Path) -> dict[str, Any]:
    """The shipped artifact made from brownie's.

    Parameters
    ----------
    build
        brownie's ``build/contracts/FlemlConsortium.json``.
    project_root
        The checkout, where the sources named by ``allSourcePaths`` lie.

    Returns
    -------
    dict
        The kept fields and ``sources``: each source path with its sha1.

    Raises
    ------
    ValueError
        If the build was compiled from sources other than those on disk (run brownie compile).
    """
    sources = {path: source_sha1(project_root / path)
               for path in sorted(build["allSourcePaths"].values())}
    main_source = build["sourcePath"]
    if sources.get(main_source) != build["sha1"]:
        raise ValueError(f"{BUILD_ARTIFACT} was not compiled from the current {main_source}: "
                         "run `brownie compile` first")
    compiled = {
        json.loads(path.read_text(encoding="utf-8")).get("sha1")
        for path in (project_root / "build").glob("*/*.json")
    }
    stale = [path for path, sha1 in sources.items() if sha1 not in compiled]
    if stale:
        raise ValueError(f"the build predates changes to {', '.join(stale)}: "
                         "run `brownie compile` first")
    return {**{field: build[field] for field in KEPT_FIELDS}, "sources": sources}


def export_artifact(project_root: Path, package_root: Path | None = None) -> bool:
    """Write the shipped artifact from the build, if its content changed.

    Parameters
    ----------
    project_root
        The checkout holding ``build/`` and the Solidity sources.
    package_root
        The ``fleml_node`` folder to write into; defaults to ``project_root / "fleml_node"``.

    Returns
    -------
    bool
        Whether the file was (re)written.

    Raises
    ------
    FileNotFoundError
        If there is no build.
    ValueError
        If the build is older than the sources.
    """
    build = json.loads((project_root / BUILD_ARTIFACT).read_text(encoding="utf-8"))
    text = json.dumps(slim_artifact(build, project_root), indent=1, sort_keys=True) + "\n"
    dest = (package_root or project_root / "fleml_node") / ARTIFACT_RESOURCE
    if dest.is_file() and dest.read_text(encoding="utf-8") == text:
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, text.encode("utf-8"))
    dest.chmod(0o644)  # package data: readable by whoever installs it
    log.info("exported %s to %s", BUILD_ARTIFACT, dest)
    return True


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        export_artifact(Path.cwd())
    except (OSError, ValueError) as err:
        sys.exit(f"artifact export failed: {err}")
