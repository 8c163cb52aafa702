"""Vendor market-data frames (Alpaca v2, Polygon, Binance) decoded by msgspec into typed records.

One module per job: this one knows the wire formats (the vendors' message models as msgspec
Structs, tagged on ``T`` / ``ev`` / ``e``), RFC 3339 timestamps to int ns, decimal strings to
floats, and the per-message rejection rules. It builds the caller's record types (the public
``Tick``/``Quote``/``FeedBar``/``FeedControl`` of :mod:`gpu_trader.feeds`, passed in as
:class:`Records`), so nothing here imports a public module.

Wire formats (field names and units as the vendors document them):

* **alpaca** (market data stream v2): a frame is a JSON array of messages. Trade
  ``{"T":"t","S":sym,"p":price,"s":size,"t":rfc3339,...}``, quote ``{"T":"q","S":sym,"bp","bs",
  "ap","as","t",...}``, minute bar ``{"T":"b","S":sym,"o","h","l","c","v","t","n","vw"}``
  (``t`` the bar's start); control ``{"T":"success","msg":..}``, ``{"T":"error","code":..,
  "msg":..}``, ``{"T":"subscription","trades":[..],"quotes":[..],"bars":[..]}``. Times are
  RFC 3339 text with up to 9 fractional digits.
* **polygon** (stocks cluster): a JSON array of messages tagged ``ev``: trade ``"T"``
  (``sym``, ``p``, ``s``, ``t`` ms), quote ``"Q"`` (``bp``, ``bs``, ``ap``, ``as``, ``t`` ms),
  aggregates ``"A"`` (per second) and ``"AM"`` (per minute) (``o``, ``h``, ``l``, ``c``, ``v``,
  ``vw``, ``s``/``e`` start/end ms), ``"status"`` (``status``, ``message``).
* **binance** (spot trade streams): a frame is one JSON object. Trade ``{"e":"trade","s":sym,
  "p":"0.001","q":"100","T":ms,...}`` and aggregate trade ``"aggTrade"`` (same fields);
  prices and quantities are decimal strings. A combined-stream frame wraps one in
  ``{"stream":..,"data":{..}}``; ``{"result":null,"id":n}`` answers a SUBSCRIBE,
  ``{"error":{"code":..,"msg":..},"id":n}`` or ``{"code":..,"msg":..}`` reports an error.
"""
from __future__ import annotations

import datetime
import math
import re
import sys
from typing import Annotated, Any, Callable, NamedTuple, Union

import msgspec
from msgspec import UNSET, Meta, Raw, Struct, UnsetType, field

from .message_fields import TS_MAX, Price, Size, Symbol, message_size, validation_reason

__all__ = ["FORMATS", "MAX_FRAME_BYTES", "REASONS", "Records", "FrameDecoder", "rfc3339_ns", "FeedFormatError"]

FORMATS = ("alpaca", "polygon", "binance")
MAX_FRAME_BYTES = 1 << 20
"""Longest frame decoded (bytes; characters for a ``str``); longer ones are rejected whole."""
REASONS = ("malformed_json", "too_large", "missing_field", "invalid_field", "unknown_symbol", "unsupported_message")
"""Rejection reasons: those of :mod:`gpu_trader.marketdata` plus ``"unsupported_message"`` (a
message type the format does not turn into a record, e.g. Alpaca's LULD ``"l"``)."""

_NS_PER_MS = 10**6
_Price, _Size, _Symbol = Price, Size, Symbol
_Count = Annotated[int, Meta(ge=0, le=TS_MAX)]
_TimeText = Annotated[str, Meta(max_length=64)]
_FinitePrice = Annotated[float, Meta(gt=0.0, le=sys.float_info.max)]  # also refuses "inf" text
_FiniteSize = Annotated[float, Meta(ge=0.0, le=sys.float_info.max)]
_Ms = Annotated[int, Meta(ge=0, le=TS_MAX // _NS_PER_MS)]
_Text = Annotated[str, Meta(max_length=4096)]
_NAN = math.nan


class FeedFormatError(ValueError):
    """A message field that msgspec accepted but the format does not (a bad RFC 3339 time)."""


# -- RFC 3339 times --------------------------------------------------------
_RFC3339 = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
                      r"(?:\.([0-9]{1,9}))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))", re.ASCII)
_EPOCH_ORDINAL = datetime.date(1970, 1, 1).toordinal()
_head_ns: dict[str, int] = {}  # checked "YYYY-MM-DDTHH:MM:SS" (read as UTC) -> ns since the epoch
_CACHE_LIMIT = 4096


def _civil_seconds(y: str, mo: str, d: str, h: str, mi: str, s: str) -> int:
    """Seconds from 1970-01-01T00:00:00 to a checked civil date and time (no offset applied)."""
    hour, minute, second = int(h), int(mi), int(s)
    if hour > 23 or minute > 59 or second > 59:
        raise FeedFormatError(f"time {h}:{mi}:{s} is out of range (leap seconds are not accepted)")
    try:
        days = datetime.date(int(y), int(mo), int(d)).toordinal() - _EPOCH_ORDINAL
    except ValueError as exc:
        raise FeedFormatError(f"date {y}-{mo}-{d}: {exc}") from None
    return days * 86400 + hour * 3600 + minute * 60 + second


_FRACTION_SCALE = tuple(10 ** (9 - k) for k in range(10))  # digits -> ns per unit of the last digit


def rfc3339_ns(text: str) -> int:
    """RFC 3339 date-time text to int nanoseconds since the epoch (UTC), exactly (integer
    arithmetic, no float): ``YYYY-MM-DDTHH:MM:SS[.f{1,9}](Z|+hh:mm|-hh:mm)`` (``t``/``z``
    lowercase accepted). :class:`FeedFormatError` for other text, an invalid date or time
    (leap second 60 included), more than 9 fractional digits, or a time outside
    ``[1970-01-01T00:00:00Z, 2**63 ns)``.

    Fast path: the ns of ``YYYY-MM-DDTHH:MM:SS`` heads already checked by the full parse (and
    whose whole second lies in range) are cached, since a feed's messages share few seconds; a
    ``Z`` time with a cached head costs a dictionary look-up and one ``int`` of its ASCII
    fraction digits.
    """
    base = _head_ns.get(text[:19])
    if base is not None and text[-1] == "Z":
        if len(text) == 20:
            return base
        digits = text[20:-1]
        if text[19] == "." and 0 < len(digits) <= 9 and digits.isascii() and digits.isdigit():
            return base + int(digits) * _FRACTION_SCALE[len(digits)]
    return _rfc3339_full(text)


def _rfc3339_full(text: str) -> int:
    """:func:`rfc3339_ns` by the full grammar (a regular expression); caches the head's ns when
    its whole second is in range."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise FeedFormatError(f"{text[:40]!r} is not an RFC 3339 date-time with at most 9 fractional digits")
    y, mo, d, h, mi, s, frac, sign, oh, om = m.groups()
    seconds = _civil_seconds(y, mo, d, h, mi, s)
    if 0 <= seconds and seconds * 1_000_000_000 + 999_999_999 <= TS_MAX:
        if len(_head_ns) >= _CACHE_LIMIT:
            _head_ns.clear()
        _head_ns[text[:19]] = seconds * 1_000_000_000
    if sign is not None:
        off_h, off_m = int(oh), int(om)
        if off_h > 23 or off_m > 59:
            raise FeedFormatError(f"UTC offset {sign}{oh}:{om} is out of range")
        offset = off_h * 3600 + off_m * 60
        seconds = seconds - offset if sign == "+" else seconds + offset
    ns = seconds * 1_000_000_000 + (int(frac) * _FRACTION_SCALE[len(frac)] if frac else 0)
    if not 0 <= ns <= TS_MAX:
        raise FeedFormatError(f"{text[:40]!r} is outside [1970-01-01T00:00:00Z, 2**63 ns)")
    return ns


# -- the vendors' messages ---------------------------------------------------------------
class _AlpacaTrade(Struct, tag_field="T", tag="t", frozen=True, gc=False):
    S: _Symbol
    t: _TimeText
    p: _Price
    s: _Size


class _AlpacaQuote(Struct, tag_field="T", tag="q", frozen=True, gc=False):
    S: _Symbol
    t: _TimeText
    bp: _Price
    ap: _Price
    bs: _Size
    as_: _Size = field(name="as")


class _AlpacaBar(Struct, tag_field="T", tag="b", frozen=True, gc=False):
    S: _Symbol
    t: _TimeText
    o: _Price
    h: _Price
    l: _Price  # noqa: E741 (the vendor's field name)
    c: _Price
    v: _Size
    n: _Count = -1
    vw: _Price = _NAN


class _AlpacaSuccess(Struct, tag_field="T", tag="success", frozen=True, gc=False):
    msg: _Text = ""


class _AlpacaError(Struct, tag_field="T", tag="error", frozen=True, gc=False):
    code: int = 0
    msg: _Text = ""


class _AlpacaSubscription(Struct, tag_field="T", tag="subscription", frozen=True):
    trades: list[_Symbol] = []
    quotes: list[_Symbol] = []
    bars: list[_Symbol] = []


class _PolygonTrade(Struct, tag_field="ev", tag="T", frozen=True, gc=False):
    sym: _Symbol
    p: _Price
    s: _Size
    t: _Ms


class _PolygonQuote(Struct, tag_field="ev", tag="Q", frozen=True, gc=False):
    sym: _Symbol
    bp: _Price
    ap: _Price
    bs: _Size
    as_: _Size = field(name="as")
    t: _Ms  # required: a quote without its time is refused (``missing_field``), never stamped -1 ms


class _PolygonSecondAgg(Struct, tag_field="ev", tag="A", frozen=True, gc=False):
    sym: _Symbol
    o: _Price
    h: _Price
    l: _Price  # noqa: E741
    c: _Price
    v: _Size
    s: _Ms
    e: _Ms
    vw: _Price = _NAN


class _PolygonMinuteAgg(_PolygonSecondAgg, tag="AM", frozen=True, gc=False):
    pass


class _PolygonStatus(Struct, tag_field="ev", tag="status", frozen=True, gc=False):
    status: _Text
    message: _Text = ""


class _BinanceTrade(Struct, tag_field="e", tag="trade", frozen=True, gc=False):
    """Decoded with ``strict=False``: msgspec reads the decimal strings ``p``/``q`` as floats
    in C, by the JSON number grammar (correctly rounded; ``" 1"``, ``"1_0"``, ``".5"`` refused),
    and the finite upper bound refuses its ``"inf"``/``"nan"`` spellings."""

    s: _Symbol
    p: _FinitePrice
    q: _FiniteSize
    T: _Ms


class _BinanceAggTrade(_BinanceTrade, tag="aggTrade", frozen=True, gc=False):
    pass


class _BinanceErrorBody(Struct, frozen=True):
    code: int = 0
    msg: _Text = ""


class _BinanceOther(Struct, frozen=True):
    """A Binance frame that is not a bare trade: a combined-stream wrapper, a SUBSCRIBE answer,
    an error, or a message with an unknown ``e``."""

    e: str | UnsetType = UNSET
    stream: str | UnsetType = UNSET
    data: Raw | UnsetType = UNSET
    result: Raw | UnsetType = UNSET
    id: Raw | UnsetType = UNSET
    code: int | UnsetType = UNSET
    msg: _Text | UnsetType = UNSET
    error: _BinanceErrorBody | UnsetType = UNSET


_ALPACA = (_AlpacaTrade, _AlpacaQuote, _AlpacaBar, _AlpacaSuccess, _AlpacaError, _AlpacaSubscription)
_POLYGON = (_PolygonTrade, _PolygonQuote, _PolygonSecondAgg, _PolygonMinuteAgg, _PolygonStatus)
_BINANCE = (_BinanceTrade, _BinanceAggTrade)
_POLYGON_KINDS = {"connected": "connected", "auth_success": "authenticated", "auth_failed": "auth_failed",
                  "success": "subscribed", "error": "error"}


class Records(NamedTuple):
    """The record types a :class:`FrameDecoder` builds: ``tick(symbol, ts, price, size)``,
    ``quote(symbol, ts, bid, ask, bid_size, ask_size)``, ``bar(symbol, start, end, open, high,
    low, close, volume, vwap, count)``, ``control(format, kind, code, message, channels)`` and
    ``rejection(index, reason, message)``."""

    tick: Callable
    quote: Callable
    bar: Callable
    control: Callable
    rejection: Callable


class FrameDecoder:
    """Decode frames of one format into records and rejections (see the module doc).

    ``decode(frame) -> (records, rejections)``: ``rejections`` are ``records.rejection(index,
    reason, message)`` with ``index`` the message's position in the frame, or -1 when the
    whole frame is refused (not JSON, not an array/object, longer than ``max_bytes``). The
    common case (every message valid) is one msgspec pass over the frame; a frame with a
    bad message is decoded again message by message, so only that message is rejected.
    ``symbols``: a set of accepted names, or None for any (others: ``"unknown_symbol"``).
    """

    def __init__(self, fmt: str, records: Records, symbols: frozenset | None = None,
                 max_bytes: int = MAX_FRAME_BYTES) -> None:
        self.format = fmt
        self.max_bytes = max_bytes
        self._symbols = symbols
        self._records = records
        self._reject = records.rejection
        self._convert = self._converters(fmt, records)
        if fmt == "binance":
            self._frame = msgspec.json.Decoder(Union[_BINANCE], strict=False)  # noqa: UP007 (decimal strings)
            self._one = self._frame
            self._other = msgspec.json.Decoder(_BinanceOther)
            self._tag, self._known = "e", {"trade", "aggTrade"}
        else:
            members = _ALPACA if fmt == "alpaca" else _POLYGON
            self._frame = msgspec.json.Decoder(list[Union[members]])  # noqa: UP007
            self._one = msgspec.json.Decoder(Union[members])  # noqa: UP007
            self._raws = msgspec.json.Decoder(list[Raw])
            self._tag = "T" if fmt == "alpaca" else "ev"
            self._known = {m.__struct_config__.tag for m in members}
        self._tag_of = msgspec.json.Decoder(dict[str, Raw])

    @staticmethod
    def _converters(fmt: str, r: Records) -> dict[type, Callable]:
        tick, quote, bar, control, _ = r
        ms = _NS_PER_MS
        minute = 60 * 10**9

        def alpaca_bar(m):
            start = rfc3339_ns(m.t)
            return bar(m.S, start, min(start + minute, TS_MAX), m.o, m.h, m.l, m.c, m.v, m.vw, m.n)

        def alpaca_success(m):
            kind = m.msg if m.msg in ("connected", "authenticated") else "status"
            return control(fmt, kind, 0, m.msg, ())

        def alpaca_subscription(m):
            channels = tuple(f"{name}:{s}" for name in ("trades", "quotes", "bars") for s in getattr(m, name))
            return control(fmt, "subscribed", 0, "subscription", channels)

        def polygon_bar(m):
            return bar(m.sym, m.s * ms, m.e * ms, m.o, m.h, m.l, m.c, m.v, m.vw, -1)

        def polygon_status(m):
            return control(fmt, _POLYGON_KINDS.get(m.status, "status"), 0, m.message, ())

        def binance_trade(m):
            return tick(m.s, m.T * ms, m.p, m.q)

        return {
            _AlpacaTrade: lambda m: tick(m.S, rfc3339_ns(m.t), m.p, m.s),
            _AlpacaQuote: lambda m: quote(m.S, rfc3339_ns(m.t), m.bp, m.ap, m.bs, m.as_),
            _AlpacaBar: alpaca_bar,
            _AlpacaSuccess: alpaca_success,
            _AlpacaError: lambda m: control(fmt, "error", m.code, m.msg, ()),
            _AlpacaSubscription: alpaca_subscription,
            _PolygonTrade: lambda m: tick(m.sym, m.t * ms, m.p, m.s),
            _PolygonQuote: lambda m: quote(m.sym, m.t * ms, m.bp, m.ap, m.bs, m.as_),
            _PolygonSecondAgg: polygon_bar,
            _PolygonMinuteAgg: polygon_bar,
            _PolygonStatus: polygon_status,
            _BinanceTrade: binance_trade,
            _BinanceAggTrade: binance_trade,
        }

    def decode(self, frame: Any) -> tuple[list, list]:
        size = len(frame) if type(frame) is bytes else message_size(frame)
        if size < 0:
            return [], [self._reject(-1, "malformed_json", "a frame must be readable bytes, bytearray, memoryview or "
                                                       f"str, got {type(frame).__name__}")]
        if size > self.max_bytes:
            return [], [self._reject(-1, "too_large", f"the frame has {size} bytes; at most {self.max_bytes} are "
                                                  "accepted")]
        try:
            messages = self._frame.decode(frame)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, TypeError, ValueError, BufferError):
            return self._slow(frame)  # BufferError: a non-contiguous memoryview (refused there as malformed_json)
        if self.format == "binance":  # one trade (nothing in it fails after msgspec)
            rec = self._convert[type(messages)](messages)
            if self._symbols is None or rec.symbol in self._symbols:
                return [rec], []
            return [], [self._reject(0, "unknown_symbol", f"symbol {rec.symbol!r} is not in the symbol universe")]
        if self._symbols is None:  # the common case: no universe, and every message converts
            convert = self._convert
            try:
                return [convert[type(m)](m) for m in messages], []
            except FeedFormatError:
                pass
        return self._finish(messages, range(len(messages)), [])

    def _finish(self, messages, positions, rejected: list) -> tuple[list, list]:
        """Convert ``messages`` (at ``positions`` of the frame), rejecting per message a field the
        format refuses or a symbol outside the universe; ``rejected`` (from decoding) joins them, in order."""
        convert, symbols, reject = self._convert, self._symbols, self._reject
        out = []
        for i, m in zip(positions, messages):
            try:
                rec = convert[type(m)](m)
            except FeedFormatError as exc:
                rejected.append(reject(i, "invalid_field", str(exc)))
                continue
            if symbols is not None and type(rec) is not self._records.control and rec.symbol not in symbols:
                rejected.append(reject(i, "unknown_symbol", f"symbol {rec.symbol!r} is not in the symbol universe"))
                continue
            out.append(rec)
        if len(rejected) > 1:
            rejected.sort(key=lambda r: r.index)
        return out, rejected

    def _slow(self, frame) -> tuple[list, list]:
        """A frame the one-pass decode refused: find which messages are bad."""
        if self.format == "binance":
            return self._binance_slow(frame)
        try:
            raws = self._raws.decode(frame)
        except msgspec.ValidationError:
            return [], [self._reject(-1, "malformed_json", f"an {self.format} frame must be a JSON array of messages")]
        except RecursionError:
            return [], [self._reject(-1, "too_large", "the frame nests arrays or objects too deeply to decode")]
        except Exception as exc:  # not JSON, invalid UTF-8, a lone surrogate in a str
            return [], [self._reject(-1, "malformed_json", f"{type(exc).__name__}: {exc}")]
        good, positions, rejected = [], [], []
        for i, raw in enumerate(raws):
            try:
                good.append(self._one.decode(raw))
                positions.append(i)
            except msgspec.ValidationError as exc:
                rejected.append(self._reject(i, self._classify(raw, exc), str(exc)))
            except RecursionError:
                rejected.append(self._reject(i, "too_large", "the message nests arrays or objects too deeply"))
        return self._finish(good, positions, rejected)

    def _classify(self, raw, exc: msgspec.ValidationError) -> str:
        """The reason of a message msgspec refused: an unknown tag is ``"unsupported_message"``."""
        try:
            tag = self._tag_of.decode(raw).get(self._tag)
        except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
            return "malformed_json" if "Expected `object`" in str(exc) else validation_reason(exc)
        if tag is None:
            return "missing_field"
        try:
            value = msgspec.json.decode(tag)
        except msgspec.DecodeError:
            return "invalid_field"
        if isinstance(value, str) and value not in self._known:
            return "unsupported_message"
        return validation_reason(exc)

    def _binance_slow(self, frame) -> tuple[list, list]:
        try:
            other = self._other.decode(frame)
        except msgspec.ValidationError as exc:
            reason = "malformed_json" if "Expected `object`" in str(exc) else "invalid_field"
            return [], [self._reject(-1 if reason == "malformed_json" else 0, reason, str(exc))]
        except RecursionError:
            return [], [self._reject(-1, "too_large", "the frame nests arrays or objects too deeply to decode")]
        except Exception as exc:
            return [], [self._reject(-1, "malformed_json", f"{type(exc).__name__}: {exc}")]
        if other.data is not UNSET:  # a combined-stream wrapper
            try:
                return self._finish([self._one.decode(other.data)], [0], [])
            except msgspec.ValidationError as exc:
                return [], [self._reject(0, self._classify(other.data, exc), str(exc))]
            except RecursionError:
                return [], [self._reject(0, "too_large", "the message nests arrays or objects too deeply")]
        control = self._convert_control
        if other.error is not UNSET:
            return [control("error", other.error.code, other.error.msg)], []
        if other.code is not UNSET:
            return [control("error", other.code, other.msg or "")], []
        if other.result is not UNSET and other.id is not UNSET:
            return [control("subscribed", 0, f"result {bytes(other.result).decode()[:80]} for id "
                                             f"{bytes(other.id).decode()[:40]}")], []
        try:
            self._one.decode(frame)
        except msgspec.ValidationError as exc:
            return [], [self._reject(0, self._classify(frame, exc), str(exc))]
        return [], [self._reject(0, "unsupported_message", "not a Binance trade, aggTrade or control message")]

    def _convert_control(self, kind: str, code: int, message: str):
        return self._records.control(self.format, kind, code, message, ())
