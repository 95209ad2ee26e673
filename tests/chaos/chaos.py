"""``make chaos SEED=.. MINUTES=..``: a bounded, seeded fault run against a live cluster.

Three real ``rt-sequencer`` processes on loopback, each talking to its peers through a
fault-injecting TCP proxy (one per directed link: the node's own cluster file names the
proxies as its peers' addresses), while three publishers send: one on a plain topic (a
message of 1-2 MiB among them every 3 s, which travels in pieces) and an HA pair on a
``.dedup`` topic publishing the same ids; one subscriber follows the cluster throughout.
Faults, drawn from ``random.Random(SEED)`` every one to three seconds for MINUTES minutes:

- ``kill``: SIGKILL of a node's sequencer, restarted a little later;
- ``pause``: SIGSTOP, then SIGCONT;
- ``cut`` / ``isolate``: the proxies drop a link, or every link of a node, for a while;
- ``damage``: a node stopped, one of its files damaged (a byte flipped in a sealed
  merged-log file or in an input copy's file, the newest merged-log file cut short, a
  garbage Raft hard state, a byte flipped in the Raft log), and restarted: it must mend
  itself;
- ``full-disk``: a node's volume (a tmpfs, when run as root) filled for a few seconds;
- ``forged``: Raft messages with impossible terms, gossip naming ``..`` or claiming
  10**18 bytes, straight to a node's peer listener;
- ``oversized``: a 256 MiB push.

Then the faults stop, everything heals, the publishers flush, and the run checks:
every publisher's messages merged exactly once and in order (the HA pair's ids once
each, none missing), merged logs identical on every node, and the subscriber delivered
exactly the merged sequence. It prints the seed, the faults and the counts, and exits 1
on any failure (with the nodes' logs kept in the work folder).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

import rt
from rt_sequencer._peers import encode_message as encode_raft_message
from rt_sequencer.raft import Message, MessageType
from rtcommon import localhost
from rtcommon.cluster import ClusterSpec, NodeSpec
from rtcommon.log import list_log_files, read_log
from rtproto.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    common_pb2,
    peer_pb2,
    peer_pb2_grpc,
    push_pb2,
    push_pb2_grpc,
)

BIN = Path(sys.executable).parent
NODES = 3
ROLL = 4 << 20  # files still roll every few seconds, with the long messages
LONG_EVERY = 60  # rounds of the plain publisher (20 a second) between long messages
VOLUME = "256m"  # each node's tmpfs, when run as root
RATE = 400  # messages per second per publisher
PROXY_OFFSET = 100  # the proxy of link i -> j listens on base + PROXY_OFFSET + 10 i + j


# -- the proxies -------------------------------------------------------------------------


class Proxies:
    """One TCP proxy per directed link (a node's connections to one peer), on an event
    loop of their own; a cut link drops its connections and refuses new ones."""

    def __init__(self, links: dict[tuple[int, int], tuple[int, str]]) -> None:
        self._links = links  # (from, to) -> (listening port, target host:port)
        self.cut_links: set[tuple[int, int]] = set()
        self._open: dict[tuple[int, int], set[asyncio.StreamWriter]] = collections.defaultdict(set)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()
        self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        for link, (port, _) in self._links.items():
            self._loop.run_until_complete(
                asyncio.start_server(
                    lambda r, w, link=link: self._serve(link, r, w), "127.0.0.1", port
                )
            )
        self._ready.set()
        self._loop.run_forever()

    async def _serve(self, link, reader, writer) -> None:
        if link in self.cut_links:
            writer.close()
            return
        host, port = self._links[link][1].rsplit(":", 1)
        try:
            up_reader, up_writer = await asyncio.open_connection(host, int(port))
        except OSError:
            writer.close()
            return
        self._open[link] |= {writer, up_writer}

        async def pipe(source, sink) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await source.read(1 << 16):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._open[link] -= {writer, up_writer}

    def cut(self, links: set[tuple[int, int]]) -> None:
        def apply() -> None:
            self.cut_links |= links
            for link in links:
                for writer in self._open.pop(link, set()):
                    writer.transport.abort()

        self._loop.call_soon_threadsafe(apply)

    def heal(self, links: set[tuple[int, int]] | None = None) -> None:
        def apply() -> None:
            self.cut_links -= self.cut_links if links is None else links

        self._loop.call_soon_threadsafe(apply)


# -- the cluster ---------------------------------------------------------------------------


class Cluster:
    def __init__(self, root: Path, seed: int) -> None:
        self.root = root
        base = localhost.find_free_base_port(span=PROXY_OFFSET + 10 * NODES)
        self.tmpfs = os.geteuid() == 0
        nodes = []
        for i in range(NODES):
            data = root / f"node-{i}"
            data.mkdir(parents=True)
            if self.tmpfs:
                subprocess.run(
                    ["mount", "-t", "tmpfs", "-o", f"size={VOLUME}", "tmpfs", data], check=True
                )
            nodes.append(
                NodeSpec(
                    id=i,
                    name=f"node-{i}",
                    push=f"127.0.0.1:{base + 2 + 10 * i}",
                    pull=f"127.0.0.1:{base + 1 + 10 * i}",
                    rest="",
                    peer=f"127.0.0.1:{base + 4 + 10 * i}",
                    data=str(data),
                )
            )
        self.spec = ClusterSpec(
            name="chaos", id=f"chaos-{seed}", nodes=tuple(nodes), roll_size=ROLL
        )
        self.spec.to_file(root / "cluster.json")
        links = {}
        for i in range(NODES):  # node i's file names proxies as its peers' addresses
            own = []
            for node in nodes:
                if node.id == i:
                    own.append(node)
                    continue
                port = base + PROXY_OFFSET + 10 * i + node.id
                links[(i, node.id)] = (port, node.peer)
                own.append(msgspec_replace(node, peer=f"127.0.0.1:{port}"))
            ClusterSpec(name="chaos", id=self.spec.id, nodes=tuple(own), roll_size=ROLL).to_file(
                root / f"cluster-{i}.json"
            )
        self.proxies = Proxies(links)
        self.procs: dict[int, subprocess.Popen] = {}
        self.paused: set[int] = set()
        self.env = {**os.environ, "RT_SCRUB_INTERVAL": "2", "RT_LOG_LEVEL": "INFO"}

    def start(self, i: int) -> None:
        log = open(self.root / f"node-{i}.log", "ab")  # noqa: SIM115 (the process owns it)
        self.procs[i] = subprocess.Popen(
            [BIN / "rt-sequencer", "--cluster", self.root / f"cluster-{i}.json", "--node", str(i)],
            stderr=log,
            env=self.env,
        )

    def up(self, i: int) -> bool:
        return i in self.procs and self.procs[i].poll() is None

    def kill(self, i: int) -> None:
        if self.up(i):
            self.cont(i)
            self.procs[i].kill()
            self.procs[i].wait(30)

    def stop(self, i: int) -> None:
        """A clean stop (SIGTERM), as before maintenance."""
        if self.up(i):
            self.cont(i)
            self.procs[i].terminate()
            try:
                self.procs[i].wait(30)
            except subprocess.TimeoutExpired:
                self.procs[i].kill()
                self.procs[i].wait(30)

    def pause(self, i: int) -> None:
        if self.up(i):
            self.procs[i].send_signal(signal.SIGSTOP)
            self.paused.add(i)

    def cont(self, i: int) -> None:
        if i in self.paused and i in self.procs:
            self.procs[i].send_signal(signal.SIGCONT)
        self.paused.discard(i)

    def status(self, i: int) -> admin_pb2.NodeStatus | None:
        try:
            with grpc.insecure_channel(self.spec.nodes[i].push) as channel:
                stub = admin_pb2_grpc.AdminStub(channel)
                return stub.Status(admin_pb2.StatusRequest(), timeout=2)
        except grpc.RpcError:
            return None

    def out(self, i: int) -> Path:
        return Path(self.spec.nodes[i].data) / "s" / "out"

    def state(self, i: int) -> Path:
        return Path(self.spec.nodes[i].data) / "s" / "state"

    def close(self) -> None:
        for i in range(NODES):
            self.stop(i)
        if self.tmpfs:
            for node in self.spec.nodes:
                subprocess.run(["umount", "-l", node.data], check=False)


def msgspec_replace(node: NodeSpec, **changes: str) -> NodeSpec:
    import msgspec

    return msgspec.structs.replace(node, **changes)


# -- the publishers and the subscriber --------------------------------------------------


class Publishing:
    """The plain publisher and the HA pair, each in a thread of its own."""

    def __init__(self, spec: ClusterSpec, root: Path) -> None:
        streams = {"plain": ("feed", "plain"), "ha-a": ("ticks.dedup", "ticker")}
        streams["ha-b"] = streams["ha-a"]
        self.publishers = {
            name: rt.Publisher(
                spec, topic, log_dir=root / "pub", publisher_id=name, origin=origin, codec="raw"
            )
            for name, (topic, origin) in streams.items()
        }
        self.sent = dict.fromkeys(self.publishers, 0)
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(name,), daemon=True)
            for name in self.publishers
        ]
        for thread in self._threads:
            thread.start()

    def _run(self, name: str) -> None:
        publisher = self.publishers[name]
        explicit = name != "plain"
        rng = random.Random(name)
        rounds = 0
        while not self._stop.is_set():
            rounds += 1
            for k in range(RATE // 20):
                n = self.sent[name] + 1
                size = rng.randrange(20, 200)
                if name == "plain" and rounds % LONG_EVERY == 0 and k == 0:
                    size = rng.randrange(1 << 20, 2 << 20)  # longer than a chunk: in pieces
                publisher.publish(b"m%d" % n + bytes(size), id=n if explicit else None)
                self.sent[name] = n
            time.sleep(0.05)

    def stop_and_flush(self, timeout: float) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)
        # The HA pair publishes the same ids: the one behind catches up with the other.
        top = max(self.sent["ha-a"], self.sent["ha-b"])
        for name in ("ha-a", "ha-b"):
            while self.sent[name] < top:
                n = self.sent[name] + 1
                self.publishers[name].publish(b"m%d" % n, id=n)
                self.sent[name] = n
        deadline = time.monotonic() + timeout
        for publisher in self.publishers.values():
            publisher.flush(max(1.0, deadline - time.monotonic()))

    def close(self) -> None:
        for publisher in self.publishers.values():
            with contextlib.suppress(Exception):
                publisher.close()


# -- faults ----------------------------------------------------------------------------------


class Faults:
    def __init__(self, cluster: Cluster, rng: random.Random) -> None:
        self.cluster = cluster
        self.rng = rng
        self.counts: collections.Counter[str] = collections.Counter()
        self.skipped: collections.Counter[str] = collections.Counter()
        self._undo: list[tuple[float, str, object]] = []  # (when, what, argument)

    def step(self) -> None:
        now = time.monotonic()
        for item in [u for u in self._undo if u[0] <= now]:
            self._undo.remove(item)
            self._carry_out(item[1], item[2])
        self.restart_stopped()
        kind = self.rng.choice(
            [
                "kill",
                "kill",
                "pause",
                "cut",
                "isolate",
                "damage",
                "full-disk",
                "forged",
                "oversized",
            ]
        )
        getattr(self, "_" + kind.replace("-", "_"))()

    def restart_stopped(self) -> None:
        """As a supervisor does: a node that stopped on its own starts again (one a
        fault killed starts when the fault says)."""
        starting = {argument for _, what, argument in self._undo if what == "start"}
        for i in range(NODES):
            if not self.cluster.up(i) and i not in starting:
                self.cluster.start(i)
                self.counts["restarted after it stopped"] += 1

    def heal_all(self) -> None:
        for _, what, argument in sorted(self._undo, key=lambda u: u[0]):
            self._carry_out(what, argument)
        self._undo.clear()
        self.cluster.proxies.heal()
        for i in range(NODES):
            self.cluster.cont(i)
            if not self.cluster.up(i):
                self.cluster.start(i)

    def _later(self, low: float, high: float, what: str, argument: object) -> None:
        self._undo.append((time.monotonic() + self.rng.uniform(low, high), what, argument))

    def _carry_out(self, what: str, argument) -> None:
        cluster = self.cluster
        if what == "start" and not cluster.up(argument):
            cluster.start(argument)
        elif what == "cont":
            cluster.cont(argument)
        elif what == "heal":
            cluster.proxies.heal(argument)
        elif what == "unfill":
            with contextlib.suppress(FileNotFoundError):
                argument.unlink()

    def _node(self) -> int:
        return self.rng.randrange(NODES)

    def _kill(self) -> None:
        i = self._node()
        if self.cluster.up(i):
            self.cluster.kill(i)
            self._later(0.5, 3.0, "start", i)
            self.counts["kill"] += 1

    def _pause(self) -> None:
        i = self._node()
        if self.cluster.up(i) and i not in self.cluster.paused:
            self.cluster.pause(i)
            self._later(1.0, 5.0, "cont", i)
            self.counts["pause"] += 1

    def _cut(self) -> None:
        a, b = self.rng.sample(range(NODES), 2)
        links = {(a, b), (b, a)}
        self.cluster.proxies.cut(links)
        self._later(2.0, 6.0, "heal", links)
        self.counts["cut"] += 1

    def _isolate(self) -> None:
        i = self._node()
        links = {(i, j) for j in range(NODES) if j != i} | {(j, i) for j in range(NODES) if j != i}
        self.cluster.proxies.cut(links)
        self._later(2.0, 6.0, "heal", links)
        self.counts["isolate"] += 1

    def _damage(self) -> None:
        cluster = self.cluster
        i = self._node()
        others_whole = all(
            cluster.up(j) and not (cluster.state(j) / "rejoining").exists()
            for j in range(NODES)
            if j != i
        )
        how = self.rng.choice(["flip-sealed", "flip-input", "cut-newest", "hardstate", "raft-log"])
        if how in ("hardstate", "raft-log") and not others_whole:
            self.skipped["damage (a peer is down or rejoining)"] += 1
            return  # losing Raft state is safe one node at a time, with the others up
        cluster.stop(i)
        files = [cluster.out(i) / f"log.{s}.{r}" for s, r in list_log_files(cluster.out(i))]
        files = [f for f in files if f.stat().st_size > 64]
        raft = cluster.state(i) / "raft"
        # Input copies' files: a sealed one is mended from a peer (by the scrubber, or at
        # once when the merge meets the damage), the newest cut back at the restart.
        inputs = [
            f
            for f in sorted(Path(cluster.spec.nodes[i].data).glob("s/in/*/log.*"))
            if f.stat().st_size > 64
        ]
        if how == "flip-sealed" and len(files) > 1:
            flip(self.rng, files[self.rng.randrange(len(files) - 1)])
        elif how == "flip-input" and inputs:
            flip(self.rng, self.rng.choice(inputs))
        elif how == "cut-newest" and files:
            with open(files[-1], "r+b") as file:
                file.truncate(file.seek(0, os.SEEK_END) // 2)
        elif how == "hardstate" and (raft / "hardstate").exists():
            (raft / "hardstate").write_bytes(self.rng.randbytes(28))
        elif how == "raft-log" and (raft / "log").exists():
            flip(self.rng, raft / "log", at=12)
        else:
            how = "none (nothing to damage yet)"
        cluster.start(i)
        self.counts[f"damage: {how}"] += 1

    def _full_disk(self) -> None:
        if not self.cluster.tmpfs:
            self.skipped["full-disk (not root: no tmpfs)"] += 1
            return
        i = self._node()
        volume = Path(self.cluster.spec.nodes[i].data)
        filler = volume / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as file:
            free = shutil.disk_usage(volume).free
            file.truncate(0)
            chunk = bytes(1 << 20)
            for _ in range(free >> 20):
                file.write(chunk)
        self._later(2.0, 5.0, "unfill", filler)
        self.counts["full-disk"] += 1

    def _forged(self) -> None:
        i = self._node()
        node = self.cluster.spec.nodes[i]
        peer = (i + 1) % NODES
        status = self.cluster.status(i)
        session = status.session if status is not None else 0
        with grpc.insecure_channel(node.peer) as channel:
            stub = peer_pb2_grpc.PeerStub(channel)
            heartbeat = Message(MessageType.HEARTBEAT, src=peer + 1, dst=i + 1, term=(1 << 64) - 1)
            batch = peer_pb2.RaftBatch(
                from_node=peer, messages=[encode_raft_message(heartbeat)], session=session
            )
            for forged in (
                lambda: stub.Raft(iter([batch]), timeout=5),
                lambda: stub.Gossip(
                    iter(
                        [
                            peer_pb2.NodeState(
                                node=peer, session=session, held={"..": 5}, topics={"..": "x"}
                            )
                        ]
                    ),
                    timeout=5,
                ),
                lambda: stub.Gossip(
                    iter(
                        [
                            peer_pb2.NodeState(
                                node=peer,
                                session=session,
                                held={"plain.feed": 10**18},
                                topics={"plain.feed": "feed"},
                            )
                        ]
                    ),
                    timeout=5,
                ),
            ):
                with contextlib.suppress(grpc.RpcError):
                    forged()
        self.counts["forged"] += 1

    def _oversized(self) -> None:
        i = self._node()
        if not self.cluster.up(i) or i in self.cluster.paused:
            return

        async def push() -> None:
            options = [("grpc.max_send_message_length", -1)]
            async with grpc.aio.insecure_channel(
                self.cluster.spec.nodes[i].push, options=options
            ) as channel:
                call = push_pb2_grpc.PushStub(channel).Push()
                await call.write(
                    push_pb2.PushRequest(open=push_pb2.PushOpen(stream="huge.feed", topic="feed"))
                )
                held = (await call.read()).held
                chunk = common_pb2.LogChunk(position=held, data=bytes(256 << 20))
                await call.write(push_pb2.PushRequest(chunk=chunk))
                await call.read()

        try:
            asyncio.run(asyncio.wait_for(push(), 30))
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                self.counts[f"oversized answered {exc.code().name}"] += 1
        except (TimeoutError, OSError):
            pass
        self.counts["oversized"] += 1


def flip(rng: random.Random, path: Path, at: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    if data:
        data[at if at is not None else rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(data))


# -- the run ---------------------------------------------------------------------------------


def run(seed: int, minutes: float, root: Path) -> list[str]:
    """The failures found (none: a pass)."""
    rng = random.Random(seed)
    cluster = Cluster(root, seed)
    failures: list[str] = []
    delivered: list[tuple[str, int]] = []
    subscriber = None
    publishing = None
    faults = Faults(cluster, rng)
    try:
        for i in range(NODES):
            cluster.start(i)
        wait_for(lambda: all(serving(cluster, i) for i in range(NODES)), 60, "the cluster to start")
        publishing = Publishing(cluster.spec, root)
        subscriber = rt.Subscriber(
            cluster.spec,
            log_dir=root / "sub",
            position="start",
            on_message=lambda record, position: delivered.append((record.origin, record.id)),
        )
        subscriber.start()
        deadline = time.monotonic() + minutes * 60
        while time.monotonic() < deadline:
            faults.step()
            time.sleep(rng.uniform(1.0, 3.0))
        faults.heal_all()
        # A node may still stop on its own (a write that failed as the disk filled):
        # restarted, as its supervisor would.
        wait_for(
            lambda: faults.restart_stopped() or all(serving(cluster, i) for i in range(NODES)),
            120,
            "every node to serve",
        )
        publishing.stop_and_flush(180)
        wait_for(lambda: merged_alike(cluster), 180, "the merged logs to be alike")
        merged = [(r.origin, r.id) for r in read_log(cluster.out(0))]
        wait_for(lambda: len(delivered) >= len(merged), 120, "the subscriber to catch up")
        failures += check(merged, delivered, publishing.sent)
    except Exception as exc:  # a failure to report, with the seed
        failures.append(f"{type(exc).__name__}: {exc}")
    finally:
        if subscriber is not None:
            with contextlib.suppress(Exception):
                subscriber.unsubscribe()
        if publishing is not None:
            publishing.close()
        cluster.close()
    print(f"chaos: seed {seed}, {minutes:g} minute(s), {NODES} nodes, work folder {root}")
    for kind, count in sorted(faults.counts.items()):
        print(f"  fault {kind}: {count}")
    for kind, count in sorted(faults.skipped.items()):
        print(f"  skipped {kind}: {count}")
    if publishing is not None:
        for name, count in publishing.sent.items():
            print(f"  published by {name}: {count}")
    print(f"  delivered to the subscriber: {len(delivered)}")
    return failures


def serving(cluster: Cluster, i: int) -> bool:
    status = cluster.status(i)
    return status is not None and status.leader >= 0 and status.role in ("leader", "follower")


def merged_alike(cluster: Cluster) -> bool:
    ends = [cluster.status(i) for i in range(NODES)]
    if any(s is None for s in ends) or len({s.out_position for s in ends}) != 1:
        return False
    if len({s.applied_index for s in ends}) != 1:
        return False
    names = [sorted(p.name for p in cluster.out(i).glob("log.*")) for i in range(NODES)]
    if any(n != names[0] for n in names):
        return False
    return all(
        (cluster.out(i) / name).read_bytes() == (cluster.out(0) / name).read_bytes()
        for name in names[0]
        for i in range(1, NODES)
    )


def check(
    merged: list[tuple[str, int]], delivered: list[tuple[str, int]], sent: dict[str, int]
) -> list[str]:
    failures = []
    plain = [i for origin, i in merged if origin == "plain"]
    if plain != list(range(1, sent["plain"] + 1)):
        failures.append(
            f"the plain topic merged {len(plain)} of {sent['plain']}, not once each in order"
        )
    ticks = [i for origin, i in merged if origin == "ticker"]
    top = max(sent["ha-a"], sent["ha-b"])
    if ticks != list(range(1, top + 1)):
        failures.append(
            f"the .dedup topic merged {len(ticks)} ids for {top}, not once each in order"
        )
    if delivered[: len(merged)] != merged or len(delivered) != len(merged):
        failures.append(
            f"the subscriber delivered {len(delivered)} messages,"
            f" not the {len(merged)} merged, in order"
        )
    return failures


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:g} s for {what}")
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=None, help="default: drawn, and printed")
    parser.add_argument("--minutes", type=float, default=2.0)
    parser.add_argument("--keep", action="store_true", help="keep the work folder on a pass")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 31)
    root = Path(tempfile.mkdtemp(prefix=f"rt-chaos-{seed}-"))
    failures = run(seed, args.minutes, root)
    if failures:
        for failure in failures:
            print(f"  FAILED: {failure}")
        replay = f"make chaos SEED={seed} MINUTES={args.minutes:g}"
        print(f"chaos: seed {seed} failed; replay with: {replay}")
        print(f"  the nodes' logs are in {root}")
        return 1
    print(f"chaos: seed {seed} passed")
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
