"""Starting Ray, or joining a cluster that already runs (``--address``), with one-line errors.

Since Ray 2.52 a cluster may require a token ("token authentication"; ``ray start --head`` turns
it on whenever a token exists, and a local ``ray.init()`` writes one to ``~/.ray/auth_token``).
A driver sends its token only under ``RAY_AUTH_MODE=token``, which Ray sets by itself for
``address="auto"`` but not for an explicit ``HOST:PORT``; refused, ``ray.init`` retried for
about 30 s (no cluster at all: about 12 min) before a traceback. Here a cluster on this machine
gets the token Ray finds (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH``, ``~/.ray/auth_token``),
as with ``auto``; another machine gets one only when ``RAY_AUTH_MODE=token`` says so (Ray's
rule: a token is not sent elsewhere unasked). Joining tries once, and failures are one line.
"""
from __future__ import annotations

import logging
import os
import socket
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from .runner import SearchError

AUTH_HELP = ("set RAY_AUTH_MODE=token and give the cluster's token in RAY_AUTH_TOKEN, or in a file named by "
             "RAY_AUTH_TOKEN_PATH (default ~/.ray/auth_token); `ray get-auth-token` on the head node prints it")
# seconds (= attempts) ray.init spends joining: the port answered, so a refusal will not change
JOIN_ATTEMPTS = {"RAY_gcs_server_port_wait_time_s": "1"}
INIT_KWARGS = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING,
               "configure_logging": True}


def host_port(address: str) -> tuple[str, int] | None:
    """``HOST:PORT`` (or ``[IPv6]:PORT``) split; None for ``auto``, ``ray://...`` and other forms Ray resolves."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or "/" in address or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def token_source(env: Mapping[str, str]) -> str | None:
    """Where Ray would read this driver's token from, in Ray's order; None when it has none."""
    if env.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    if env.get("RAY_AUTH_TOKEN_PATH"):
        return f"RAY_AUTH_TOKEN_PATH={env['RAY_AUTH_TOKEN_PATH']}"
    default = Path.home() / ".ray" / "auth_token"
    return str(default) if default.is_file() else None


def on_this_machine(host: str) -> bool:
    """Whether ``host`` names this machine: one of its addresses can be bound here."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except OSError:
        return False
    for family, _, _, _, sockaddr in infos:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((sockaddr[0], 0))
                return True
            except OSError:
                continue
    return False


def sends_token(host: str, env: Mapping[str, str]) -> bool:
    """Token mode for this driver: as ``RAY_AUTH_MODE`` says, else when a token is at hand and the
    cluster is on this machine."""
    if "RAY_AUTH_MODE" in env:
        return env["RAY_AUTH_MODE"].lower() == "token"
    return token_source(env) is not None and on_this_machine(host)


def check_listening(host: str, port: int, timeout_s: float = 5.0) -> None:
    """Fail at once when nothing answers at the address (ray.init would retry for minutes)."""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as exc:
        raise SearchError(f"--address {host}:{port}: no Ray cluster answers there ({exc.strerror or exc}); start "
                          f"one with `ray start --head --port={port}`, or leave --address out to run "
                          f"on this machine") from None


def join_error(address: str, exc: BaseException, env: Mapping[str, str]) -> SearchError:
    """One line for a failed join: what to set when the cluster refused the token, else Ray's last word."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    if "InvalidAuthToken" in text or "authentication token" in text.lower():
        source = token_source(env) if env.get("RAY_AUTH_MODE", "").lower() == "token" else None
        sent = f"refused the token from {source}" if source else "got no token from this driver"
        return SearchError(f"--address {address}: the Ray cluster requires token authentication and {sent}: "
                           f"{AUTH_HELP}")
    return SearchError(f"--address {address}: could not join the Ray cluster: {type(exc).__name__}: {exc}")


@contextmanager
def environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables (those not set already) for the block only."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _set_token_mode() -> None:
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from ray._raylet import Config
    except ImportError:  # a Ray without token authentication
        return
    Config.initialize("")  # Ray reads its config, the auth mode with it, once at import


def init_ray(address: str | None) -> None:
    """``ray.init``: a new local cluster when ``address`` is None, else join the one there."""
    import ray
    from ray.exceptions import RayError  # AuthenticationError among them

    if address is None:
        ray.init(**INIT_KWARGS)
        return
    parsed = host_port(address)
    if parsed is not None:
        check_listening(*parsed)
        if "RAY_AUTH_MODE" not in os.environ and sends_token(parsed[0], os.environ):
            _set_token_mode()
    try:
        with environment(JOIN_ATTEMPTS):
            ray.init(address=address, **INIT_KWARGS)
    except (ConnectionError, RuntimeError, ValueError, RayError) as exc:
        raise join_error(address, exc, os.environ) from None
