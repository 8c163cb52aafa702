"""The ``feeds`` suite: vendor frames decoded (:func:`gpu_trader.feeds.decode`) and frames through a
:class:`gpu_trader.feeds.WebSocketFeed` (docs/design.md#benchmarks-and-targets).

Cases and their references (timed in the same run, on the host):

* decode cost per message, per format: one Alpaca frame of 100 trades (RFC 3339 times, 9
  fractional digits), one Polygon frame of 100 trades (ms times), 100 Binance trade frames of one
  message each (decimal-string prices); reference ``orjson`` (when installed) and the stdlib
  ``json``, each followed by the same checks and conversion written by hand into the same
  :class:`~gpu_trader.marketdata.Tick` records (times through ``datetime.fromisoformat``
  plus the fraction's digits; prices ``float(str)``);
* frames/s through a WebSocket: a local ``websockets`` server on 127.0.0.1 sends N one-trade
  Alpaca frames (N = 2000; quick 500) to a :class:`~gpu_trader.feeds.WebSocketFeed` that
  authenticates, subscribes and yields every record; server and client share the event loop
  (one core). Reference ``websockets``: a bare ``websockets`` client receiving the same frames
  without decoding them (the transport's own cost).
"""
from __future__ import annotations

import asyncio
import datetime
import functools
import json
import math
from typing import Any, Callable

from ... import feeds
from ...marketdata import Tick
from ..harness import Reference, SkipCase, Workload
from ..memory import suite_cache

__all__ = ["workloads"]

T0 = 1_700_000_000_000_000_000
MESSAGES = 100
FRAMES = {"quick": 500, "standard": 2000, "full": 2000}
SYMBOLS = ("AAPL", "MSFT", "NVDA", "AMZN")


def _rfc3339(ns: int) -> str:
    seconds, frac = divmod(ns, 10**9)
    when = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{frac:09d}Z"


def _price(i: int) -> float:
    return round(100.0 + (i * 37 % 1000) / 100, 2)


@suite_cache(maxsize=4)
def frames(fmt: str) -> tuple[bytes, ...]:
    """The frames one decode case reads: one frame of 100 messages (Alpaca, Polygon) or 100
    one-message frames (Binance)."""
    if fmt == "alpaca":
        msgs = [{"T": "t", "i": i, "S": SYMBOLS[i % 4], "x": "V", "p": _price(i), "s": i % 500 + 1,
                 "t": _rfc3339(T0 + i * 123_457), "c": ["@"], "z": "C"} for i in range(MESSAGES)]
        return (json.dumps(msgs, separators=(",", ":")).encode(),)
    if fmt == "polygon":
        msgs = [{"ev": "T", "sym": SYMBOLS[i % 4], "x": 4, "i": str(i), "z": 3, "p": _price(i), "s": i % 500 + 1,
                 "c": [12], "t": T0 // 10**6 + i, "q": i} for i in range(MESSAGES)]
        return (json.dumps(msgs, separators=(",", ":")).encode(),)
    return tuple(json.dumps({"e": "trade", "E": T0 // 10**6 + i, "s": "BTCUSDT", "t": i, "p": f"{_price(i):.8f}",
                             "q": f"{(i % 500 + 1) / 1000:.8f}", "T": T0 // 10**6 + i, "m": True, "M": True},
                            separators=(",", ":")).encode() for i in range(MESSAGES))


# -- the hand-written references -------------------------------------------------------------
def _manual_ns(text: str) -> int:
    if not (len(text) >= 20 and text[-1] == "Z"):
        raise ValueError("time")
    whole = datetime.datetime.fromisoformat(text[:19]).replace(tzinfo=datetime.timezone.utc)
    frac = text[20:-1]
    return int(whole.timestamp()) * 10**9 + (int(frac.ljust(9, "0")) if frac else 0)


def _checked(symbol, ts, price, size) -> Tick:
    if not (isinstance(symbol, str) and 0 < len(symbol) <= 64 and type(ts) is int and 0 <= ts < 2**63
            and 0.0 < price < math.inf and 0.0 <= size < math.inf):
        raise ValueError("invalid trade")
    return Tick(symbol, ts, price, size)


def _manual_alpaca(loads, fs):
    return [_checked(m["S"], _manual_ns(m["t"]), float(m["p"]), float(m["s"]))
            for f in fs for m in loads(f) if m["T"] == "t"]


def _manual_polygon(loads, fs):
    return [_checked(m["sym"], int(m["t"]) * 10**6, float(m["p"]), float(m["s"]))
            for f in fs for m in loads(f) if m["ev"] == "T"]


def _manual_binance(loads, fs):
    out = []
    for f in fs:
        m = loads(f)
        if m["e"] == "trade":
            out.append(_checked(m["s"], int(m["T"]) * 10**6, float(m["p"]), float(m["q"])))
    return out


_MANUAL = {"alpaca": _manual_alpaca, "polygon": _manual_polygon, "binance": _manual_binance}


def _call(fn: Callable[[], Any]) -> Any:
    return fn()


def _host_only(be):
    if be.name != "cpu":
        raise SkipCase("feeds decode on the host (cpu backend) only")


def _decode_case(fmt: str) -> Workload:
    def ours(decoder, fs):
        out = []
        for f in fs:
            out += decoder.decode(f)[0]
        return out

    def setup(be):
        _host_only(be)
        return functools.partial(ours, feeds.FeedDecoder(fmt), frames(fmt))

    def ref(module: str):
        def build():
            import importlib

            return functools.partial(_MANUAL[fmt], importlib.import_module(module).loads, frames(fmt))

        return build

    return Workload(
        name=f"feed decode {fmt} {MESSAGES} messages", sizes={"messages": MESSAGES}, setup=setup, run=_call,
        items=MESSAGES, unit="message", target=f"feeds.decode_{fmt}",
        references=(Reference("orjson", ref("orjson"), _call, requires="orjson"),
                    Reference("json", ref("json"), _call)),
    )


# -- frames through a WebSocket ---------------------------------------------------------------
@suite_cache(maxsize=2)
def stream_frames(n: int) -> tuple[str, ...]:
    return tuple(json.dumps([{"T": "t", "S": SYMBOLS[i % 4], "p": _price(i), "s": 1, "t": _rfc3339(T0 + i * 1000)}],
                            separators=(",", ":")) for i in range(n))


async def _serve(frames_: tuple[str, ...], client) -> Any:
    from websockets.asyncio.server import serve

    async def handler(ws):
        await ws.send('[{"T":"success","msg":"connected"}]')
        await ws.recv()
        await ws.send('[{"T":"success","msg":"authenticated"}]')
        await ws.recv()
        await ws.send('[{"T":"subscription","trades":["*"],"quotes":[],"bars":[]}]')
        for f in frames_:
            await ws.send(f)
        await ws.close()

    async with serve(handler, "127.0.0.1", 0, compression=None) as server:
        return await client(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/")


async def _feed_client(url: str) -> int:
    count = 0
    async with feeds.WebSocketFeed(url, format="alpaca", symbols=SYMBOLS, key="k", secret="s", reconnect=False,
                                   proxy=None) as feed:
        async for _ in feed:
            count += 1
    return count


async def _bare_client(url: str) -> int:
    from websockets.asyncio.client import connect

    count = -3  # the handshake's three controls
    async with connect(url, compression=None, proxy=None) as ws:
        await ws.send('{"action":"auth"}')
        await ws.send('{"action":"subscribe"}')
        async for _ in ws:
            count += 1
    return count


def _websocket_case(size: str) -> Workload:
    n = FRAMES[size]

    def setup(be):
        _host_only(be)
        import importlib.util

        if importlib.util.find_spec("websockets") is None:
            raise SkipCase("websockets is not installed")
        return stream_frames(n)

    return Workload(
        name=f"feed websocket {n} frames", sizes={"frames": n}, setup=setup,
        run=lambda fs: asyncio.run(_serve(fs, _feed_client)), items=n, unit="frame", target="feeds.websocket",
        references=(Reference("websockets", lambda: stream_frames(n), lambda fs: asyncio.run(_serve(fs, _bare_client)),
                              requires="websockets"),),
    )


def workloads(size: str) -> list[Workload]:
    return [*(_decode_case(fmt) for fmt in feeds.FORMATS), _websocket_case(size)]
