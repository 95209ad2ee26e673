"""The `rt` command line (DESIGN section 11).

Every subcommand is declared here with its public options and runs from its own module:
`rt cluster up` and `rt cluster down` (the local launcher, `rt._launcher`), `rt pub`
(`rt._cmd_pub`), `rt sub` (`rt._cmd_sub`), `rt reset` (`rt._cmd_reset`), `rt status`
(`rt._status`), `rt streams` (`rt._cmd_streams`), `rt export` (`rt._cmd_export`),
`rt client add` (`rt._cmd_client`), `rt cert publisher` and `rt cert revoke`
(`rt._cmd_cert`) and `rt completion` (`rt._completion`). Exit codes are one table for all
(`rt._exits`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata

from ._exits import EXIT_CODES_HELP


def _version() -> str:
    try:
        return metadata.version("rtclient")
    except metadata.PackageNotFoundError:
        return "unknown"


def _base_port(text: str) -> int:
    port = int(text)
    if not 1 <= port <= 65535 - 1100:
        raise argparse.ArgumentTypeError(f"{port} is outside 1..{65535 - 1100}")
    return port


def _cluster_up(args: argparse.Namespace) -> int:
    from rt._launcher import cluster_up

    return cluster_up(
        args.data,
        args.nodes,
        base_port=args.base_port,
        timeout=args.timeout,
        log_level=args.log_level,
        publisher_tls=args.publisher_tls,
    )


def _cluster_down(args: argparse.Namespace) -> int:
    from rt._launcher import cluster_down

    return cluster_down(args.data, timeout=args.timeout)


def _pub(args: argparse.Namespace) -> int:
    from rt._cmd_pub import run

    return run(args)


def _sub(args: argparse.Namespace) -> int:
    from rt._cmd_sub import run

    return run(args)


def _reset(args: argparse.Namespace) -> int:
    from rt._cmd_reset import run

    return run(args)


def _export(args: argparse.Namespace) -> int:
    from rt._cmd_export import run

    return run(args)


def _client_add(args: argparse.Namespace) -> int:
    from rt._cmd_client import add

    return add(args.cluster, args.name, args.topic)


def _cert_publisher(args: argparse.Namespace) -> int:
    from rt._cmd_cert import publisher

    return publisher(args.cluster, args.publisher_id, args.out, args.days)


def _cert_revoke(args: argparse.Namespace) -> int:
    from rt._cmd_cert import revoke

    return revoke(args.cluster, args.certificate)


def _completion(args: argparse.Namespace) -> int:
    from rt._completion import bash_script

    print(bash_script(build_parser()), end="")
    return 0


def _streams(args: argparse.Namespace) -> int:
    from rt._cmd_streams import streams

    return streams(args.cluster, deadline=args.deadline, as_json=args.json)


def _status(args: argparse.Namespace) -> int:
    from rt._status import status

    return status(args.cluster, deadline=args.deadline, as_json=args.json)


def _add_timeout(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--timeout", type=float, default=60.0, metavar="SECONDS", help=f"{what} (default 60)"
    )


def _add_cluster(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cluster", required=True, metavar="FILE", help="cluster.json, or its data folder"
    )


def _add_deadline(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--deadline",
        type=float,
        default=2.0,
        metavar="SECONDS",
        help="how long each node gets to answer (default 2)",
    )


def _add_timeout_for_ever(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        help="exit 1 once no node has answered for this long (default: retry for ever)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rt",
        description="RT: a replicated, ordered message transport.",
        epilog=EXIT_CODES_HELP,
    )
    parser.add_argument("--version", action="version", version=f"rt {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    cluster = commands.add_parser("cluster", help="run a local cluster on this machine")
    cluster_commands = cluster.add_subparsers(dest="cluster_command", metavar="ACTION")
    cluster_commands.required = True
    up = cluster_commands.add_parser(
        "up",
        help="start 1 or 3 nodes in the foreground",
        description="Start 1 or 3 nodes in the foreground (one rt-supervisor each, "
        "restarted if it dies); write DIR/cluster.json, wait until every node is healthy "
        "and print a line containing 'ready'; also the info-service. Ctrl-C stops them. "
        "Each node's processes log to stderr and to DIR/node-<n>/logs.",
    )
    up.add_argument("--nodes", type=int, choices=(1, 3), default=3, help="number of nodes")
    up.add_argument("--data", default="DATA", metavar="DIR", help="data folder (default DATA)")
    up.add_argument(
        "--base-port",
        type=_base_port,
        default=5000,
        metavar="B",
        help="node n listens on B+1+10n (pull), B+2+10n (push), B+1000+10n (REST); default 5000",
    )
    _add_timeout(up, "give up if the nodes are not all healthy by then")
    up.add_argument(
        "--log-level",
        choices=("DEBUG", "INFO", "WARNING", "ERROR", "debug", "info", "warning", "error"),
        help="the nodes' logging level (default $RT_LOG_LEVEL, else INFO)",
    )
    up.add_argument(
        "--publisher-tls",
        action="store_true",
        help="take pushes only over mutual TLS with a certificate of the cluster's CA (this"
        " host's publisher pair is issued into DIR/tls/publisher)",
    )
    up.set_defaults(func=_cluster_up)
    down = cluster_commands.add_parser(
        "down",
        help="stop the cluster that 'rt cluster up' runs on a data folder",
        description="Stop the cluster that 'rt cluster up' runs on DIR (SIGTERM to its"
        " launcher, which stops every node) and wait until it has stopped.",
    )
    down.add_argument("--data", default="DATA", metavar="DIR", help="data folder (default DATA)")
    _add_timeout(down, "how long to wait for it to stop")
    down.set_defaults(func=_cluster_down)

    pub = commands.add_parser(
        "pub",
        help="publish one message per stdin line (JSON if it parses)",
        description="Publish one message per line of standard input (JSON if it parses).",
    )
    reached = pub.add_mutually_exclusive_group(required=True)
    reached.add_argument("--cluster", metavar="FILE", help="cluster.json, or its data folder")
    reached.add_argument(
        "--info-service",
        metavar="URL",
        help="publish from outside the cluster: enrol with this info-service, push with"
        " mutual TLS (with --client-id, and --client-secret or $RT_CLIENT_SECRET)",
    )
    pub.add_argument("--client-id", metavar="ID", help="OAuth2 client id (with --info-service)")
    pub.add_argument(
        "--client-secret", metavar="S", help="OAuth2 client secret (default $RT_CLIENT_SECRET)"
    )
    pub.add_argument("--topic", metavar="T", help="topic to publish on")
    pub.add_argument("--origin", metavar="O", help="origin recorded on each message")
    pub.add_argument("--dedup", action="store_true", help="publish on a deduplicating topic")
    pub.add_argument(
        "--local",
        action="store_true",
        help="allow a topic that is an absolute path: a local log, nothing sent to the cluster",
    )
    pub.add_argument("--strict", action="store_true", help="refuse a line that is not JSON")
    _add_timeout(pub, "how long to wait at the end for a quorum to hold everything")
    pub.add_argument(
        "--log-dir",
        metavar="DIR",
        help="parent of the log (default: the cluster's folder under $RT_LOG_PATH)",
    )
    pub.add_argument(
        "--publisher-id", metavar="ID", help="names the log <ID>.<topic> (default the host name)"
    )
    pub.add_argument("--quiet", action="store_true", help="say nothing on success")
    pub.set_defaults(func=_pub)

    sub = commands.add_parser(
        "sub",
        help="print the merged stream, one JSON line per message or event",
        description='Print one JSON line per message ({"pos":..,"on":..,"id":..,"ts":..,'
        '"data":..}) and per event ({"event":"reset"|"badtail","pos":[a,b]}).',
    )
    _add_cluster(sub)
    sub.add_argument("--from", dest="from_", metavar="start|end|POS", help="where to start reading")
    sub.add_argument("--filter", metavar="upd,trade", help="comma-separated message filter")
    sub.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    _add_timeout_for_ever(sub)
    sub.add_argument(
        "--time",
        choices=("ns", "iso"),
        default="ns",
        help="ts as nanoseconds since the epoch (default) or ISO 8601 UTC",
    )
    sub.set_defaults(func=_sub)

    reset = commands.add_parser(
        "reset",
        help="hard reset: remove every message of the stream on every node",
        description="Hard reset (DESIGN section 8): wipe every node's state, input copies and"
        " merged log, raise the session, and follow each node's steps until all are UP."
        " Publishers send again what their logs still hold; subscribers get a reset event.",
    )
    _add_cluster(reset)
    reset.add_argument("--yes", action="store_true", help="do not ask first")
    reset.add_argument(
        "--token", metavar="TOKEN", help="the nodes' reset token (default $RT_RESET_TOKEN)"
    )
    _add_timeout(reset, "give up if the nodes are not all UP again by then")
    reset.set_defaults(func=_reset)

    status = commands.add_parser(
        "status",
        help="roles, positions and lag, per node",
        description="Show roles, positions and lag, per node.",
    )
    _add_cluster(status)
    status.add_argument("--json", action="store_true", help="print every node's status as JSON")
    _add_deadline(status)
    status.set_defaults(func=_status)

    streams = commands.add_parser(
        "streams",
        help="per topic: publishers' streams, positions, lag, rates, dedup origins",
        description="Per topic: each publisher's stream with the bytes held and merged, the"
        " lag, its push rate and the nodes it is connected to; per .dedup origin the last id"
        " merged and the duplicates dropped.",
    )
    _add_cluster(streams)
    streams.add_argument("--json", action="store_true", help="print it as JSON")
    _add_deadline(streams)
    streams.set_defaults(func=_streams)

    export = commands.add_parser(
        "export",
        help="write the merged log between two positions to a jsonl, csv or parquet file",
        description="Write the merged log's messages from --from to --to (default: its end"
        " when the export starts) to OUTPUT as jsonl (rt sub's lines), csv or parquet (needs"
        " pyarrow); a progress bar on a terminal.",
    )
    _add_cluster(export)
    export.add_argument("--from", dest="from_", metavar="start|POS", help="default start")
    export.add_argument("--to", metavar="end|POS", help="default end: the end when it starts")
    export.add_argument(
        "--format", choices=("jsonl", "csv", "parquet"), default="jsonl", help="default jsonl"
    )
    export.add_argument("--filter", metavar="upd,trade", help="comma-separated message filter")
    export.add_argument("--time", choices=("ns", "iso"), default="ns", help="ts as for rt sub")
    _add_timeout_for_ever(export)
    export.add_argument("output", metavar="OUTPUT", help="the file to write, or - for stdout")
    export.set_defaults(func=_export)

    client = commands.add_parser("client", help="manage the built-in issuer's OAuth2 clients")
    client_commands = client.add_subparsers(dest="client_command", metavar="COMMAND")
    client_commands.required = True
    add = client_commands.add_parser(
        "add",
        help="register an external client; prints its client_id and client_secret",
        description="Register a client with the cluster's built-in identity provider (the"
        " info-service's) for the topics it may insert; prints"
        ' {"client_id": .., "client_secret": ..}. The secret is shown once, kept hashed.',
    )
    add.add_argument("name", metavar="NAME", help="the client's id and name")
    add.add_argument(
        "--topic", action="append", required=True, metavar="T", help="a topic it may insert"
    )
    _add_cluster(add)
    add.set_defaults(func=_client_add)

    cert = commands.add_parser("cert", help="internal publishers' certificates")
    cert_commands = cert.add_subparsers(dest="cert_command", metavar="COMMAND")
    cert_commands.required = True
    issue = cert_commands.add_parser(
        "publisher",
        help="issue a publisher pair for a host (a cluster with publisher_tls)",
        description="Issue, from the cluster's CA, a certificate and key for publisher id"
        " ID (a host name) and keep them with the CA's certificate in a folder; copy it to"
        " that host and name it with $RT_PUBLISHER_PAIR. Prints the serial and end as JSON.",
    )
    issue.add_argument("publisher_id", metavar="ID", help="the publisher id (a host name)")
    issue.add_argument(
        "--out",
        metavar="DIR",
        help="the pair's folder (default $RT_PUBLISHER_PAIR, else the cluster's publisher_pair)",
    )
    issue.add_argument(
        "--days", type=float, metavar="N", help="issue anew, valid N days (default 90)"
    )
    _add_cluster(issue)
    issue.set_defaults(func=_cert_publisher)
    withdraw = cert_commands.add_parser(
        "revoke",
        help="revoke a publisher's certificate: the nodes refuse its pushes",
        description="Put a certificate (a PEM file, or a pair's folder) on the cluster's"
        " revocation list; the nodes refuse its pushes, running ones included, within a second.",
    )
    withdraw.add_argument("certificate", metavar="CERT", help="the certificate or pair folder")
    _add_cluster(withdraw)
    withdraw.set_defaults(func=_cert_revoke)

    completion = commands.add_parser(
        "completion",
        help="print a shell completion script: source <(rt completion bash)",
        description="Print a bash completion script for rt (zsh: run autoload bashcompinit &&"
        " bashcompinit first). Add `source <(rt completion bash)` to ~/.bashrc.",
    )
    completion.add_argument(
        "shell", choices=("bash",), help="the shell (bash; zsh via bashcompinit)"
    )
    completion.set_defaults(func=_completion)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
