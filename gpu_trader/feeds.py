"""Vendor market-data feeds: Alpaca v2, Polygon and Binance frames decoded into ticks, quotes and
bars, and :class:`WebSocketFeed`, a reconnecting WebSocket client with a bounded buffer.

Decoding
--------
:func:`decode` ``(frame, format=...) -> (records, rejections)`` decodes one frame with msgspec
straight into the records of :mod:`gpu_trader.marketdata`: trades become
:class:`~gpu_trader.marketdata.Tick`, quotes :class:`~gpu_trader.marketdata.Quote`, the feeds'
bars :class:`FeedBar`, and the vendors' control messages (connected, authenticated,
subscription confirmations, errors) :class:`FeedControl`. The wire formats, field names and
units are listed in :mod:`gpu_trader._internal.feed_formats`: Alpaca times are RFC 3339 text
(converted to int ns exactly: integer arithmetic, ``Z`` or ``+hh:mm`` offsets, up to 9
fractional digits), Polygon and Binance times are int milliseconds, Binance prices and
quantities decimal strings (parsed to the nearest float). Field rules are those of
:mod:`gpu_trader.marketdata` (symbol 1 to 64 characters, prices finite and > 0, sizes finite
and >= 0, ``ts`` in ``[0, 2**63)`` ns). Fields a record has no place for (exchange,
conditions, trade id, tape) are ignored.

Rejections: one bad message rejects only itself, as a
:class:`~gpu_trader.marketdata.MessageRejection` ``(index, reason, message)`` with its position
in the frame; a frame that is not JSON, not of the format's shape (an array for Alpaca and
Polygon, an object for Binance), not bytes/str or longer than :data:`MAX_FRAME_BYTES` is
rejected whole, with index -1. Reasons: ``"malformed_json"``, ``"too_large"``,
``"missing_field"``, ``"invalid_field"``, ``"unknown_symbol"`` (with ``symbols=``) and
``"unsupported_message"`` (a message type the format does not map, e.g. Alpaca's LULD). No
frame makes :func:`decode` raise; a bad ``format`` or ``symbols`` argument is a
``ValueError``/``TypeError``. Out-of-order messages are passed on in arrival order (vendors
send trades of several venues slightly out of order); :class:`~gpu_trader.marketdata.TickIngestor`
and :class:`~gpu_trader.marketdata.BarAggregator` apply the reject policy downstream.

Measured (``gpu-trader bench --suite feeds``, 2-core shared VM under load, medians of the
harness's interleaved rounds, three runs alike): decode per message Alpaca 0.84 us (a frame of
100 trades; 3.1x faster than ``orjson.loads`` plus the same checks and conversion by hand), Polygon
0.40 us (2.1x), Binance 0.77 us per one-trade frame (1.7x); 22-23k one-trade frames/s through
:class:`WebSocketFeed` from a local server on the same core (a bare ``websockets`` client
receiving the same frames without decoding takes ~0.7x our time). A frame is one msgspec pass;
an Alpaca time costs a dictionary look-up of its whole second plus one ``int`` of its fraction.
"""
from __future__ import annotations

import asyncio
import collections
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import msgspec

from ._internal import feed_formats
from ._internal.feed_formats import FORMATS, MAX_FRAME_BYTES
from ._internal.validation import check_count, check_flag, check_float
from .marketdata import MessageRejection, Quote, Tick, _check_symbols
from .profiling import annotate, annotate_methods

__all__ = ["decode", "FeedBar", "FeedControl", "FeedDecoder", "FeedStats", "WebSocketFeed", "FeedError",
           "FeedAuthError", "FORMATS", "MAX_FRAME_BYTES", "MAX_BUFFER_SIZE", "FEED_REASONS", "CHANNELS"]

FEED_REASONS = feed_formats.REASONS
MAX_BUFFER_SIZE = 1 << 20
"""Largest ``buffer_size`` of a :class:`WebSocketFeed` (records; ~200 MB at ~200 bytes a record)."""
CHANNELS = ("trades", "quotes", "bars")
"""Channels :class:`WebSocketFeed` subscribes to (Binance: ``trades`` only)."""


class FeedBar(msgspec.Struct, frozen=True, gc=False):
    """A bar sent by a feed: ``symbol`` (name), ``start``/``end`` (int ns, the bar is
    ``[start, end)``; Alpaca minute bars end one minute after start), ``open``, ``high``, ``low``,
    ``close`` (> 0), ``volume`` (>= 0), ``vwap`` (NaN when the feed sends none), ``count``
    (trades in the bar; -1 when the feed sends none, as Polygon's aggregates)."""

    symbol: str
    start: int
    end: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    vwap: float
    count: int


class FeedControl(msgspec.Struct, frozen=True, gc=False):
    """A vendor control message: ``format``; ``kind`` one of ``"connected"``,
    ``"authenticated"``, ``"auth_failed"``, ``"subscribed"``, ``"error"``, ``"status"`` (any
    other notice); ``code`` (the vendor's error code, 0 when none); ``message`` (the vendor's
    text); ``channels`` (Alpaca's subscription confirmation: ``"trades:AAPL"`` ...)."""

    format: str
    kind: str
    code: int
    message: str
    channels: tuple[str, ...] = ()


_RECORDS = feed_formats.Records(Tick, Quote, FeedBar, FeedControl, MessageRejection)


def _check_format(format: Any) -> str:
    if not isinstance(format, str) or format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(map(repr, FORMATS))}, got {format!r}")
    return format


@annotate_methods
class FeedDecoder:
    """A reusable :func:`decode` for one format and symbol universe (builds its msgspec decoders
    once). ``FeedDecoder(format, symbols=None)``; ``decode(frame) -> (records, rejections)``."""

    __slots__ = ("format", "symbols", "_decoder")

    def __init__(self, format: str, symbols: Iterable[str] | None = None) -> None:
        self.format = _check_format(format)
        index = _check_symbols(symbols)
        self.symbols = None if index is None else tuple(index)
        universe = None if index is None else frozenset(index)
        self._decoder = feed_formats.FrameDecoder(self.format, _RECORDS, universe)

    def decode(self, frame: bytes | str) -> tuple[list, list[MessageRejection]]:
        """Records (:class:`~gpu_trader.marketdata.Tick`, :class:`~gpu_trader.marketdata.Quote`,
        :class:`FeedBar`, :class:`FeedControl`) in frame order, and the rejections (see the module doc)."""
        return self._decoder.decode(frame)


_DECODERS: dict[str, FeedDecoder] = {}


@annotate
def decode(frame: bytes | str, format: str, symbols: Iterable[str] | None = None
           ) -> tuple[list, list[MessageRejection]]:
    """Decode one frame of ``format`` (``"alpaca"``, ``"polygon"`` or ``"binance"``) into records
    in frame order and :class:`~gpu_trader.marketdata.MessageRejection` s (see the module doc).

    ``symbols``: the accepted symbol names (a collection of ``str``; a bare ``str`` is a
    ``TypeError``) or None for any. Never raises for a frame's content.
    """
    if symbols is not None:
        return FeedDecoder(format, symbols).decode(frame)
    decoder = _DECODERS.get(format) if isinstance(format, str) else None
    if decoder is None:
        decoder = _DECODERS[_check_format(format)] = FeedDecoder(format)
    return decoder.decode(frame)


# -- the WebSocket client -------------------------------------------------------------------
class FeedError(RuntimeError):
    """A feed that cannot go on: retries exhausted, or a vendor error during the handshake."""


class FeedAuthError(FeedError):
    """The vendor refused the credentials (or the subscription): never retried."""


@dataclass
class FeedStats:
    """Counters of a :class:`WebSocketFeed` (cumulative over reconnections).

    ``frames``, ``bytes`` (payload bytes received), ``messages`` (decoded or rejected, controls
    included), ``records`` (data records buffered), ``rejections`` (reason -> count, frame
    rejections included), ``dropped`` (records discarded by ``overflow="drop_oldest"``),
    ``blocked`` (times the reader waited for space with ``overflow="block"``), ``connections``
    (sessions established), ``reconnects`` (reconnection attempts), ``errors`` (vendor error
    messages, a refusal during the handshake included), ``last_error`` (text of the latest error or disconnect),
    ``buffered`` (records waiting now), ``max_buffered`` (its peak).
    """

    frames: int = 0
    bytes: int = 0
    messages: int = 0
    records: int = 0
    rejections: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    blocked: int = 0
    connections: int = 0
    reconnects: int = 0
    errors: int = 0
    last_error: str | None = None
    buffered: int = 0
    max_buffered: int = 0


_OVERFLOW = ("drop_oldest", "block")


def _subscribe_messages(fmt: str, symbols: tuple[str, ...], channels: tuple[str, ...], key, secret) -> tuple:
    """``(auth message or None, subscribe message)`` as JSON bytes for ``fmt``."""
    enc = msgspec.json.encode
    if fmt == "alpaca":
        auth = enc({"action": "auth", "key": key, "secret": secret})
        return auth, enc({"action": "subscribe", **{c: list(symbols) for c in channels}})
    if fmt == "polygon":
        prefix = {"trades": ("T",), "quotes": ("Q",), "bars": ("AM",)}
        params = ",".join(f"{p}.{s}" for c in channels for p in prefix[c] for s in symbols)
        return enc({"action": "auth", "params": key}), enc({"action": "subscribe", "params": params})
    return None, enc({"method": "SUBSCRIBE", "params": [f"{s.lower()}@trade" for s in symbols], "id": 1})


@annotate_methods
class WebSocketFeed:
    """A vendor market-data WebSocket (``websockets`` asyncio client) as an async iterator of
    :class:`~gpu_trader.marketdata.Tick`, :class:`~gpu_trader.marketdata.Quote` and
    :class:`FeedBar` records in arrival order::

        async with WebSocketFeed(url, format="alpaca", symbols=["AAPL"], key=k, secret=s) as feed:
            async for record in feed:
                ...

    Session: connect (``ping_interval``/``ping_timeout`` seconds: websockets' keepalive; a
    peer silent past them is a disconnect), authenticate (Alpaca ``{"action":"auth","key",
    "secret"}``, Polygon ``{"action":"auth","params":key}``, Binance none), wait for the
    vendor's confirmation, subscribe (Alpaca ``{"action":"subscribe","trades":[..],...}``,
    Polygon ``T.AAPL``/``Q.AAPL``/``AM.AAPL`` params, Binance ``{"method":"SUBSCRIBE","params":
    ["aaplusdt@trade"],"id":1}``) and wait for its confirmation, each wait at most
    ``open_timeout`` seconds. ``async with`` returns once the first session is subscribed.
    ``close_timeout``: seconds a closing handshake may take (a dead peer never answers it).

    Errors: a vendor error or auth refusal during the handshake (or an HTTP 401/403 on the
    upgrade) raises :class:`FeedAuthError` with the vendor's message and is never retried.
    A dropped connection (closed by the peer, TCP reset, a frame cut off midway, a ping
    timeout) reconnects after ``backoff_initial * 2**(k-1)`` seconds (k: consecutive failures;
    at most ``backoff_max``) times ``1 - jitter * random()``, authenticates and subscribes
    again; when the connection and then ``max_retries`` reconnections in a row fail,
    :class:`FeedError` is raised (by ``async with``, or by the iteration once the records
    received before are consumed). Binance stream names are the symbols lowercased
    (``BTCUSDT`` -> ``btcusdt@trade``); its messages name them in capitals.
    With ``reconnect=False`` the iteration ends when the connection closes (a replay).
    ``sleep`` and ``random`` are injectable for tests.

    Buffer: records wait in a buffer of at most ``buffer_size`` records. When it is full,
    ``overflow="drop_oldest"`` discards the oldest record (counted in ``stats.dropped``; the
    socket is always drained, so the vendor never sees a slow client), ``overflow="block"``
    stops reading the socket until the consumer takes one (counted in ``stats.blocked``; no
    record is lost, TCP pushes back to the vendor, and a consumer stalled past
    ``ping_timeout`` loses the connection, which is then reconnected). Memory per connection
    is bounded by the buffer (about 200 bytes per record: 10 000 records ~ 2 MB) plus
    websockets' queue of at most ``max_queue`` frames of ``max_frame_bytes`` (4 x 1 MiB).

    Frames are decoded by :class:`FeedDecoder` (``symbols`` is the universe: other symbols are
    rejected as ``"unknown_symbol"``); rejections are counted by reason in :attr:`stats`,
    vendor error messages (a handshake refusal too) in ``stats.errors``. ``await feed.close()`` stops it.
    """

    def __init__(self, url: str, *, format: str, symbols: Iterable[str], channels: Iterable[str] = ("trades",),
                 key: str | None = None, secret: str | None = None, buffer_size: int = 10_000,
                 overflow: str = "drop_oldest", reconnect: bool = True, max_retries: int = 10,
                 backoff_initial: float = 0.5, backoff_max: float = 30.0, jitter: float = 0.5,
                 ping_interval: float | None = 20.0, ping_timeout: float | None = 20.0, open_timeout: float = 10.0,
                 close_timeout: float = 1.0,
                 max_frame_bytes: int = MAX_FRAME_BYTES, max_queue: int = 4, proxy: str | bool | None = True,
                 sleep: Callable | None = None, random: Callable[[], float] | None = None) -> None:
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
            raise ValueError(f"url must be a ws:// or wss:// URL string, got {url!r}"[:200])
        self.url = url
        self.format = _check_format(format)
        index = _check_symbols(symbols)
        if not index:
            raise ValueError("symbols must name at least one symbol")
        self.symbols = tuple(index)
        if isinstance(channels, str):
            raise TypeError("channels must be a collection of channel names, e.g. ['trades']")
        self.channels = tuple(channels)
        allowed = ("trades",) if self.format == "binance" else CHANNELS
        if not self.channels or any(c not in allowed for c in self.channels) or len(set(self.channels)) != len(
                self.channels):
            raise ValueError(f"channels must be distinct names from {allowed} for format {self.format!r}, "
                             f"got {self.channels!r}")
        if self.format != "binance":
            need = ("key", "secret") if self.format == "alpaca" else ("key",)
            for name, value in (("key", key), ("secret", secret)):
                if name in need and not isinstance(value, str):
                    raise TypeError(f"{name} must be a str (the {self.format} API {name}), got {type(value).__name__}")
        if overflow not in _OVERFLOW:
            raise ValueError(f"overflow must be 'drop_oldest' or 'block', got {overflow!r}")
        self.overflow = overflow
        self.buffer_size = check_count(buffer_size, "buffer_size", 1, MAX_BUFFER_SIZE)
        self.max_retries = check_count(max_retries, "max_retries", 0, 1 << 20)
        self.max_frame_bytes = check_count(max_frame_bytes, "max_frame_bytes", 2, MAX_FRAME_BYTES)
        self.max_queue = check_count(max_queue, "max_queue", 1, 1024)
        self.backoff_initial = check_float(backoff_initial, "backoff_initial", minimum=0.0)
        self.backoff_max = check_float(backoff_max, "backoff_max", minimum=self.backoff_initial)
        self.jitter = check_float(jitter, "jitter", minimum=0.0)
        if self.jitter > 1.0:
            raise ValueError(f"jitter must be in [0, 1], got {jitter}")
        self.open_timeout = check_float(open_timeout, "open_timeout", positive=True)
        self.close_timeout = check_float(close_timeout, "close_timeout", positive=True)
        self.ping_interval = None if ping_interval is None else check_float(ping_interval, "ping_interval",
                                                                            positive=True)
        self.ping_timeout = None if ping_timeout is None else check_float(ping_timeout, "ping_timeout", positive=True)
        self.reconnect = check_flag(reconnect, "reconnect")
        if not (proxy is None or isinstance(proxy, (bool, str))):
            raise TypeError(f"proxy must be a proxy URL str, True (from the environment) or None, got "
                            f"{type(proxy).__name__}")
        for name, fn in (("sleep", sleep), ("random", random)):
            if fn is not None and not callable(fn):
                raise TypeError(f"{name} must be a callable or None, got {type(fn).__name__}")
        self.stats = FeedStats()
        self._proxy = proxy
        self._auth, self._subscribe = _subscribe_messages(self.format, self.symbols, self.channels, key, secret)
        self._decoder = feed_formats.FrameDecoder(self.format, _RECORDS, frozenset(index), self.max_frame_bytes)
        self._sleep = asyncio.sleep if sleep is None else sleep
        self._random = _random_unit if random is None else random
        self._buffer: collections.deque = collections.deque()
        self._task: asyncio.Task | None = None
        self._ready: asyncio.Event | None = None
        self._space: asyncio.Event | None = None
        self._started: asyncio.Future | None = None
        self._error: BaseException | None = None
        self._done = False
        self._closing = False

    # -- consumer side --
    async def __aenter__(self) -> WebSocketFeed:
        await self.start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def start(self) -> None:
        """Connect, authenticate and subscribe (what ``async with`` does); raises
        :class:`FeedAuthError` or :class:`FeedError` when the first session cannot be opened."""
        if self._task is not None:
            raise RuntimeError("this WebSocketFeed was already started")
        loop = asyncio.get_running_loop()
        self._ready, self._space, self._started = asyncio.Event(), asyncio.Event(), loop.create_future()
        self._task = loop.create_task(self._run())
        try:
            await asyncio.shield(self._started)
        except BaseException:
            await self.close()
            raise

    def __aiter__(self) -> WebSocketFeed:
        return self

    async def __anext__(self):
        buf = self._buffer
        if self._ready is None:
            raise RuntimeError("start the feed first: async with WebSocketFeed(...) as feed (or await feed.start())")
        while not buf:
            if self._done:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        record = buf.popleft()
        self.stats.buffered = len(buf)
        if self.overflow == "block":
            self._space.set()
        return record

    async def close(self) -> None:
        """Stop reading and close the connection; records already buffered can still be read."""
        self._closing = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass
        self._done = True
        if self._ready is not None:
            self._ready.set()

    # -- reader side --
    def _backoff(self, failures: int) -> float:
        delay = min(self.backoff_max, self.backoff_initial * 2.0 ** min(failures - 1, 60))
        return delay * (1.0 - self.jitter * self._random())

    async def _run(self) -> None:
        import websockets
        from websockets.asyncio.client import connect

        failures = 0
        try:
            while True:
                session = False  # this attempt authenticated and subscribed
                try:
                    async with connect(self.url, open_timeout=self.open_timeout, ping_interval=self.ping_interval,
                                       ping_timeout=self.ping_timeout, max_size=self.max_frame_bytes,
                                       max_queue=self.max_queue, compression=None, proxy=self._proxy,
                                       close_timeout=self.close_timeout) as ws:
                        await self._handshake(ws)
                        failures, session = 0, True
                        self.stats.connections += 1
                        if not self._started.done():
                            self._started.set_result(None)
                        while True:  # text frames as bytes: no UTF-8 decode into a str first
                            await self._take(await ws.recv(decode=False))
                except websockets.ConnectionClosedOK:
                    if not session:  # closed during the handshake: a failed attempt (bounded by max_retries)
                        failures += 1
                    self.stats.last_error = "the server closed the connection"
                except FeedError:
                    raise
                except websockets.InvalidStatus as exc:
                    if exc.response.status_code in (401, 403):
                        raise FeedAuthError(f"{self.format}: the server refused the connection: {exc}") from None
                    failures += 1
                    self.stats.last_error = str(exc)
                except (OSError, TimeoutError, websockets.WebSocketException) as exc:
                    failures += 1
                    self.stats.last_error = f"{type(exc).__name__}: {exc}"
                if not self.reconnect:
                    return
                if failures > self.max_retries:
                    raise FeedError(f"{self.format} feed at {self.url}: {failures} consecutive connection failures "
                                    f"(max_retries={self.max_retries}); last: {self.stats.last_error}")
                self.stats.reconnects += 1
                await self._sleep(self._backoff(max(failures, 1)))
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._error = exc
            if not self._started.done():
                self._started.set_exception(exc)
                self._error = None
        finally:
            self._done = True
            self._ready.set()
            if not self._started.done():
                self._started.set_exception(FeedError(f"{self.format} feed ended before its first session: "
                                                      f"{self.stats.last_error}"))
                self._started.exception()  # retrieved: start() may have been cancelled, no "never retrieved" log

    async def _handshake(self, ws) -> None:
        """Authenticate and subscribe; data frames arriving meanwhile are buffered."""
        if self._auth is not None:
            await ws.send(self._auth.decode())
            await self._await_control(ws, "authenticated")
        await ws.send(self._subscribe.decode())
        await self._await_control(ws, "subscribed")

    async def _await_control(self, ws, kind: str) -> None:
        async with asyncio.timeout(self.open_timeout):
            while True:
                for control in await self._take(await ws.recv(decode=False)):
                    if control.kind == kind:
                        return
                    if control.kind in ("auth_failed", "error"):
                        raise FeedAuthError(f"{self.format} refused the session"
                                            f"{f' (code {control.code})' if control.code else ''}: {control.message}")

    async def _take(self, frame) -> list[FeedControl]:
        """Decode one frame, count it, buffer its data records; returns its control records."""
        stats = self.stats
        stats.frames += 1
        stats.bytes += len(frame)
        records, rejected = self._decoder.decode(frame)
        stats.messages += len(records)
        if rejected:  # the rare case: no generator or loop per clean frame
            stats.messages += sum(r.index >= 0 for r in rejected)
            for r in rejected:
                stats.rejections[r.reason] = stats.rejections.get(r.reason, 0) + 1
        controls = []
        buf, cap = self._buffer, self.buffer_size
        for rec in records:
            if type(rec) is FeedControl:
                controls.append(rec)
                if rec.kind in ("error", "auth_failed"):
                    stats.errors += 1
                    stats.last_error = f"{rec.format} error {rec.code}: {rec.message}"
                continue
            if len(buf) >= cap:
                if self.overflow == "drop_oldest":
                    buf.popleft()
                    stats.dropped += 1
                else:
                    stats.blocked += 1
                    while len(buf) >= cap:
                        self._space.clear()
                        self._ready.set()
                        await self._space.wait()
            buf.append(rec)
            stats.records += 1
        n = len(buf)
        stats.buffered = n
        if n > stats.max_buffered:
            stats.max_buffered = n
        if n:
            self._ready.set()
        return controls


def _random_unit() -> float:
    return random.random()
