"""Conversions between JSON-like Python values and the values of a Lua runtime, as
Orthanc 1.10.1's ``LuaContext::PushJson`` (Python to Lua) and ``LuaContext::GetJson`` (Lua
to Python) do them.

Lua strings are bytes on the Python side (the runtime is created with ``encoding=None``).
"""
from __future__ import annotations

import logging
import math
from typing import Any, Mapping

log = logging.getLogger("pacsbox.lua")

__all__ = ["LuaValues", "text"]


class LuaValues:
    """The conversions of one Lua runtime.

    Parameters
    ----------
    lua : lupa.lua53.LuaRuntime
        The runtime, before any script runs (its ``tostring``, ``tonumber`` and ``type``
        are kept as they are then).

    Attributes
    ----------
    tostring, tonumber, lua_type : callable
        Lua's ``tostring``, ``tonumber`` and ``type`` (``type`` answers bytes:
        ``b"table"``, ``b"nil"``...).
    """

    def __init__(self, lua: Any) -> None:
        self.lua = lua
        g = lua.globals()
        self.tostring = g.tostring
        self.tonumber = g.tonumber
        self.lua_type = g.type
        self._pairs_list = lua.eval("function(t) local k, v = {}, {} for a, b in pairs(t) do "
                                    "k[#k + 1] = a v[#v + 1] = b end return k, v end")

    def to_lua(self, value: Any) -> Any:  # noqa: C901
        """A Python JSON-like value as a Lua value (strings as Lua strings, numbers as floats,
        dicts and lists as tables, ``None`` as ``nil``), as Orthanc 1.10.1's ``PushJson``."""
        if value is None or isinstance(value, bool):
            return value
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, int):
            return float(value)  # as Orthanc 1.10.1, JSON numbers reach Lua as floats (print shows 1.0)
        if isinstance(value, (bytes, float)):
            return value
        if isinstance(value, Mapping):
            t = self.lua.table()
            for k, v in value.items():
                if v is not None:
                    t[k.encode("utf-8") if isinstance(k, str) else k] = self.to_lua(v)
            return t
        if isinstance(value, (list, tuple)):
            t = self.lua.table()
            for i, v in enumerate(value, 1):
                if v is not None:
                    t[i] = self.to_lua(v)
            return t
        if _lupa_table(value):
            return value
        return value

    def to_json(self, value: Any, keep_strings: bool = False) -> Any:
        """A Lua value as JSON-like Python, as Orthanc's ``LuaContext::GetJson``.

        Tables whose keys are exactly 1..n are arrays (an empty table is ``[]``); with
        ``keep_strings`` false, numeric strings become numbers, and integral numbers
        integers; with ``keep_strings`` true, numbers become strings.
        """
        kind = self.lua_type(value)
        if kind == b"table":
            keys, values = self._pairs_list(value)
            n = len(keys)
            items = [(keys[i], values[i]) for i in range(1, n + 1)]
            names = [text(self.tostring(k)) for k, _ in items]
            if all(name.isdigit() and int(name) == i for i, name in enumerate(names, 1)):
                ordered = sorted(zip(names, items), key=lambda p: int(p[0]))
                return [self.to_json(v, keep_strings) for _, (_, v) in ordered]
            return {name: self.to_json(v, keep_strings) for name, (_, v) in zip(names, items)}
        if kind == b"nil":
            return None
        if kind == b"boolean":
            return bool(value)
        if not keep_strings and kind in (b"number", b"string"):
            number = self.tonumber(value)
            if number is not None:
                if isinstance(number, int) or (math.isfinite(number) and number == int(number)
                                               and abs(number) < 2 ** 31):
                    return int(number)
                return float(number)
        if kind in (b"number", b"string"):
            return text(self.tostring(value))
        log.warning("Unsupported Lua type when returning Json")
        return None


def _lupa_table(value: Any) -> bool:
    return type(value).__name__ == "_LuaTable"


def text(value: Any) -> str:
    """A Lua string (bytes, decoded as UTF-8 with replacement) or any other value as text.

    Returns
    -------
    str
    """
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)
