"""Chain access: the deployment record, contract bindings through web3.py and the event follower."""
