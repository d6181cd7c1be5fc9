"""``pedsam serve``: a web page that segments the browser's camera live, over WebRTC.

The server is aiohttp. ``GET /`` is the page (``stream/web/``, shipped in the package); the
page asks ``GET /config`` for the ICE servers, sends its camera with an SDP offer to
``POST /offer`` and gets back a :class:`~pedsam.stream.web.peer.PeerSession`'s answer. ``GET /peers``
lists every open call's objects and figures. All calls share one
:class:`~pedsam.stream.core.session.EdgeSession`; each has its own objects, frames and stats.

Who may use it: off loopback every call needs the access token (``--token``, or one generated
and printed at start inside the page's URL), and ``GET /peers``, which shows every call's state
and what each worker has seen of it, needs the operator token (``--operator-token``, or one
generated and printed); each client address may hold ``--max-calls-per-client`` calls at once.
On loopback the tokens are not asked for unless given. A token travels as ``?token=`` in the
URL (the page carries it on) or as ``Authorization: Bearer``; tokens are compared in constant
time and never logged.

No STUN or TURN server is used unless given with ``--ice-server`` (repeatable), so by
default the browser and the server must reach each other directly (loopback or a LAN).
Browsers hand out the camera only to secure pages: ``http://127.0.0.1`` and
``http://localhost`` count as secure; from another machine serve HTTPS (``--cert``/``--key``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import importlib.resources
import itertools
import json
import logging
import os
import secrets
import ssl
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from pedsam.stream.core.session import EdgeSession
from pedsam.stream.errors import ConfigError
from pedsam.stream.fleet.transport import is_loopback_address
from pedsam.stream.runs.keyframes import KeyframePolicy
from pedsam.stream.web.peer import PeerSession

__all__ = ["LiveServer", "ServeConfig"]

log = logging.getLogger(__name__)

MAX_OFFER_BYTES = 256 * 1024


@dataclass(frozen=True, kw_only=True, slots=True)
class ServeConfig:
    """Where to listen and how each call runs."""

    host: str = "127.0.0.1"
    port: int = 8080
    in_flight: int = 2
    keyframes: KeyframePolicy = KeyframePolicy(kind="adaptive")
    ice_servers: tuple[str, ...] = ()
    max_peers: int = 4
    max_calls_per_client: int = 2
    certfile: str | None = None
    keyfile: str | None = None
    token: str | None = None  # for a call: the page and POST /offer (None: none asked for)
    operator_token: str | None = None  # for GET /peers (None: none asked for)
    # Write every call's frames, losslessly, to DIR/call-PEER.mkv: the truth for an audit of what
    # the workers kept (pedsam attack-capture). It puts the callers' video on this disk.
    record_calls: str | None = None

    def __post_init__(self) -> None:
        if self.in_flight < 1:
            raise ConfigError("--in-flight must be at least 1")
        if self.max_peers < 1:
            raise ConfigError("--max-peers must be at least 1")
        if self.max_calls_per_client < 1:
            raise ConfigError("--max-calls-per-client must be at least 1")
        for name, token in (("--token", self.token), ("--operator-token", self.operator_token)):
            if token is not None and (len(token) < 16 or not token.isprintable() or " " in token):
                raise ConfigError(f"{name} must be at least 16 printable characters without spaces")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port {self.port} is not a TCP port")
        if (self.certfile is None) != (self.keyfile is None):
            raise ConfigError("give --cert and --key together")
        for url in self.ice_servers:
            if not url.startswith(("stun:", "stuns:", "turn:", "turns:")):
                raise ConfigError(f"ICE server {url!r} must be a stun: or turn: URL")

    def guarded(self) -> ServeConfig:
        """This config with tokens generated where it listens beyond loopback and none was given."""
        if is_loopback_address(f"{self.host}:0"):
            return self
        return dataclasses.replace(
            self,
            token=self.token or secrets.token_urlsafe(18),
            operator_token=self.operator_token or secrets.token_urlsafe(18),
        )


def _static(name: str) -> str:
    return (importlib.resources.files("pedsam.stream.web") / name).read_text(encoding="utf-8")


class LiveServer:
    """The HTTP side: page, signalling, and the open calls."""

    def __init__(self, session: EdgeSession, config: ServeConfig) -> None:
        self.session = session
        self.config = config
        self.peers: dict[str, PeerSession] = {}
        self._clients: dict[str, str] = {}  # peer id -> the client address that opened it
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self.app = web.Application(client_max_size=MAX_OFFER_BYTES, middlewares=[self._guard])
        self.app.add_routes(
            [
                web.get("/", self._page),
                web.get("/app.js", self._script),
                web.get("/config", self._config),
                web.get("/peers", self._peers),
                web.post("/offer", self._offer),
            ]
        )

    async def start(self) -> str:
        """Listen; returns the page's URL (with the real port when ``port`` is 0)."""
        if self.config.record_calls is not None:
            try:
                os.makedirs(self.config.record_calls, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"--record-calls {self.config.record_calls!r}: {exc.strerror}") from None
        context = None
        if self.config.certfile and self.config.keyfile:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            try:
                context.load_cert_chain(self.config.certfile, self.config.keyfile)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot load --cert/--key: {exc}") from None
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, ssl_context=context)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ConfigError(f"cannot listen on {self.config.host}:{self.config.port}: {exc.strerror}") from None
        host, port = self._runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if context else 'http'}://{shown}:{port}/"

    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Calls need the access token, ``/peers`` the operator token (when they are set)."""
        wanted = self.config.operator_token if request.path == "/peers" else self.config.token
        if wanted is not None and request.path != "/app.js":
            given = request.query.get("token") or request.headers.get("Authorization", "").removeprefix("Bearer ")
            if not hmac.compare_digest(given.encode(), wanted.encode()):
                who = "the operator token" if request.path == "/peers" else "the access token printed at start"
                return _error(401 if request.path != "/peers" else 403, f"this needs {who} (?token=...)")
        response: web.StreamResponse = await handler(request)
        return response

    async def stop(self) -> None:
        """Close every call, then stop listening."""
        await asyncio.gather(*(peer.close() for peer in list(self.peers.values())))
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _page(self, request: web.Request) -> web.Response:
        return web.Response(text=_static("index.html"), content_type="text/html")

    async def _script(self, request: web.Request) -> web.Response:
        return web.Response(text=_static("app.js"), content_type="application/javascript")

    async def _config(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "iceServers": [{"urls": url} for url in self.config.ice_servers],
                "model": self.session.config.model.describe(),
                "notice": self.session.banner,
                "workers": len(self.session.executor_names),
            }
        )

    async def _peers(self, request: web.Request) -> web.Response:
        """Every open call: its objects and figures, and what each server has seen of it."""
        return web.json_response(
            [{**peer.state(), "exposure": peer.scheduler.summary()} for peer in self.peers.values()]
        )

    async def _offer(self, request: web.Request) -> web.Response:
        try:
            body: Any = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the offer must be JSON: {\"sdp\": ..., \"type\": \"offer\"}")
        if not isinstance(body, dict) or body.get("type") != "offer" or not isinstance(body.get("sdp"), str):
            return _error(400, "the offer must be JSON: {\"sdp\": ..., \"type\": \"offer\"}")
        if len(self.peers) >= self.config.max_peers:
            return _error(503, f"this server takes {self.config.max_peers} calls at once; try again later")
        client = request.remote or "unknown"
        if sum(1 for c in self._clients.values() if c == client) >= self.config.max_calls_per_client:
            return _error(429, f"{self.config.max_calls_per_client} calls from one client at once at most")
        peer_id = f"p{next(self._ids)}"
        self._clients[peer_id] = client
        peer = PeerSession(
            self.session,
            peer_id=peer_id,
            ice_servers=self.config.ice_servers,
            in_flight=self.config.in_flight,
            keyframes=self.config.keyframes,
            banner=self.session.banner,
            on_closed=self._forget,
            record=None if self.config.record_calls is None else os.path.join(self.config.record_calls,
                                                                               f"call-{peer_id}.mkv"),
        )
        self.peers[peer_id] = peer
        try:
            answer = await peer.answer(body["sdp"], "offer")
        except (ValueError, AttributeError) as exc:  # aiortc's complaints about a bad SDP
            await peer.close()
            self._forget(peer)
            return _error(400, f"cannot accept this offer: {exc}")
        log.info("peer %s connected (%d open)", peer_id, len(self.peers))
        return web.json_response({"sdp": answer.sdp, "type": answer.type, "peer": peer_id})


    def _forget(self, peer: PeerSession) -> None:
        self.peers.pop(peer.peer_id, None)
        self._clients.pop(peer.peer_id, None)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
