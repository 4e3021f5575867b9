"""``xdsctl [--redis-url URL] [--prefix P] SUBCOMMAND [options]``."""
from __future__ import annotations

import argparse
import asyncio
import sys
import time

import orjson

from shared import resources as rs
from shared.config import HelpFormatter, RedisSettings, add_common
from shared.connect import redact, redis_client
from shared.errors import ConfigError, StoreUnavailable
from shared.store import Store

from . import views


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xdsctl", formatter_class=HelpFormatter,
                                description="Inspect the control plane in Redis and generate Envoy bootstraps.")
    add_common(p, with_metrics=False)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    sub.add_parser("routes", help="SNI -> address of every builder")
    sub.add_parser("builders", help="every builder record")
    sub.add_parser("leader", help="the discoverer holding the lease, and its epoch")
    sub.add_parser("replicas", help="ADS replicas and their heartbeats")
    sub.add_parser("envoys", help="connected Envoys: region, replica, versions ACKed, last NACK, lag")
    sub.add_parser("status", help="one screen: version, leader, replicas, Envoys in sync / behind / NACKing")
    ch = sub.add_parser("changes", help="the change stream (newest last)")
    ch.add_argument("--count", type=int, default=20, help="entries to show")
    ch.add_argument("--follow", action="store_true", help="keep printing new entries")
    b = sub.add_parser("bootstrap", help="print an Envoy bootstrap (YAML) that uses this control plane",
                       formatter_class=HelpFormatter)
    b.add_argument("--node-id", required=True, help="Envoy node id")
    b.add_argument("--region", default="", help="node locality region (picks its view with --region-scope local)")
    b.add_argument("--cluster", default="builder-proxies", help="node cluster name")
    b.add_argument("--ads", default="127.0.0.1:18000",
                   help="HOST:PORT of the ADS replicas; several comma-separated, or a DNS name of all of them")
    b.add_argument("--admin-port", type=int, default=9901, help="admin interface port (on 127.0.0.1)")
    b.add_argument("--admin-address", default="127.0.0.1", help="admin interface address")
    b.add_argument("--listener-port", type=int, default=rs.DEFAULT_LISTENER_PORT, help="port of the builder listener")
    b.add_argument("--listener-address", default=rs.DEFAULT_LISTENER_ADDRESS, help="address of the builder listener")
    b.add_argument("--routing", choices=rs.ROUTING_MODES, default=rs.FILTER_CHAINS,
                   help="the xds-server's --routing (on_demand implies delta ADS)")
    b.add_argument("--fcds", action="store_true",
                   help="with --routing filter_chains: for an xds-server with --fcds (implies --delta)")
    b.add_argument("--delta", action="store_true", help="use delta (incremental) ADS")
    b.add_argument("--xds-ca", help="connect to ADS over TLS, trusting this CA file")
    b.add_argument("--xds-cert", help="client certificate file for ADS mTLS (with --xds-key)")
    b.add_argument("--xds-key", help="client key file for ADS mTLS")
    b.add_argument("--xds-sni", help="server name the replicas' certificate must carry (default: the ADS host)")
    return p


async def run(args: argparse.Namespace) -> int:
    settings = RedisSettings.from_args(args)
    async with redis_client(settings.url, name="xdsctl") as client:
        store = Store(client, settings.keys)
        if args.command == "changes" and args.follow:
            return await views.follow_changes(store, args)
        data = await views.collect(store, args.command, args)
    if args.json:
        sys.stdout.write(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        views.show(args.command, data)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.command == "bootstrap":
        from .bootstrap import BootstrapSpec, render_yaml

        spec = BootstrapSpec(node_id=args.node_id, region=args.region, cluster=args.cluster, ads=args.ads,
                             admin_port=args.admin_port, admin_address=args.admin_address,
                             listener_port=args.listener_port, listener_address=args.listener_address,
                             routing=args.routing, fcds=args.fcds, delta=args.delta, xds_ca=args.xds_ca, xds_cert=args.xds_cert,
                             xds_key=args.xds_key, xds_sni=args.xds_sni)
        try:
            sys.stdout.write(render_yaml(spec))
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    try:
        return asyncio.run(run(args))
    except StoreUnavailable as exc:
        print(f"error: cannot reach Redis at {redact(args.redis_url)}: {exc}", file=sys.stderr)
        return 1
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
