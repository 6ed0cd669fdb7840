"""`fleml-node devnet up|down|status`: a local chain, IPFS daemon and consortium to try FLEML.

The commands print to stdout only shell lines (exports and ``#`` comments), so
``eval "$(fleml-node devnet up)"`` configures the current shell; ``source <dir>/env`` does the
same in another terminal. Imports of the devnet machinery stay inside the commands, so that
``fleml-node --help`` does not load web3.
"""

from __future__ import annotations

import shlex

import click

from fleml_node.devnet.network import CHAINS, DEFAULT_DIR, DEFAULT_MEMBERS, DEFAULT_SEALERS, DIR_ENV

dir_option = click.option(
    "--dir", "state_dir", type=click.Path(file_okay=False), default=str(DEFAULT_DIR),
    envvar=DIR_ENV, show_default=True,
    help=f"The devnet's state folder [env {DIR_ENV}].")


@click.group()
def devnet() -> None:
    """A local devnet for trying FLEML by hand: one anvil chain, one js-ipfs daemon and a
    deployed consortium (anvil's public test keys: local use only, never real value).

    anvil and jsipfs are found through FLEML_ANVIL_BIN / FLEML_JSIPFS_BIN, else on PATH, else
    in the checkout's node_modules (tools/setup.sh installs them there).
    """


@devnet.command()
@dir_option
@click.option("--chain", "kind", type=click.Choice(CHAINS), default="anvil", show_default=True,
              help="anvil, or poa: a Clique proof-of-authority network of @ethereumjs/client "
                   "nodes (see docs/poa-ethereumjs.md).")
@click.option("--sealers", type=click.IntRange(1, 8), default=DEFAULT_SEALERS,
              show_default=True, help="With --chain poa: nodes that seal blocks.")
@click.option("--nodes", type=click.IntRange(1, 8),
              help="With --chain poa: nodes in all, the ones past the sealers only follow "
                   "[default: --sealers].")
@click.option("--rpc-port", type=click.IntRange(1, 65535),
              help="The chain's port [default: the one used before, else 8546; with --chain poa "
                   "the first node's, else 8561, node i on 8561 + i].")
@click.option("--members", type=click.IntRange(1, 8), default=DEFAULT_MEMBERS,
              show_default=True, help="Members to admit when the consortium is deployed.")
@click.option("--no-chain", is_flag=True,
              help="Start only the IPFS daemon (the test runner does: tests start their own "
                   "chains).")
def up(state_dir: str, kind: str, sealers: int, nodes: int | None, rpc_port: int | None,
       members: int, no_chain: bool) -> None:
    """Start the chain and the IPFS daemon (unless they run) and deploy the consortium.

    Prints the RPC URL, the IPFS API and the deployment record as shell exports, and the key
    of every role. Ports, chain state and IPFS blocks survive `down` and `up` again.
    """
    from fleml_node.devnet.network import Devnet, DevnetError

    if nodes is not None and nodes < sealers:
        raise click.BadParameter(f"--nodes {nodes} is fewer than --sealers {sealers}")
    net = Devnet(state_dir)
    try:
        status = net.up(rpc_port=rpc_port, members=members, chain=not no_chain, kind=kind,
                        sealers=sealers, nodes=nodes)
    except DevnetError as err:
        raise click.ClickException(str(err)) from err
    _print_status(status, net.env_path)


@devnet.command()
@dir_option
@click.option("--wipe", is_flag=True,
              help="Also delete the state folder: chain, IPFS blocks, deployment.")
def down(state_dir: str, wipe: bool) -> None:
    """Stop the devnet's chain (saving its state) and IPFS daemon."""
    import shutil

    from fleml_node.devnet.network import Devnet, DevnetError

    net = Devnet(state_dir)
    try:
        stopped = net.down()
    except DevnetError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"# stopped {', '.join(stopped)}" if stopped else "# nothing was running")
    if wipe and net.state_dir.is_dir():
        shutil.rmtree(net.state_dir)
        click.echo(f"# deleted {net.state_dir}")


@devnet.command()
@dir_option
def status(state_dir: str) -> None:
    """Say what runs. Exits 0 when the chain and the IPFS daemon both run, else 1."""
    from fleml_node.devnet.network import Devnet

    net = Devnet(state_dir)
    current = net.status()
    chain = (f"running, pid {current.anvil_pid}, {current.rpc_url}" if current.anvil_pid
             else f"{current.chain} running, {len(current.chain_pids)} node(s), pids "
                  f"{', '.join(map(str, current.chain_pids))}" if current.chain_pids
             else "stopped")
    ipfs = (f"running, pid {current.ipfs_pid}, {current.ipfs_api}" if current.ipfs_pid
            else "stopped")
    click.echo(f"# devnet {current.state_dir}")
    click.echo(f"# chain: {chain}")
    click.echo(f"# ipfs:  {ipfs}")
    click.echo(f"# deployment record: {current.deployment or 'none'}")
    if current.running:
        _print_status(current, net.env_path)
    else:
        click.echo("# start it with: fleml-node devnet up")
    raise SystemExit(0 if current.running else 1)


def _print_status(status, env_path) -> None:  # noqa: ANN001 (types imported lazily)
    from fleml_node.devnet.network import env_vars, role_keys

    for name, value in env_vars(status).items():
        click.echo(f"export {name}={shlex.quote(value)}")
    click.echo(f"# the same exports for other terminals: source {env_path}")
    if len(status.rpc_urls) > 1:
        click.echo(f"# {status.chain} chain nodes (point each member at its own FLEML_RPC):")
        for i, url in enumerate(status.rpc_urls):
            click.echo(f"#   node {i}: {url}")
    if status.rpc_url:
        click.echo("# keys (anvil's public test keys; local use only):")
        for role, address, key in role_keys(status.members):
            click.echo(f"#   {role:<10} {address}  FLEML_PRIVATE_KEY={key}")
    click.echo("# stop with: fleml-node devnet down" + (
        "" if status.state_dir == DEFAULT_DIR.resolve() else f" --dir {status.state_dir}"))
