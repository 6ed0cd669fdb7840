"""Export the compiled consortium into the package, one artifact per supported EVM version.

An installed ``fleml-node`` deploys (``simulate``, the devnet) from
``fleml_node/contracts/<evm>/FlemlConsortium.json``, so those files are tracked in git and
shipped by ``pip install .``. Each keeps only what deploying and binding need (ABI, bytecode,
deployed bytecode, compiler settings), not brownie's ASTs and source maps (over 1 MB), plus the
sha1 of every Solidity source it was compiled from (brownie's own source hash), so a test can
tell when the sources moved on without it.

brownie compiles one EVM version per project (``compiler.evm_version`` in brownie-config.yaml,
``cancun``); its build is exported as is. Every other version in
:data:`fleml_node.chain.profile.EVM_VERSIONS` (``london``, what Clique networks of
@ethereumjs/client run) is compiled here with brownie's compiler and the build's own settings,
changing only the EVM version, and only when its sources changed.

Beside each artifact lies the solc standard-JSON input it is compiled from
(``FlemlConsortium.input.json``, :func:`standard_input`): deployments copy it into their record
so anyone can verify the deployed code (see :func:`fleml_node.chain.deploy.verification`).

``tools/setup.sh`` runs ``python -m fleml_node.devnet.artifacts`` after ``brownie compile``;
run the same by hand after compiling, and commit the files with the contract change.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any

from fleml_node.chain.deploy import artifact_resource
from fleml_node.chain.deployment import CONTRACT_NAME
from fleml_node.chain.profile import EVM_VERSIONS
from fleml_node.storage.local import atomic_write

log = logging.getLogger(__name__)

BUILD_ARTIFACT = Path("build/contracts") / f"{CONTRACT_NAME}.json"
"""brownie's artifact, relative to the project root."""
KEPT_FIELDS = ("contractName", "abi", "bytecode", "deployedBytecode", "compiler")


def source_sha1(path: Path) -> str:
    """brownie's hash of a Solidity source file: sha1 of its bytes, hex."""
    return hashlib.sha1(path.read_bytes(), usedforsecurity=False).hexdigest()


def slim_artifact(build: dict[str, Any], project_root: Path,
                  check_build: bool = True) -> dict[str, Any]:
    """The shipped artifact made from brownie's.

    Parameters
    ----------
    build
        brownie's ``build/contracts/FlemlConsortium.json``.
    project_root
        The checkout, where the sources named by ``allSourcePaths`` lie.
    check_build
        Also require that brownie's build/ holds every source at its current hash (for an
        export of brownie's build; a fresh compile of the sources needs no such check).

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
    stale = [path for path, sha1 in sources.items() if sha1 not in compiled] \
        if check_build else []
    if stale:
        raise ValueError(f"the build predates changes to {', '.join(stale)}: "
                         "run `brownie compile` first")
    return {**{field: build[field] for field in KEPT_FIELDS}, "sources": sources}


def compile_for(evm_version: str, project_root: Path, like: dict[str, Any]) -> dict[str, Any]:
    """Compile the project's sources for `evm_version` with the settings of the build `like`.

    Returns brownie's build dict of the consortium (as in ``build/contracts``).
    """
    from brownie.project import compiler

    def sources(folder: str) -> dict[str, str]:
        return {str(path.relative_to(project_root)): path.read_text(encoding="utf-8")
                for path in sorted((project_root / folder).glob("*.sol"))}

    settings = like["compiler"]
    builds = compiler.compile_and_format(
        sources("contracts"), solc_version=settings["version"].split("+")[0],
        optimize=settings["optimizer"]["enabled"], runs=settings["optimizer"]["runs"],
        evm_version=evm_version, interface_sources=sources("interfaces"))
    return builds[CONTRACT_NAME]


def standard_input(evm_version: str, project_root: Path, like: dict[str, Any]) -> dict[str, Any]:
    """The solc standard-JSON input that compiles the consortium for `evm_version` with the
    settings of the build `like`: exactly what brownie hands solc (the same source paths,
    contents and settings, so the same metadata hash), and what Etherscan's and Blockscout's
    "standard JSON input" verification and Sourcify take."""
    from brownie.project import compiler

    def sources(folder: str) -> dict[str, str]:
        return {str(path.relative_to(project_root)): path.read_text(encoding="utf-8")
                for path in sorted((project_root / folder).glob("*.sol"))}

    settings = like["compiler"]
    return compiler.generate_input_json(
        sources("contracts"), optimize=settings["optimizer"]["enabled"],
        runs=settings["optimizer"]["runs"], evm_version=evm_version,
        interface_sources=sources("interfaces"))


def _write(dest: Path, artifact: dict[str, Any]) -> bool:
    text = json.dumps(artifact, indent=1, sort_keys=True) + "\n"
    if dest.is_file() and dest.read_text(encoding="utf-8") == text:
        return False
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, text.encode("utf-8"))
    dest.chmod(0o644)  # package data: readable by whoever installs it
    log.info("exported %s", dest)
    return True


def _is_current(dest: Path, build: dict[str, Any], project_root: Path, evm: str) -> bool:
    """Whether the artifact at `dest` was compiled for `evm` from the current sources with
    `build`'s compiler and optimizer."""
    try:
        shipped = json.loads(dest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    wanted = {**build["compiler"], "evm_version": evm}
    return shipped.get("compiler") == wanted and all(
        (project_root / path).is_file() and source_sha1(project_root / path) == sha1
        for path, sha1 in shipped.get("sources", {}).items()) and bool(shipped.get("sources"))


def export_artifact(project_root: Path, package_root: Path | None = None) -> list[str]:
    """Write the shipped artifacts: brownie's build, and a compile for every other EVM version.

    Parameters
    ----------
    project_root
        The checkout holding ``build/`` and the Solidity sources.
    package_root
        The ``fleml_node`` folder to write into; defaults to ``project_root / "fleml_node"``.

    Returns
    -------
    list of str
        The EVM versions whose artifact was (re)written.

    Raises
    ------
    FileNotFoundError
        If there is no build.
    ValueError
        If the build is older than the sources.
    """
    build = json.loads((project_root / BUILD_ARTIFACT).read_text(encoding="utf-8"))
    package_root = package_root or project_root / "fleml_node"
    built_for = build["compiler"]["evm_version"]
    written = []
    if _write(package_root / artifact_resource(built_for), slim_artifact(build, project_root)):
        written.append(built_for)
    for evm in EVM_VERSIONS:
        dest = package_root / artifact_resource(evm)
        # beside each artifact, the standard-JSON input it was compiled from (verification)
        if _write(input_resource(dest), standard_input(evm, project_root, build)) \
                and evm not in written:
            written.append(evm)
        if evm == built_for or _is_current(dest, build, project_root, evm):
            continue
        log.info("compiling the consortium for the %s EVM", evm)
        fresh = compile_for(evm, project_root, build)
        if _write(dest, slim_artifact(fresh, project_root, check_build=False)):
            written.append(evm)
    return written


def input_resource(artifact: Path) -> Path:
    """Where the standard-JSON input of an artifact lies: beside it, ``*.input.json``."""
    return artifact.with_name(f"{CONTRACT_NAME}.input.json")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        export_artifact(Path.cwd())
    except (OSError, ValueError) as err:
        sys.exit(f"artifact export failed: {err}")
