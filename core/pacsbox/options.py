"""Configuration options: their kinds, the checks of a value against its kind, and the
declarations plugins make with the ``register_options`` hook (:class:`OptionSpec`).

The core declares its own options in :data:`CORE_OPTION_KINDS` (defaults in
:data:`pacsbox.config.DEFAULTS`) and checks them with :func:`validate_core_options`; a
plugin's declarations are recorded and checked by :class:`pacsbox.config.Config`
(``declare``, ``validate_declared``). Every refusal is a :class:`~pacsbox.ConfigError`
naming the option, its value and what is expected, as ``pacsbox serve`` prints it (exit
status 2).

Source: Orthanc Book "Configuration"; ``shared/reference/rest-api.md`` Appendix D.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .config import Config


#: The kind of each core option, checked at start-up by :func:`validate_core_options`.
#: Kinds (also the ``type`` of an :class:`OptionSpec`): ``bool``, ``int>=0``, ``int>0``,
#: ``int[A..B]`` (an integer from A to B), ``number>=0`` (an integer or a decimal number),
#: ``port``, ``aet``, ``str``, ``dict``, ``list``, ``list[str]``, ``str|list[str]`` (one
#: string or an array of strings), ``dir`` (a folder whose parent exists) and ``any`` (not
#: checked); a trailing ``?`` accepts null too (``bool?``, ``str?``).
CORE_OPTION_KINDS: dict[str, str] = {
    "Name": "str", "StorageDirectory": "dir", "IndexDirectory": "dir?", "StorageCompression": "bool",
    "MaximumStorageSize": "int>=0", "MaximumPatientCount": "int>=0", "HttpServerEnabled": "bool",
    "HttpPort": "port", "HttpBindAddress": "str", "HttpThreadsCount": "int>0", "HttpDescribeErrors": "bool",
    "HttpCompressionEnabled": "bool", "HttpTimeout": "int>=0", "HttpRequestTimeout": "int>=0",
    "KeepAlive": "bool", "RemoteAccessAllowed": "bool", "AuthenticationEnabled": "bool?",
    "RegisteredUsers": "dict", "DicomServerEnabled": "bool", "DicomAet": "aet", "DicomPort": "port",
    "DicomCheckCalledAet": "bool", "DicomModalities": "dict", "OrthancPeers": "dict", "StableAge": "int>=0",
    "OverwriteInstances": "bool", "StoreMD5ForAttachments": "bool", "SyncStorageArea": "bool",
    "DefaultEncoding": "str", "CaseSensitivePN": "bool", "LimitFindResults": "int>=0",
    "LimitFindInstances": "int>=0", "LogExportedResources": "bool", "ConcurrentJobs": "int>=0",
    "JobsHistorySize": "int>=0", "SaveJobs": "bool", "MetricsEnabled": "bool",
    "DeidentifyLogs": "bool", "DefaultPrivateCreator": "str", "Dictionary": "dict", "Plugins": "list",
    "MaximumUploadSize": "int>=0", "MaximumZipMemberSize": "int>=0", "MaximumZipMembers": "int>=0",
    "MaximumZipRatio": "int>=0", "UploadSpoolThreshold": "int>=0",
    "MaximumFormParts": "int>=0", "MaximumFormPartSize": "int>=0",
}  # PluginsBlocklist (a list, or a comma-separated string) is checked by pacsbox.plugins.blocklist

_EXPECTED = {
    "bool": "true or false", "int>=0": "an integer >= 0", "int>0": "an integer > 0",
    "number>=0": "a number >= 0", "port": "a TCP port number (1-65535)",
    "aet": "an AET: a string of 1 to 16 characters", "str": "a string", "dict": "a JSON object",
    "list": "a JSON array", "list[str]": "a JSON array of strings",
    "str|list[str]": "a string or a JSON array of strings", "dir": "a folder path (a string)",
}
_NULLABLE_EXPECTED = {"bool": "true, false or null", "dir": "a folder path (a string) or null"}
_RANGE = re.compile(r"int\[(-?\d+)\.\.(-?\d+)\]")


def expected(kind: str) -> str:
    """What a kind of option accepts, in words (``"an integer >= 0"``).

    Raises
    ------
    ValueError
        An unknown kind.
    """
    base = kind[:-1] if kind.endswith("?") else kind
    m = _RANGE.fullmatch(base)
    if m:
        text = f"an integer in {m.group(1)}-{m.group(2)}"
    elif base == "any":
        text = "anything"
    elif base in _EXPECTED:
        text = _EXPECTED[base]
    else:
        raise ValueError(f"unknown option kind {kind!r}")
    if kind.endswith("?"):
        return _NULLABLE_EXPECTED.get(base, text + " or null")
    return text


def _integer(value: Any) -> int | None:
    """An integer, or a string of digits (environment substitution), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None


def normalized(value: Any, kind: str) -> Any:
    """``value`` of a checked option as its kind's Python type: the strings that environment
    substitution produces (``"8043"``, ``"true"``) become the int or bool they spell.

    Parameters
    ----------
    value : any
        A value :func:`check_option` accepted for ``kind``.
    kind : str

    Returns
    -------
    any
    """
    base = kind[:-1] if kind.endswith("?") else kind
    if isinstance(value, str):
        if base == "bool":
            return value.strip().lower() == "true"
        if base in ("int>=0", "int>0", "port", "number>=0") or _RANGE.fullmatch(base):
            return int(value)
    return value


def check_option(name: str, value: Any, kind: str, base_dir: str | os.PathLike | None = None) -> None:
    """Check one option's value against its kind.

    Parameters
    ----------
    name : str
        The option's name (for the message).
    value : any
        The configured value.
    kind : str
        One of the kinds of :data:`CORE_OPTION_KINDS`. Integers may be given as strings
        of digits and booleans as the strings ``"true"``/``"false"`` (what environment
        substitution produces); anything else of the wrong type is refused.
    base_dir : path-like, optional
        Folder against which a relative ``dir`` is resolved.

    Raises
    ------
    ConfigError
        The value does not fit; the message names the option, the value and what is
        expected.
    """
    def bad(what: str | None = None) -> ConfigError:
        return ConfigError(f"option {name}: {json.dumps(value, default=str)} is not {what or expected(message_kind)}")

    if kind.endswith("?"):
        if value is None:
            return
        message_kind, kind = kind, kind[:-1]
    else:
        message_kind = kind
    if kind == "any":
        return
    if kind == "bool":
        if isinstance(value, bool) or (isinstance(value, str) and value.strip().lower() in ("true", "false")):
            return
        raise bad()
    m = _RANGE.fullmatch(kind)
    if kind in ("int>=0", "int>0", "port") or m:
        number = _integer(value)
        if number is None or (kind == "int>=0" and number < 0) or (kind == "int>0" and number <= 0) \
                or (kind == "port" and not 0 < number < 65536) \
                or (m is not None and not int(m.group(1)) <= number <= int(m.group(2))):
            raise bad()
        return
    if kind == "number>=0":
        if _integer(value) is not None and _integer(value) >= 0:
            return
        if isinstance(value, float) and value >= 0:
            return
        raise bad()
    if kind == "aet":
        if not isinstance(value, str) or not value.strip() or len(value) > 16:
            raise bad()
        return
    if kind == "str":
        if not isinstance(value, str):
            raise bad()
        return
    if kind == "dict":
        if not isinstance(value, dict):
            raise bad()
        return
    if kind in ("list", "list[str]", "str|list[str]"):
        if kind == "str|list[str]" and isinstance(value, str):
            return
        if not isinstance(value, list) or (kind != "list" and not all(isinstance(v, str) for v in value)):
            raise bad()
        return
    if kind == "dir":
        if not isinstance(value, str) or not value:
            raise bad()
        p = Path(value)
        if not p.is_absolute():
            p = Path(base_dir or os.getcwd()) / p
        if p.exists():
            if not p.is_dir():
                raise bad("a folder (it is a file)")
            return
        if not p.parent.is_dir():
            raise ConfigError(f"option {name}: {json.dumps(value)}: the parent folder {str(p.parent)!r} does not "
                              f"exist (pacsbox creates the folder itself, not its parents)")
        return
    raise ValueError(f"unknown option kind {kind!r}")  # pragma: no cover - a programming error


@dataclass(frozen=True)
class OptionSpec:
    """Declaration of one top-level configuration option, returned by a plugin's
    ``register_options`` hook (after pytest's ``pytest_addoption``).

    The core checks the user's value against ``type`` before ``configure`` runs, refusing a
    malformed one with a :class:`ConfigError` naming the option, the value, what is
    expected and the plugin; it fills in ``default`` when the user gave none (so that
    ``ctx.config["MyOption"]`` always answers); ``pacsbox plugins`` and the OpenAPI
    document list the declaration.

    Parameters
    ----------
    name : str
        The top-level option name (``"CreateDicomMaximumSize"``), or the name of the
        plugin's own section (``"Metrics"``, with ``type="dict"``).
    type : str
        Its kind: ``bool``, ``int>=0``, ``int>0``, ``int[A..B]``, ``number>=0``, ``port``,
        ``aet``, ``str``, ``dict``, ``list``, ``list[str]``, ``str|list[str]``, ``dir``,
        ``any``; a trailing ``?`` accepts null (see :data:`CORE_OPTION_KINDS`). Strings of
        digits and ``"true"``/``"false"`` are accepted for numbers and booleans and turned
        into them.
    default : any
        The value when the option is not set.
    doc : str
        One sentence for operators (units included).
    check : callable, optional
        ``check(value)``, called on a set value after the type check, for what a kind
        cannot say (a section's keys, a choice among names); raises :class:`ConfigError`
        naming the option, the value and what is expected.
    plugin : str
        The declaring plugin (filled in by the core).

    Raises
    ------
    ValueError
        ``type`` is not a known kind.
    """

    name: str
    type: str
    default: Any = None
    doc: str = ""
    check: Callable[[Any], None] | None = field(default=None, compare=False, repr=False)
    plugin: str = ""

    def __post_init__(self) -> None:
        expected(self.type)  # an unknown kind is a programming error, found at declaration

    def describe(self) -> dict[str, Any]:
        """dict: ``Name``, ``Type``, ``Default``, ``Doc``, ``Plugin`` (what the listings show)."""
        return {"Name": self.name, "Type": self.type, "Default": self.default, "Doc": self.doc,
                "Plugin": self.plugin}


def validate_core_options(config: "Config") -> None:
    """Check every core option the user set (:data:`CORE_OPTION_KINDS`).

    Plugins declare theirs with the ``register_options`` hook; the core checks them with
    :meth:`Config.validate_declared`. A checked value given as a string of digits or
    ``"true"``/``"false"`` is kept as the int or bool it spells.

    Parameters
    ----------
    config : Config

    Raises
    ------
    ConfigError
        The first malformed option, named with its value and what is expected.
    """
    for name, kind in CORE_OPTION_KINDS.items():
        if config.is_set(name):
            check_option(name, config[name], kind, config.base_dir)
            config._values[name] = normalized(config[name], kind)


def declarer(spec: OptionSpec) -> str:
    """str: who declared ``spec``, for messages (``"plugin 'dicom_net'"``, ``"the core"``)."""
    return spec.plugin if spec.plugin == "the core" else f"plugin {spec.plugin!r}"
