"""The dev network: local chains, IPFS daemons and consortiums for trying FLEML and for tests.

Nothing in the runtime path (nodes, audit, learning, storage) imports this package; it starts
external programs (anvil, js-ipfs) that a production member runs its own way.

- :mod:`~fleml_node.devnet.executables`: where anvil and jsipfs are found
- :mod:`~fleml_node.devnet.anvil`: a local anvil chain and its test keys
- :mod:`~fleml_node.devnet.ipfs`: a private offline js-ipfs daemon; :func:`ensure_test_daemon`
- :mod:`~fleml_node.devnet.consortium`: deploy and populate a consortium on a local chain
- :mod:`~fleml_node.devnet.network`: the persistent devnet behind ``fleml-node devnet``
- :mod:`~fleml_node.devnet.artifacts`: export the compiled contract into the package
"""
