"""A connection to a port inside a container whose address this host does not reach (a workspace on a
Swarm node, on its overlay network): a small command run in the container through its node's engine
connects to the port on 127.0.0.1, and its standard input and output carry the connection's bytes.

The command is a shell script that uses what the image has: nc, socat, python3 or bash (common dev images
have one; busybox has nc). It first looks in /proc/net/tcp whether anything listens on the port, so that
"nothing listens" is told apart from a connection the server closed at once, and says on stderr when it is
connected. The daemon's side is one end of a socket pair: whatever connects to a port (the tunnel, the
preview's HTTP and WebSocket clients, SSH forwarding) gets a socket, as for a container it reaches by its
address. Two threads move the bytes, one read (at most 64 KiB) at a time, each waiting for the other side
to take what it has (nothing piles up in the daemon). The end of the daemon's input reaches the command as
the end of its standard input; the relay ends when the command has ended and the daemon's side has hung up.
When the daemon's side closes its socket first, the command sees the end of its input (so does the
server, which then closes its side and the command ends) and, if it still runs after HANG_UP_GRACE, it is
ended with its processes (where the engine can: on a node whose processes this host does not see, it
goes on until the server closes its side).
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time

from vmhost.core.engines import Engine, Process
from vmhost.errors import VmhostError

log = logging.getLogger(__name__)

CHUNK = 65536
CONNECTED = b"vmhost-relay: connected"
MAX_ERROR_BYTES = 4096  # kept of what the command says before it is connected
HANG_UP_GRACE = 2.0  # seconds the command has to end by itself once the daemon's side has hung up

RELAY_SCRIPT = r"""
port=$1
if command -v grep >/dev/null 2>&1 && [ -r /proc/net/tcp ]; then
  grep -qs "$(printf ':%04X ' "$port")[0-9A-F]*:[0-9A-F]* 0A " /proc/net/tcp /proc/net/tcp6 ||
    { echo "nothing listens on port $port in the workspace" >&2; exit 111; }
fi
if command -v nc >/dev/null 2>&1; then echo "$2" >&2; exec nc 127.0.0.1 "$port"; fi
if command -v socat >/dev/null 2>&1; then echo "$2" >&2; exec socat -t 86400 - "TCP:127.0.0.1:$port"; fi
if command -v python3 >/dev/null 2>&1; then exec python3 -c "$3" "$port" "$2"; fi
if command -v bash >/dev/null 2>&1; then
  exec bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 111; echo "$2" >&2; cat <&3 & cat >&3; wait' - "$port" "$2"
fi
echo "the workspace's image has none of nc, socat, python3 or bash to reach its ports with" >&2
exit 127
"""

PYTHON_RELAY = r"""
import os, socket, sys, threading
connection = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sys.stderr.write(sys.argv[2] + "\n")
sys.stderr.flush()
def send():
    while data := os.read(0, 65536):
        connection.sendall(data)
    connection.shutdown(socket.SHUT_WR)
threading.Thread(target=send, daemon=True).start()
while data := connection.recv(65536):
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
"""


def relay_argv(port: int) -> list[str]:
    return ["sh", "-c", RELAY_SCRIPT, "vmhost-relay", str(port), CONNECTED.decode(), PYTHON_RELAY]


def open_relay(engine: Engine, container_id: str, port: int, timeout: float) -> socket.socket:
    """A socket connected to `port` on 127.0.0.1 in the running container, through a command run in it.
    Blocks until the command has connected: ConnectionRefusedError when nothing listens there (or the
    image has no program to connect with), TimeoutError after `timeout` seconds, ConnectionError when
    the command cannot be run."""
    try:
        process = engine.open_process(container_id, relay_argv(port))
    except VmhostError as exc:
        raise ConnectionError(exc.detail) from exc
    ours, theirs = socket.socketpair()
    relay = Relay(process, theirs)
    threading.Thread(target=relay.from_workspace, name="vmhost-port-relay-out", daemon=True).start()
    if not relay.connected.wait(timeout):
        relay.close()
        ours.close()
        raise TimeoutError(f"no connection to port {port} within {timeout:g} s")
    if relay.refused is not None:
        relay.close()
        ours.close()
        raise ConnectionRefusedError(relay.refused)
    threading.Thread(target=relay.to_workspace, name="vmhost-port-relay-in", daemon=True).start()
    return ours


class Relay:
    """The command's output to the daemon's socket (`from_workspace`) and the socket's bytes to the
    command's input (`to_workspace`), each in a thread of its own. `connected` is set once the command
    has said it is connected, or has ended (then `refused` says why)."""

    def __init__(self, process: Process, theirs: socket.socket) -> None:
        self.process = process
        self.theirs = theirs
        self.connected = threading.Event()
        self.refused: str | None = None
        self._lock = threading.Lock()
        self._running = 2  # the two threads
        self._closed = False

    def from_workspace(self) -> None:
        try:
            if self._handshake():
                while (output := self.process.read()) is not None:
                    stream, data = output
                    if stream == "stdout":
                        self.theirs.sendall(data)  # waits while the daemon's side takes nothing
                self.theirs.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the daemon's side closed its socket
        finally:
            self._ended(hung_up=False)

    def to_workspace(self) -> None:
        hung_up = False
        try:
            while data := self.theirs.recv(CHUNK):
                self.process.write(data)
            self.process.close_stdin()
            hung_up = self._hang_up_or_end()
        except (OSError, VmhostError):
            hung_up = True
            self.process.close_stdin()
        finally:
            if hung_up:
                self._wait_for_end(HANG_UP_GRACE)
            self._ended(hung_up)

    def close(self) -> None:
        """End the command (with its processes, where the engine can) and close the daemon's side."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.process.close()
        except VmhostError as exc:
            log.info("a port relay still runs after its connection closed: %s", exc.detail)
        try:
            self.theirs.shutdown(socket.SHUT_RDWR)  # wakes a thread reading it
        except OSError:
            pass
        self.theirs.close()

    def _handshake(self) -> bool:
        """Read what the command says on stderr until it is connected (True) or has ended (False)."""
        said = bytearray()
        try:
            while (output := self.process.read()) is not None:
                stream, data = output
                said.extend(data)
                del said[:-MAX_ERROR_BYTES]  # the end of what it said is enough
                if stream == "stderr" and CONNECTED + b"\n" in said:
                    return True
            lines = said.decode(errors="replace").strip().splitlines()
            self.refused = lines[-1] if lines else "the port relay ended before it connected"
            return False
        finally:
            if not self.connected.is_set() and self.refused is None and CONNECTED + b"\n" not in said:
                self.refused = "the port relay failed before it connected"
            self.connected.set()

    def _hang_up_or_end(self) -> bool:
        """After the end of the daemon's input: wait until its side closes its socket altogether (True:
        then nobody reads the command's output) or the command's output ends (False)."""
        poller = select.poll()
        poller.register(self.theirs, select.POLLHUP)
        while not self._output_ended():
            if poller.poll(500):
                return True
        return False

    def _output_ended(self) -> bool:
        with self._lock:
            return self._running < 2 or self._closed

    def _wait_for_end(self, grace: float) -> None:
        deadline = time.monotonic() + grace
        while not self._output_ended() and time.monotonic() < deadline:
            time.sleep(0.05)

    def _ended(self, hung_up: bool) -> None:
        with self._lock:
            self._running -= 1
            last = self._running == 0
        if last or hung_up:
            self.close()
