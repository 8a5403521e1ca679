"""Orthanc-style JSON configuration, with comments, defaults and no module globals.

The file format is Orthanc's: a JSON object whose keys are Orthanc's option names
(``HttpPort``, ``DicomAet``, ``ConcurrentJobs``...), with ``//`` and ``/* */`` comments
allowed. A directory argument merges every ``*.json`` in it, in name order. Unknown
options are kept: plugins read them with :meth:`Config.get` or
:meth:`Config.plugin_config`.

Source: Orthanc Book "Configuration"; ``shared/reference/rest-api.md`` Appendix D.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError
from .options import CORE_OPTION_KINDS, OptionSpec, check_option, declarer, normalized

#: pacsbox's defaults: Orthanc 1.10.1's defaults, except where a pacsbox default is stated
#: (HTTP on 127.0.0.1:8042, DICOM AET ``PACSBOX``, data in ``./pacsbox-data``).
DEFAULTS: dict[str, Any] = {
    "Name": "pacsbox",
    "StorageDirectory": "pacsbox-data",
    "IndexDirectory": None,          # None: same as StorageDirectory
    "StorageCompression": False,
    "MaximumStorageSize": 0,
    "MaximumPatientCount": 0,
    "HttpServerEnabled": True,
    "HttpPort": 8042,
    "HttpBindAddress": "127.0.0.1",   # pacsbox option; Orthanc binds all interfaces
    "HttpThreadsCount": 50,
    "HttpDescribeErrors": True,
    "HttpCompressionEnabled": False,
    "HttpTimeout": 60,
    "HttpRequestTimeout": 30,
    "KeepAlive": True,
    "RemoteAccessAllowed": False,
    "AuthenticationEnabled": None,    # None: true iff RemoteAccessAllowed
    "RegisteredUsers": {},
    "DicomServerEnabled": True,
    "DicomAet": "PACSBOX",
    "DicomPort": 4242,
    "DicomCheckCalledAet": False,
    "DicomModalities": {},
    "OrthancPeers": {},
    "StableAge": 60,
    "OverwriteInstances": False,
    "StoreMD5ForAttachments": True,
    "SyncStorageArea": True,
    "DefaultEncoding": "Latin1",
    "CaseSensitivePN": False,
    "LimitFindResults": 0,
    "LimitFindInstances": 0,
    "LogExportedResources": False,
    "ConcurrentJobs": 2,
    "JobsHistorySize": 10,
    "SaveJobs": True,
    "MetricsEnabled": True,
    "DeidentifyLogs": True,
    "DefaultPrivateCreator": "",
    "Dictionary": {},
    "Plugins": [],
    "PluginsBlocklist": [],           # pacsbox option: entry-point names not to load
    "MaximumUploadSize": 0,           # pacsbox option: MB per request body (0: no limit)
    "MaximumZipMemberSize": 1024,     # pacsbox option: MB per member of an uploaded ZIP
    "MaximumZipMembers": 100000,      # pacsbox option: members of an uploaded ZIP
    "MaximumZipRatio": 200,           # pacsbox option: inflated/compressed size of a ZIP member
    "UploadSpoolThreshold": 2,        # pacsbox option: MB of a request body held in memory (larger: temp file)
    "MaximumFormParts": 1000,         # pacsbox option: parts of a multipart/form-data upload
    "MaximumFormPartSize": 1024,      # pacsbox option: MB per part (file) of a multipart/form-data upload
}

#: Options the core reads beyond :data:`DEFAULTS` (no default value of their own).
CORE_EXTRA_OPTIONS = ("UserMetadata", "UserContentType", "MaximumStorageMode")

#: Environment variable holding a comma-separated blocklist of plugin names.
BLOCKLIST_ENV = "PACSBOX_DISABLE_PLUGINS"


def strip_json_comments(text: str) -> str:
    """Remove ``//`` and ``/* */`` comments outside JSON strings, keeping line numbers.

    Parameters
    ----------
    text : str
        The raw configuration text.

    Returns
    -------
    str
        The same text with comments replaced by spaces (newlines kept, so that
        :class:`json.JSONDecodeError` line numbers still point into the original file).
    """
    out: list[str] = []
    i, n = 0, len(text)
    in_str = False
    while i < n:
        c = text[i]
        if in_str:
            out.append(c)
            if c == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if c == '"':
                in_str = False
            i += 1
        elif c == '"':
            in_str = True
            out.append(c)
            i += 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("".join(ch if ch == "\n" else " " for ch in text[i:j]))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_config_text(text: str, source: str = "<config>") -> dict[str, Any]:
    """Parse one Orthanc-style JSON configuration text.

    Parameters
    ----------
    text : str
        JSON with optional comments.
    source : str
        Name used in error messages (the file path).

    Returns
    -------
    dict
        The top-level object.

    Raises
    ------
    ConfigError
        When the text is not valid JSON (the message names the source, line and column)
        or its top level is not an object.
    """
    try:
        data = json.loads(strip_json_comments(text))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{source}: line {e.lineno}, column {e.colno}: {e.msg}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the configuration must be a JSON object")
    return data


def load_config_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a configuration file, or every ``*.json`` of a directory merged in name order.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    dict

    Raises
    ------
    ConfigError
        Unreadable file or invalid JSON (with the line number).
    """
    p = Path(path)
    files = sorted(p.glob("*.json")) if p.is_dir() else [p]
    merged: dict[str, Any] = {}
    for f in files:
        try:
            raw = f.read_bytes()
        except OSError as e:
            raise ConfigError(f"{f}: cannot read the configuration file: {e.strerror}") from None
        merged.update(parse_config_text(decode_config_bytes(raw, str(f)), str(f)))
    return merged


def decode_config_bytes(raw: bytes, source: str = "<config>") -> str:
    """Decode a configuration file: UTF-8, with or without a byte-order mark.

    Parameters
    ----------
    raw : bytes
        The file's content.
    source : str
        Name used in error messages (the file path).

    Returns
    -------
    str
        The text, without a UTF-8 byte-order mark.

    Raises
    ------
    ConfigError
        The file starts with a UTF-16 or UTF-32 byte-order mark, or is not valid UTF-8
        (the message gives the offset of the first bad byte).
    """
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    for bom, name in ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"),
                      (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):
        if raw.startswith(bom):
            raise ConfigError(f"{source}: the file is encoded in {name} (byte-order mark {bom.hex(' ')}); "
                              f"a configuration file must be UTF-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise ConfigError(f"{source}: line {line}: byte 0x{raw[e.start]:02x} at offset {e.start} is not "
                          f"UTF-8; a configuration file must be UTF-8") from None


class Config(Mapping[str, Any]):
    """Typed, read-only view of the Orthanc-style configuration.

    Parameters
    ----------
    values : mapping, optional
        Options given by the user; missing options take :data:`DEFAULTS`.
    base_dir : path-like, optional
        Directory against which relative paths (``StorageDirectory``) are resolved;
        defaults to the current directory.

    Notes
    -----
    Unknown options are kept and returned by :meth:`get` and :meth:`plugin_config`.
    """

    def __init__(self, values: Mapping[str, Any] | None = None, *, base_dir: str | os.PathLike | None = None):
        self._values = dict(DEFAULTS)
        self._user = dict(values or {})
        self._values.update(self._user)
        self.base_dir = Path(base_dir or os.getcwd())
        self._declared: set[str] = set(DEFAULTS) | set(CORE_EXTRA_OPTIONS)
        self._specs: dict[str, OptionSpec] = {}
        self._declarations: list[OptionSpec] = []

    def declare(self, spec: OptionSpec) -> None:
        """Record a plugin's option declaration (the core calls it for ``register_options``).

        The default fills in the option when the user gave none. The same name declared
        again with the same type and default (by the core or another plugin: dicom_net
        and the core both read ``DicomAet``) is accepted; the first declaration is kept.

        Parameters
        ----------
        spec : OptionSpec

        Raises
        ------
        ValueError
            The name is declared already with another type or default; the message names
            both declarers.
        """
        if spec.name in CORE_OPTION_KINDS:
            prev = OptionSpec(spec.name, CORE_OPTION_KINDS[spec.name], DEFAULTS.get(spec.name), plugin="the core")
        else:
            prev = self._specs.get(spec.name)
        if prev is not None and (prev.type, prev.default) != (spec.type, spec.default):
            raise ValueError(f"option {spec.name!r} is declared by {declarer(prev)} as {prev.type} (default "
                             f"{json.dumps(prev.default, default=str)}) and by {declarer(spec)} as {spec.type} "
                             f"(default {json.dumps(spec.default, default=str)})")
        self._declarations.append(spec)
        if prev is not None:
            return
        self._specs[spec.name] = spec
        self._declared.add(spec.name)
        if spec.name not in self._values:
            self._values[spec.name] = spec.default

    def validate_declared(self) -> None:
        """Check every declared plugin option the user set, as its declaration says.

        A value given as a string of digits or ``"true"``/``"false"`` is kept as the int
        or bool it spells.

        Raises
        ------
        ConfigError
            The first malformed option: ``option DicomScuTimeout: -1 is not an integer >= 0
            (plugin 'dicom_net')``.
        """
        for name, spec in self._specs.items():
            if not self.is_set(name):
                continue
            try:
                check_option(name, self._values[name], spec.type, self.base_dir)
                self._values[name] = normalized(self._values[name], spec.type)
                if spec.check is not None:
                    spec.check(self._values[name])
            except ConfigError as e:
                raise ConfigError(f"{e} ({declarer(spec)})") from None

    def option_specs(self) -> list[OptionSpec]:
        """Every declaration made through ``register_options``, in declaration order
        (an option two plugins read appears once for each).

        Returns
        -------
        list of OptionSpec
        """
        return list(self._declarations)

    def declare_options(self, names) -> None:
        """Declare option names a plugin reads, without a type or default (prefer the
        ``register_options`` hook, which also checks them; this remains for ``configure``).

        A top-level option that neither the core nor any loaded plugin declares is kept
        (plugins may still read it), but the start-up logs a warning naming the closest
        declared name (:meth:`unknown_options`).

        Parameters
        ----------
        names : iterable of str
            Top-level option names, e.g. ``["DicomScuTimeout", "DicomModalities"]``.
        """
        if isinstance(names, str):
            names = [names]
        self._declared.update(str(n) for n in names)

    def unknown_options(self) -> list[tuple[str, str | None]]:
        """The options the user set that no one declared, with the closest declared name.

        Returns
        -------
        list of (str, str or None)
            ``(name, suggestion)`` in the file's order; ``suggestion`` is the declared
            name closest to ``name`` (:func:`difflib.get_close_matches`, case-insensitive),
            or None.
        """
        import difflib
        declared = sorted(self._declared)
        lower = {n.lower(): n for n in declared}
        out = []
        for name in self._user:
            if name in self._declared:
                continue
            match = difflib.get_close_matches(str(name).lower(), list(lower), n=1, cutoff=0.6)
            out.append((name, lower[match[0]] if match else None))
        return out

    @classmethod
    def from_file(cls, path: str | os.PathLike | None) -> "Config":
        """Build a :class:`Config` from a file or directory (or the defaults when None).

        Raises
        ------
        ConfigError
            See :func:`load_config_file`.
        """
        if path is None:
            return cls({})
        return cls(load_config_file(path), base_dir=os.getcwd())

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def is_set(self, key: str) -> bool:
        """bool: whether the user's configuration gave ``key`` explicitly."""
        return key in self._user

    def plugin_config(self, name: str, default: Any = None) -> Any:
        """The configuration section of a plugin (an unknown top-level option).

        Parameters
        ----------
        name : str
            The section name, e.g. ``"Archive"`` or a third-party plugin's own key.
        default : any
            Returned when the section is absent.
        """
        return self._values.get(name, default)

    def path(self, key: str) -> Path:
        """An option holding a path, resolved against :attr:`base_dir`."""
        value = self._values.get(key)
        if key == "IndexDirectory" and not value:
            value = self._values["StorageDirectory"]
        p = Path(value)
        return p if p.is_absolute() else self.base_dir / p

    def int(self, key: str) -> int:
        """An integer option (numeric strings accepted)."""
        return int(self._values[key])

    def bool(self, key: str) -> bool:
        """A boolean option (``"true"``/``"false"`` strings accepted)."""
        v = self._values[key]
        if isinstance(v, str):
            return v.strip().lower() in ("1", "true", "yes", "on")
        return bool(v)

    @property
    def authentication_enabled(self) -> bool:
        """bool: ``AuthenticationEnabled`` if set, else true iff ``RemoteAccessAllowed``."""
        v = self._values.get("AuthenticationEnabled")
        if v is None:
            return self.bool("RemoteAccessAllowed")
        return bool(v)

    def with_overrides(self, **overrides: Any) -> "Config":
        """A copy with some options replaced (used by tests and the CLI)."""
        merged = dict(self._user)
        merged.update(overrides)
        return Config(merged, base_dir=self.base_dir)

    def as_dict(self) -> dict[str, Any]:
        """dict: every option, defaults included."""
        return dict(self._values)
