"""``xdsctl [--redis-url URL] [--prefix P] [--json] SUBCOMMAND [options]``.

``--redis-url``, ``--prefix`` and ``--json`` may also follow the subcommand (as with kubectl or gh).
Each group of subcommands adds itself to the parser in its own ``add_*`` function.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import sys

import orjson

from shared.config import (Parser, RedisSettings, add_common, existing_file, hostports, ip_address, key_prefix,
                           non_empty, port, positive_int, redis_url)
from shared.connect import redact, redis_client
from shared import resources as rs
from shared.errors import ConfigError, CorruptState, StoreError, StoreUnavailable
from shared.store import Store

from . import explain, register, views

INSPECT = {
    "routes": "SNI -> address of every builder",
    "builders": "every builder record",
    "leader": "the discoverer holding the lease, and its epoch",
    "discoverers": "every live discoverer: role, epoch, version, builders, last poll, last error",
    "replicas": "ADS replicas and their heartbeats",
    "envoys": "connected Envoys: region, replica, versions ACKed, last NACK, lag",
    "status": "one screen: version, leader, discoverers, replicas, Envoys in sync / behind / NACKing",
}


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="xdsctl", description="Inspect the control plane in Redis and generate Envoy bootstraps.")
    add_common(p, with_metrics=False, with_logs=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    anywhere = [anywhere_options()]
    sub = p.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND", parser_class=Parser)
    add_inspect_commands(sub, anywhere)
    register.add_parsers(sub, anywhere)
    explain.add_parser(sub, anywhere)
    add_changes_command(sub, anywhere)
    add_bootstrap_command(sub, anywhere)
    return p


def anywhere_options() -> argparse.ArgumentParser:
    """The global options again, for after the subcommand. SUPPRESS: a subcommand that is not given
    one leaves the value from before the subcommand (or its default) alone."""
    g = Parser(add_help=False)
    o = g.add_argument_group("global options (also accepted before the subcommand)")
    o.add_argument("--json", action="store_true", default=argparse.SUPPRESS, help="machine-readable output")
    o.add_argument("--redis-url", type=redis_url, default=argparse.SUPPRESS,
                   help="Redis URL (env XDS_REDIS_URL)")
    o.add_argument("--prefix", type=key_prefix, default=argparse.SUPPRESS, help="key prefix (env XDS_PREFIX)")
    return g


def add_inspect_commands(sub, parents) -> None:
    for name, text in INSPECT.items():
        sub.add_parser(name, parents=parents, help=text, description=text)


def add_changes_command(sub, parents) -> None:
    ch = sub.add_parser("changes", parents=parents, help="the change stream (newest last), with wall-clock times")
    ch.add_argument("--count", type=positive_int, default=20, help="entries to show")
    ch.add_argument("--follow", action="store_true", help="keep printing new entries")


def add_bootstrap_command(sub, parents) -> None:
    b = sub.add_parser("bootstrap", parents=parents, help="print an Envoy bootstrap (YAML) that uses this control plane")
    b.add_argument("--node-id", required=True, type=non_empty, help="Envoy node id (required)")
    b.add_argument("--region", default="", help="node locality region (picks its view with --region-scope local)")
    b.add_argument("--cluster", default="builder-proxies", type=non_empty, help="node cluster name")
    b.add_argument("--ads", default=rs.DEFAULT_ADS, type=hostports,
                   help="the ADS replicas: HOST:PORT, several comma-separated, or a DNS name of all of them")
    b.add_argument("--admin-port", type=port, default=9901, help="admin interface port")
    b.add_argument("--admin-address", type=ip_address, default="127.0.0.1", help="admin interface address")
    b.add_argument("--listener-port", type=port, default=rs.DEFAULT_LISTENER_PORT,
                   help="port of the builder listener (this Envoy's choice wins over xds-server --listener-port)")
    b.add_argument("--listener-address", type=ip_address, default=rs.DEFAULT_LISTENER_ADDRESS,
                   help="address of the builder listener")
    b.add_argument("--routing", choices=rs.ROUTING_MODES, default=rs.FILTER_CHAINS,
                   help="the xds-server's --routing (on_demand implies delta ADS)")
    b.add_argument("--fcds", action="store_true",
                   help="with --routing filter_chains: for an xds-server with --fcds (implies --delta)")
    b.add_argument("--delta", action="store_true", help="use delta (incremental) ADS")
    t = b.add_argument_group("ADS over TLS (all or none: a half-given set is refused)")
    t.add_argument("--xds-ca", type=existing_file, help="connect to ADS over TLS, trusting this CA file")
    t.add_argument("--xds-cert", type=existing_file, help="client certificate file for ADS mTLS (with --xds-key)")
    t.add_argument("--xds-key", type=existing_file, help="client key file for ADS mTLS (with --xds-cert)")
    t.add_argument("--xds-sni", help="server name the replicas' certificate must carry (default: the ADS host)")


def bootstrap(args: argparse.Namespace) -> str:
    """The bootstrap YAML; TLS options given by halves are refused (never a silent plaintext bootstrap)."""
    if bool(args.xds_cert) != bool(args.xds_key):
        given, missing = ("--xds-cert", "--xds-key") if args.xds_cert else ("--xds-key", "--xds-cert")
        raise ConfigError(f"{given}: needs {missing} too (the client certificate and its key go together)")
    if not args.xds_ca:
        given = [f for f, v in (("--xds-cert", args.xds_cert), ("--xds-sni", args.xds_sni)) if v]
        if given:
            raise ConfigError(f"{given[0]}: needs --xds-ca (the CA of the replicas' certificate); "
                              "without it the bootstrap would connect to ADS in plaintext")
    from .bootstrap import BootstrapSpec, render_yaml  # envoy-data-plane: slow to import

    spec = BootstrapSpec(node_id=args.node_id, region=args.region, cluster=args.cluster, ads=args.ads,
                         admin_port=args.admin_port, admin_address=args.admin_address,
                         listener_port=args.listener_port, listener_address=args.listener_address,
                         routing=args.routing, fcds=args.fcds, delta=args.delta, xds_ca=args.xds_ca,
                         xds_cert=args.xds_cert,
                         xds_key=args.xds_key, xds_sni=args.xds_sni)
    return render_yaml(spec)


async def run(args: argparse.Namespace) -> int:
    settings = RedisSettings.from_args(args)
    if args.command in register.COMMANDS:
        return await register.connected(settings, args)
    async with redis_client(settings.url, name="xdsctl") as client:
        store = Store(client, settings.keys)
        if args.command == explain.COMMAND:
            return await explain.run(store, args)
        if args.command == "changes" and args.follow:
            await views.follow_changes(store, args.json)
            return 0
        data = await views.collect(store, args.command, args)
    if args.json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        views.show(args.command, data)
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = parser().parse_args(argv)
        if args.command == "bootstrap":
            sys.stdout.write(bootstrap(args))
            return 0
        try:
            return asyncio.run(run(args))
        except StoreUnavailable as exc:
            print(f"error: cannot reach Redis at {redact(args.redis_url)}: {exc}", file=sys.stderr)
            return 1
        except CorruptState as exc:
            print(f"error: Redis holds data xdsctl cannot read: {exc}", file=sys.stderr)
            return 1
        except StoreError as exc:  # a refusal an operator must fix (WRONGTYPE, NOPERM, ...): it says what to do
            print(f"error: {exc}", file=sys.stderr)
            return 1
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `xdsctl changes --follow | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
