"""Real network boundaries on one machine, for the partition tests (tests/e2e/test_partitions.py, issue 27).

`Network` is a private layer-2 network: a bridge in a namespace of its own (the "switch"), one network namespace
per node (PostgreSQL, each replica) on a veth pair to it, and one veth from the test's own namespace, so that the
test reaches every node directly (no routing, no forwarding, nothing changed in the host's own tables but that one
link). Addresses are a /24 of 10.254.0.0/16 that nothing on the machine uses. Faults are iptables rules inside a
node's namespace: a partition (DROP to and from a peer), packet loss (`-m statistic --mode random`). This kernel has
no `netem`, so latency comes from `DelayProxy`, a TCP proxy in the test that holds each chunk 20 ms ± 5 ms each way.

Every namespace and link carries the test process's pid in its name; `close()` removes them (also after a failure:
the fixture calls it in a finally), and a later run removes what a killed run left (its pid is gone). Needs root
(CI is root).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, ServerProcess
from tests.forkserver import forks_for
from tests.pg import PgCluster

_PREFIX = "ms"  # names are ms<pid>-<node> (namespaces) and ms<pid><n> (links): at most 15 characters


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if check and r.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")
    return r


def require_root() -> None:
    if os.geteuid() != 0:
        pytest.fail("network namespaces need root (ip netns, iptables): run these tests as root, as CI does")


def sweep_stale() -> None:
    """Remove the namespaces of earlier runs whose process is gone (a killed pytest cannot clean up)."""
    for line in ip("netns", "list").stdout.splitlines():
        m = re.match(rf"^({_PREFIX}(\d+)-\S+)", line)
        if m and not Path(f"/proc/{m.group(2)}").exists():
            ip("netns", "del", m.group(1), check=False)


def _free_subnet() -> str:
    """A /24 of 10.254.0.0/16 that no address or route of this machine overlaps, as `10.254.N.`."""
    used = []
    for line in ip("-4", "route", "show", "table", "all").stdout.splitlines() + ip("-4", "addr").stdout.splitlines():
        for token in re.findall(r"\d+\.\d+\.\d+\.\d+(?:/\d+)?", line):
            with contextlib.suppress(ValueError):
                used.append(ipaddress.ip_network(token, strict=False))
    for n in [*range(os.getpid() % 200 + 20, 250), *range(20, 250)]:
        net = ipaddress.ip_network(f"10.254.{n}.0/24")
        if not any(net.overlaps(u) for u in used if u.prefixlen > 0):
            return f"10.254.{n}."
    raise RuntimeError("no free /24 in 10.254.0.0/16 for the test network")


class Node:
    """One network namespace on the test network."""

    def __init__(self, name: str, addr: str) -> None:
        self.name, self.addr = name, addr
        self.path = Path("/run/netns") / name

    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(["ip", "netns", "exec", self.name, *cmd], capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"{self.name}: {' '.join(cmd)}: {r.stderr.strip()}")
        return r

    def iptables(self, *rule: str) -> None:
        self.run("iptables", "-w", *rule)

    def partition(self, peer: str) -> None:
        """Drop every packet to and from `peer` (an established connection hangs, as on a real partition)."""
        self.iptables("-A", "OUTPUT", "-d", peer, "-j", "DROP")
        self.iptables("-A", "INPUT", "-s", peer, "-j", "DROP")

    def lose(self, probability: float, peer: str) -> None:
        """Drop that share of the packets to and from `peer`, at random."""
        for chain, flag in (("OUTPUT", "-d"), ("INPUT", "-s")):
            rule = [chain, flag, peer, "-m", "statistic", "--mode", "random", "--probability", str(probability)]
            self.iptables("-A", *rule, "-j", "DROP")

    def heal(self) -> None:
        self.iptables("-F", "INPUT")
        self.iptables("-F", "OUTPUT")

    def dropped(self) -> int:
        """Packets the rules of this namespace dropped so far (a fault that dropped nothing tested nothing)."""
        out = self.run("iptables", "-w", "-L", "-v", "-n", "-x").stdout
        return sum(int(m.group(1)) for m in re.finditer(r"^\s*(\d+)\s+\d+\s+DROP", out, re.M))


class Network:
    def __init__(self) -> None:
        require_root()
        sweep_stale()
        self.tag = f"{_PREFIX}{os.getpid()}"
        self.subnet = _free_subnet()
        self.switch = f"{self.tag}-sw"
        self.root_link = f"{self.tag}r"
        self.nodes: list[Node] = []
        self._made: list[str] = []
        try:
            ip("netns", "add", self.switch)
            self._made.append(self.switch)
            ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
            ip("-n", self.switch, "link", "set", "br0", "up")
            ip("link", "add", self.root_link, "type", "veth", "peer", "name", f"{self.root_link}s")
            ip("link", "set", f"{self.root_link}s", "netns", self.switch)
            ip("-n", self.switch, "link", "set", f"{self.root_link}s", "master", "br0", "up")
            self.gateway = f"{self.subnet}1"  # the test's own address on it
            ip("addr", "add", f"{self.gateway}/24", "dev", self.root_link)
            ip("link", "set", self.root_link, "up")
        except BaseException:
            self.close()
            raise

    def add(self, name: str) -> Node:
        i = len(self.nodes) + 1
        node = Node(f"{self.tag}-{name}", f"{self.subnet}{10 + i}")
        link = f"{self.tag}{i}"
        ip("netns", "add", node.name)
        self._made.append(node.name)
        ip("link", "add", link, "type", "veth", "peer", "name", f"{link}s")
        ip("link", "set", f"{link}s", "netns", self.switch)
        ip("-n", self.switch, "link", "set", f"{link}s", "master", "br0", "up")
        ip("link", "set", link, "netns", node.name)
        ip("-n", node.name, "link", "set", link, "name", "eth0")
        ip("-n", node.name, "addr", "add", f"{node.addr}/24", "dev", "eth0")
        ip("-n", node.name, "link", "set", "eth0", "up")
        ip("-n", node.name, "link", "set", "lo", "up")
        self.nodes.append(node)
        return node

    def close(self) -> None:
        """Remove every namespace (their links go with them) and the test's own link. Processes inside must have
        been stopped first (a namespace lives on while a process is in it)."""
        for name in reversed(self._made):
            ip("netns", "del", name, check=False)
        ip("link", "del", self.root_link, check=False)
        self._made.clear()


class NsPostgres(PgCluster):
    """tests/pg.py's throwaway cluster, run inside `node`'s network namespace, listening on its address, trusting
    the test network (it is reachable from nothing else)."""

    def __init__(self, node: Node, subnet: str) -> None:
        self.node, self.subnet = node, subnet
        super().__init__()

    def _namespace(self) -> Any:
        return None  # no private tmpfs: these tests do not fill disks

    def _as_owner(self, cmd: list[str]) -> subprocess.CompletedProcess[str]:
        user = ["runuser", "-u", "postgres", "--"] if self.as_root else []
        prefix = ["ip", "netns", "exec", self.node.name]
        return subprocess.run([*prefix, *user, *cmd], check=True, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        hba = self.data / "pg_hba.conf"
        line = f"host all all {self.subnet}0/24 trust\n"
        if line not in hba.read_text():
            self._as_owner(["sh", "-c", f"echo '{line.strip()}' >> {hba}"])
        listen = f"-c listen_addresses={self.node.addr}"
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log), "-o", listen)

    def url(self, db: str = "postgres", *, user: str = "postgres", password: str | None = None) -> str:
        auth = f"{user}:{password}" if password is not None else user
        return f"postgresql://{auth}@{self.node.addr}:{self.port}/{db}"


class NsServer(ServerProcess):
    """`morphserve serve` inside `node`'s network namespace (forked from the zygote, which enters it with setns, or
    a real interpreter under `ip netns exec`), listening on the node's address."""

    def __init__(self, node: Node, args: list[str], log: Path, port: int = 8000) -> None:
        self.node, self.port = node, port
        self.url = f"http://{node.addr}:{port}"
        self.log_path = log
        self._log = subprocess.DEVNULL
        argv = ["serve", "--host", "0.0.0.0", "--port", str(port), *args]
        env = dict(os.environ)
        forks = forks_for(env)
        if forks is not None:
            self.proc = forks.spawn(argv, env, ROOT, log, net_ns=node.path)
            return
        self._log = open(log, "ab")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", node.name, sys.executable, "-m", "morphserve", *argv],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )


class DelayProxy:
    """A TCP proxy (in the test's namespace, on the test network) that holds every chunk `delay_s` ± `jitter_s`
    in each direction, order kept: what a WAN link between the replicas and their database adds."""

    def __init__(self, listen: str, target: tuple[str, int], delay_s: float = 0.020, jitter_s: float = 0.005) -> None:
        self.target, self.delay_s, self.jitter_s = target, delay_s, jitter_s
        self._rng = random.Random(27)
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._listen = listen
        self.port = 0
        self.chunks = 0
        self._thread = threading.Thread(target=self._run, name="delay-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the delay proxy did not start")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, self._listen, 0))
        self.port = server.sockets[0].getsockname()[1]
        self._server = server
        self._ready.set()
        self._loop.run_forever()
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer), return_exceptions=True)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Read chunks as they come; each is written once its delay has passed, never before the one before it."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    break
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError):
                writer.close()

        sender = asyncio.ensure_future(send())
        last = 0.0
        try:
            while True:
                data = await reader.read(65536)
                last = max(last, time.monotonic() + self.delay_s + self._rng.uniform(-self.jitter_s, self.jitter_s))
                queue.put_nowait((last, data))
                self.chunks += 1
                if not data:
                    break
        except OSError:
            queue.put_nowait((0.0, b""))
        await sender

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
