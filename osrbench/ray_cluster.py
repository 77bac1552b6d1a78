"""Where a sweep's Ray runs: a local instance that listens on the loopback only, or a cluster joined
at the address the user gave, whose refusals (token authentication, nothing listening) are one line.

- :func:`start_local` (``osrbench sweep --executor ray`` without ``--address``): a Ray instance on
  this machine whose node IP is 127.0.0.1 and whose every server (GCS, raylet, workers, agents)
  listens on the loopback only, no dashboard. Ray itself swaps a node IP of 127.0.0.1 for the address
  of a network interface (``ray._private.services.resolve_ip_for_localhost``), and its gRPC servers
  then listen on every interface: on a shared login node the ports of a private sweep would be open
  to the network. Only with multi-node clusters switched off (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``,
  the mode Ray uses on Windows and macOS) does it keep the loopback; a local instance is one node, so
  nothing is lost. The node IP is checked after the start: an instance that is not on the loopback
  is stopped and refused.
- :func:`connect` (``--address``): ``ray.init(address=...)``; a loopback address (``127.0.0.1:PORT``,
  ``localhost:PORT``) is joined on the loopback as given, not through the interface address Ray would
  substitute. Failures name the address the user gave and, when Ray's token authentication refused
  this process, the token and where Ray reads it from (docs/SWEEP.md, "Token authentication").
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from typing import Any, Iterator

from osrbench.errors import UserError

LOOPBACK = "127.0.0.1"
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
#: Ray's switch for multi-node clusters (ray._private.ray_constants.ENABLE_RAY_CLUSTER); off, a node
#: keeps 127.0.0.1 as its IP and its servers listen on it alone.
CLUSTER_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: Where Ray (2.52 and later) reads the cluster's token, in this order (ray/_private/authentication,
#: ray.exceptions.AuthenticationError).
TOKEN_SOURCES = "RAY_AUTH_TOKEN, the file named by RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token"
PROBE_TIMEOUT_S = 5.0  # a GCS that does not accept a TCP connection in this time is not there


class RayJoinError(UserError):
    """A Ray instance that cannot be started or a cluster that cannot be joined; one line."""


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Ray in this process, and the processes it starts meanwhile, keep 127.0.0.1 as the node IP."""
    from ray._private import ray_constants

    before_env, before = os.environ.get(CLUSTER_SWITCH), getattr(ray_constants, "ENABLE_RAY_CLUSTER", None)
    os.environ[CLUSTER_SWITCH] = "0"  # for the GCS, raylet and agents this process starts
    ray_constants.ENABLE_RAY_CLUSTER = False  # read at import: set it for this process too
    try:
        yield
    finally:
        if before_env is None:
            os.environ.pop(CLUSTER_SWITCH, None)
        else:
            os.environ[CLUSTER_SWITCH] = before_env
        if before is not None:
            ray_constants.ENABLE_RAY_CLUSTER = before


def node_ip(ray: Any) -> str:
    """The node IP of this process's Ray node."""
    return str(ray.util.get_node_ip_address())


def start_local(ray: Any, **kwargs: Any) -> None:
    """Start a Ray instance on this machine that listens on the loopback only (``kwargs``: ``ray.init``'s)."""
    try:
        with loopback_only():
            ray.init(_node_ip_address=LOOPBACK, include_dashboard=False, **kwargs)
    except (ConnectionError, RuntimeError, ValueError, ImportError, OSError) as exc:
        raise RayJoinError(f"cannot start Ray on this machine: {_first_line(exc)}") from None
    ip = node_ip(ray)
    if ip != LOOPBACK:  # a Ray that no longer honours the switch: never leave its ports open
        ray.shutdown()
        raise RayJoinError(f"the local Ray instance took node IP {ip}, not {LOOPBACK}, so its ports would be open "
                           "to the network; start a cluster with `ray start` and pass --address")


def host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of a plain ``HOST:PORT`` address (IPv6 in brackets), else ``None`` (auto, ray://...)."""
    if "://" in address or address == "auto":
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def connect(ray: Any, address: str) -> None:
    """Join the Ray cluster at ``address`` (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``) or raise one line."""
    hp = host_port(address)
    if hp is not None:  # Ray waits a minute and more on an address where nothing listens
        try:
            socket.create_connection(hp, timeout=PROBE_TIMEOUT_S).close()
        except OSError as exc:
            raise RayJoinError(f"cannot reach the Ray cluster at {address}: nothing accepts connections there "
                               f"({exc.strerror or type(exc).__name__}); is its head node started "
                               "(`ray start --head`) and is this its GCS port?") from None
    local = hp is not None and hp[0] in LOCAL_HOSTS
    try:
        with loopback_only() if local else contextlib.nullcontext():  # join at the address given
            ray.init(address=address)
    except Exception as exc:  # noqa: BLE001 -- ray.init raises many kinds; each becomes one line
        raise RayJoinError(join_error(ray, exc, address)) from None


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _auth_error(ray: Any, exc: BaseException | None) -> BaseException | None:
    """The token-authentication error behind ``exc`` (Ray wraps it in a ConnectionError), if any."""
    kind = getattr(ray.exceptions, "AuthenticationError", None)
    chain: list[BaseException] = []
    while exc is not None and all(exc is not e for e in chain):
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    typed = [e for e in chain if kind is not None and isinstance(e, kind)]
    return (typed or [e for e in chain if "InvalidAuthToken" in str(e)] or [None])[0]


def join_error(ray: Any, exc: BaseException, address: str) -> str:
    """One line for a failed ``ray.init(address=address)``: the address the user gave (Ray's own message
    names the interface address it resolved), and the token when that is what failed."""
    auth = _auth_error(ray, exc)
    if auth is not None:
        # Ray's reason, also when it is quoted inside a traceback's text (RuntimeError of a GCS connection)
        found = re.search(r"InvalidAuthToken: ([^.\n]+)", str(getattr(auth, "message", None) or auth))
        why = found.group(1) if found else _first_line(auth).split(". ")[0].removeprefix("RPC error: ")
        mode = os.environ.get("RAY_AUTH_MODE")
        if mode is None or mode.lower() != "token":
            fix = ("RAY_AUTH_MODE is not 'token' here, so this process sent no token: export RAY_AUTH_MODE=token "
                   f"and give it the cluster's token ({TOKEN_SOURCES})")
        else:
            fix = (f"this process has no token ({TOKEN_SOURCES}) or not the cluster's: "
                   "use the head node's (`ray get-auth-token` there)")
        return f"cannot join the Ray cluster at {address}: its token authentication failed ({why}): {fix}"
    cause = exc.__cause__ if exc.__cause__ is not None and "Failed to connect to Ray cluster" in str(exc) else exc
    return f"cannot join the Ray cluster at {address}: {_first_line(cause).split('. Last connection error')[0]}"


class Tracker:
    """A Ray actor the tasks tell when they start (worker pid and host), drained by the driver."""

    def __init__(self) -> None:
        self.events: list[tuple[int, int, str]] = []

    def started(self, index: int, pid: int, host: str) -> None:
        self.events.append((index, pid, host))

    def drain(self) -> list[tuple[int, int, str]]:
        out, self.events = self.events, []
        return out


def start_tracker(ray: Any) -> Any:
    """A :class:`Tracker` on the driver's own node: on another node it would die with that node, and
    the sweep with it, when the node is lost (a lost worker node only costs the runs it ran)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    return ray.remote(num_cpus=0)(Tracker).options(scheduling_strategy=here).remote()
