"""The ``OrthancPeers`` configuration: parsing, the run-time registry and the HTTP client.

Both forms of Orthanc's option are accepted (reference section 10.1)::

    "OrthancPeers" : {
      "short" : [ "http://127.0.0.1:8043/" ],
      "creds" : [ "http://127.0.0.1:8043/", "alice", "secret" ],
      "long"  : { "Url": "http://127.0.0.1:8043/", "Username": "alice", "Password": "secret",
                  "HttpHeaders": { "Token": "abc" }, "CertificateFile": "client.crt",
                  "CertificateKeyFile": "client.key", "CertificateKeyPassword": "pw",
                  "Pkcs11": false, "Timeout": 0 }
    }

The registry (:class:`PeerRegistry`, reached with :func:`peer_registry`) is what the REST
routes, the ``OrthancPeerStore`` job and the transfers accelerator share. With
``OrthancPeersInDatabase: true`` the peers live in the index (global property
``pacsbox_dicom_net.peers``), so that ``PUT``/``DELETE /peers/{id}`` survive a restart; the
configured peers seed it on the first start, as Orthanc does.

:func:`http_session` builds the ``requests.Session`` used toward one peer: pooled
connections, the peer's credentials and headers, and the global HTTP client options
``HttpsVerifyPeers``, ``HttpsCACertificates``, ``HttpProxy``; :func:`peer_timeout` gives
the timeout (``Timeout`` of the peer, else ``HttpTimeout``).

Source: Orthanc 1.10.1 ``WebServiceParameters``, ``HttpClient``; reference section 10.
"""
from __future__ import annotations

import json
import os
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import requests
from requests.adapters import HTTPAdapter

from pacsbox import ConfigError

#: Global property holding the peers when ``OrthancPeersInDatabase`` is true.
DB_PROPERTY = "pacsbox_dicom_net.peers"
#: Key of the peer registry in ``plugin_state(ctx).extra``.
EXTRA_KEY = "peers"
#: Keys of the object form that are not user properties.
_RESERVED = ("Url", "URL", "Username", "Password", "HttpHeaders", "CertificateFile", "CertificateKeyFile",
             "CertificateKeyPassword", "Pkcs11", "Timeout")


class PeerConfigError(ValueError):
    """A peer definition is malformed; the message says which peer, which field and why.

    Attributes
    ----------
    detail : str
        The message without the peer's name (the ``Details`` of ``PUT /peers/{id}``).
    """

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail if detail is not None else message


@dataclass(frozen=True)
class Peer:
    """One remote Orthanc-compatible server (an entry of ``OrthancPeers``).

    Attributes
    ----------
    url : str
        Base URL of its REST API, ``http://`` or ``https://``, always ending in ``/``.
    username : str
        HTTP Basic user name; empty means no credentials.
    password : str
        HTTP Basic password (only meaningful with ``username``).
    http_headers : dict of str to str
        Extra headers sent with every request (``HttpHeaders``).
    certificate_file : str
        Client certificate (PEM) for HTTPS, empty if none (``CertificateFile``).
    certificate_key_file : str
        Private key of the client certificate (``CertificateKeyFile``).
    certificate_key_password : str
        Password of that key, empty if none (``CertificateKeyPassword``).
    pkcs11 : bool
        ``Pkcs11``: the client key is on a PKCS#11 token (not supported by pacsbox; always
        false on a valid peer).
    timeout : int
        Timeout in seconds of requests to this peer; 0 means ``HttpTimeout``.
    user_properties : dict of str to str
        Other fields of the object form (strings, or numbers turned into strings), kept and
        shown as Orthanc does.
    """

    url: str
    username: str = ""
    password: str = ""
    http_headers: Mapping[str, str] = field(default_factory=dict)
    certificate_file: str = ""
    certificate_key_file: str = ""
    certificate_key_password: str = ""
    pkcs11: bool = False
    timeout: int = 0
    user_properties: Mapping[str, str] = field(default_factory=dict)

    def public_json(self) -> dict[str, Any]:
        """The public configuration that ``GET /peers?expand`` and
        ``/peers/{id}/configuration`` answer: secrets hidden (header names only,
        ``Password: null`` when credentials are set, ``Username``/``Password`` absent
        otherwise; ``CertificateKeyFile``/``CertificateKeyPassword`` null).

        Returns
        -------
        dict
            Keys sorted, as Orthanc 1.10.1 prints them (``WebServiceParameters::FormatPublic``).
        """
        out: dict[str, Any] = {"Url": self.url, "Pkcs11": self.pkcs11, "Timeout": self.timeout,
                               "HttpHeaders": sorted(self.http_headers)}
        if self.username:
            out["Username"] = self.username
            out["Password"] = None
        if self.certificate_file:
            out["CertificateFile"] = self.certificate_file
            out["CertificateKeyFile"] = None
            out["CertificateKeyPassword"] = None
        out.update(self.user_properties)
        return dict(sorted(out.items()))

    def full_json(self) -> dict[str, Any]:
        """Every field, secrets included, in the object form (what the index keeps
        when ``OrthancPeersInDatabase`` is true)."""
        out: dict[str, Any] = {"Url": self.url, "Pkcs11": self.pkcs11, "Timeout": self.timeout,
                               "HttpHeaders": dict(self.http_headers)}
        if self.username:
            out["Username"] = self.username
            out["Password"] = self.password
        if self.certificate_file:
            out["CertificateFile"] = self.certificate_file
            out["CertificateKeyFile"] = self.certificate_key_file
            if self.certificate_key_password:
                out["CertificateKeyPassword"] = self.certificate_key_password
        out.update(self.user_properties)
        return out


def _url(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise PeerConfigError(f"peer {name!r}: Url must be a string, not {value!r}", "Url must be a string")
    if not value:
        raise PeerConfigError(f"peer {name!r}: empty Url", "Empty URL")
    if not (value.startswith("http://") or value.startswith("https://")):
        raise PeerConfigError(f"peer {name!r}: bad URL {value!r} (it must start with http:// or https://)",
                              f"Bad URL: {value}")
    return value if value.endswith("/") else value + "/"


def _string(value: Any, name: str, field_name: str) -> str:
    if not isinstance(value, str):
        raise PeerConfigError(f"peer {name!r}: {field_name} must be a string, not {value!r}")
    return value


def parse_peer(name: str, value: Any, *, base_dir: str | os.PathLike | None = None, check_files: bool = True) -> Peer:
    """Read one peer definition, in the array or the object form.

    Parameters
    ----------
    name : str
        Its symbolic name (the JSON key), used in error messages.
    value : list or dict
        ``[Url]``, ``[Url, Username, Password]``, or an object with ``Url`` (or ``URL``),
        ``Username``, ``Password``, ``HttpHeaders`` (object of strings), ``CertificateFile``,
        ``CertificateKeyFile``, ``CertificateKeyPassword``, ``Pkcs11`` (bool), ``Timeout``
        (seconds, integer >= 0) and other string fields (user properties).
    base_dir : path-like, optional
        Directory against which relative certificate paths are checked.
    check_files : bool
        Check that the certificate files exist (true for the configuration and ``PUT``;
        false for peers read back from the index or from a saved job).

    Returns
    -------
    Peer

    Raises
    ------
    PeerConfigError
        A field is missing, of the wrong type or out of range, a certificate file does
        not exist, or ``Pkcs11`` is true (the message names the field).
    """
    if isinstance(value, list):
        if len(value) not in (1, 3) or not all(isinstance(v, str) for v in value):
            raise PeerConfigError(f"peer {name!r}: the array form is [Url] or [Url, Username, Password] (strings)")
        url = _url(value[0], name)
        if len(value) == 3:
            return Peer(url, value[1], value[2])
        return Peer(url)
    if not isinstance(value, Mapping):
        raise PeerConfigError(f"peer {name!r}: expected an array or an object, not {type(value).__name__}")
    if "Url" in value:
        url = _url(value["Url"], name)
    elif "URL" in value:
        url = _url(value["URL"], name)
    else:
        raise PeerConfigError(f"peer {name!r}: the object form needs the field Url", "Empty URL")
    username = _string(value.get("Username", ""), name, "Username")
    password = _string(value.get("Password", ""), name, "Password")
    if password and not username:
        raise PeerConfigError(f"peer {name!r}: Password given without Username")
    headers = value.get("HttpHeaders", {})
    if not isinstance(headers, Mapping) or not all(isinstance(v, str) for v in headers.values()):
        raise PeerConfigError(f"peer {name!r}: HttpHeaders must be an object of strings, not {headers!r}")
    cert = _string(value.get("CertificateFile", ""), name, "CertificateFile")
    key = _string(value.get("CertificateKeyFile", ""), name, "CertificateKeyFile")
    key_pw = _string(value.get("CertificateKeyPassword", ""), name, "CertificateKeyPassword")
    if key and not cert:
        raise PeerConfigError(f"peer {name!r}: CertificateKeyFile given without CertificateFile")
    if cert and check_files:
        for field_name, path in (("CertificateFile", cert), ("CertificateKeyFile", key)):
            if not path:
                continue
            full = path if os.path.isabs(path) or base_dir is None else os.path.join(base_dir, path)
            if not os.path.isfile(full):
                raise PeerConfigError(f"peer {name!r}: {field_name} {path!r} is not a file")
    pkcs11 = value.get("Pkcs11", False)
    if not isinstance(pkcs11, bool):
        raise PeerConfigError(f"peer {name!r}: Pkcs11 must be true or false, not {pkcs11!r}")
    if pkcs11:
        raise PeerConfigError(f"peer {name!r}: Pkcs11 is not supported by pacsbox")
    timeout = value.get("Timeout", 0)
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        raise PeerConfigError(f"peer {name!r}: Timeout must be a number of seconds >= 0, not {timeout!r}")
    extra = {}
    for k, v in value.items():
        if k not in _RESERVED:
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise PeerConfigError(f"peer {name!r}: the user property {k} must be a string or a number, "
                                      f"not {v!r}")
            extra[str(k)] = v if isinstance(v, str) else json.dumps(v)
    return Peer(url, username, password, dict(headers), cert, key, key_pw, pkcs11, timeout, extra)


def parse_peers(value: Any, *, base_dir: str | os.PathLike | None = None) -> dict[str, Peer]:
    """Read the whole ``OrthancPeers`` option.

    Parameters
    ----------
    value : dict or None
        Symbolic name to definition (see :func:`parse_peer`).
    base_dir : path-like, optional
        Directory of relative certificate paths.

    Returns
    -------
    dict of str to Peer

    Raises
    ------
    PeerConfigError
        The option is not an object, or one definition is malformed.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise PeerConfigError("OrthancPeers must be an object of symbolic name -> peer")
    return {str(n): parse_peer(str(n), v, base_dir=base_dir) for n, v in value.items()}


#: Options read here -> (default, kind, doc): Orthanc's HTTP client options,
#: ``OrthancPeersInDatabase``, and pacsbox's ``OrthancPeerStoreConcurrency`` (uploads in
#: flight per peer-store job; 8 measured 1.5x faster than 4 through a link of 20 ms round
#: trip) and ``OrthancPeerStoreRetries`` (retries of a transient upload error). The plugin
#: declares them with ``register_options``: the core checks the kinds at start-up.
HTTP_OPTIONS: dict[str, tuple[Any, str, str]] = {
    "HttpTimeout": (60, "int>=0", "Seconds an HTTP request to a peer may take (0: no limit)"),
    "HttpsVerifyPeers": (True, "bool", "Verify the HTTPS certificates of the Orthanc peers"),
    "HttpsCACertificates": ("", "str", "PEM bundle of the authorities trusted for HTTPS peers (\"\": the system's)"),
    "HttpProxy": ("", "str", "Proxy URL of the requests to the peers (\"\": none)"),
    "OrthancPeersInDatabase": (False, "bool", "Keep the peers in the index (edited through /peers), not the file"),
    "OrthancPeerStoreConcurrency": (4, "int[1..64]", "Uploads in flight per /peers/{id}/store job"),
    "OrthancPeerStoreRetries": (3, "int[0..20]", "Retries of an upload to a peer after a transient error"),
}


def check_config(config: Mapping[str, Any]) -> None:
    """Check ``OrthancPeers`` at start-up (the kinds of the :data:`HTTP_OPTIONS` are the
    core's to check).

    Parameters
    ----------
    config : pacsbox.Config or mapping
        The app's configuration.

    Raises
    ------
    pacsbox.ConfigError
        A malformed peer; the message names ``OrthancPeers`` and the peer.
    """
    try:
        parse_peers(config.get("OrthancPeers", {}), base_dir=getattr(config, "base_dir", None))
    except PeerConfigError as e:
        raise ConfigError(f"option OrthancPeers: {e}") from None


def option(ctx: Any, name: str) -> Any:
    """The value of one of the :data:`HTTP_OPTIONS` in ``ctx``'s configuration.

    Parameters
    ----------
    ctx : pacsbox.ServerContext
    name : str
        A key of :data:`HTTP_OPTIONS`.

    Returns
    -------
    any
        The configured value, else the default of :data:`HTTP_OPTIONS`.
    """
    return ctx.config.get(name, HTTP_OPTIONS[name][0])


class PeerRegistry:
    """The peers of one app, shared by the REST routes, the jobs and the transfers.

    Parameters
    ----------
    configured : dict of str to Peer
        From ``OrthancPeers``.
    index : Index or None
        The app's index when ``OrthancPeersInDatabase`` is true (peers then live in a
        global property; the configured ones are added on the first start only).
    """

    def __init__(self, configured: Mapping[str, Peer], index: Any = None) -> None:
        self._lock = threading.Lock()
        self._index = index
        peers = dict(configured)
        if index is not None:
            stored = index.get_global(DB_PROPERTY)
            if stored is None:
                self._save(peers)
            else:
                peers = {n: parse_peer(n, v, check_files=False) for n, v in json.loads(stored).items()}
        self._peers = peers

    def _save(self, peers: Mapping[str, Peer]) -> None:
        if self._index is not None:
            self._index.set_global(DB_PROPERTY, json.dumps({n: p.full_json() for n, p in peers.items()}))

    def names(self) -> list[str]:
        """Symbolic names, sorted (``GET /peers``)."""
        with self._lock:
            return sorted(self._peers)

    def items(self) -> Iterator[tuple[str, Peer]]:
        """``(name, peer)`` pairs, sorted by name."""
        with self._lock:
            snapshot = sorted(self._peers.items())
        return iter(snapshot)

    def get(self, name: str) -> Peer | None:
        """The peer of symbolic name ``name``, or None."""
        with self._lock:
            return self._peers.get(name)

    def put(self, name: str, peer: Peer) -> None:
        """Create or replace ``name`` (``PUT /peers/{id}``), persisted when in the database."""
        with self._lock:
            peers = dict(self._peers)
            peers[name] = peer
            self._save(peers)
            self._peers = peers

    def delete(self, name: str) -> bool:
        """Remove ``name``; False when unknown (``DELETE /peers/{id}``)."""
        with self._lock:
            if name not in self._peers:
                return False
            peers = dict(self._peers)
            del peers[name]
            self._save(peers)
            self._peers = peers
            return True


def peer_registry(ctx: Any) -> PeerRegistry:
    """The peer registry of ``ctx``'s app, created on first use.

    Kept in ``pacsbox_dicom_net.state.plugin_state(ctx).extra["peers"]``.

    Parameters
    ----------
    ctx : pacsbox.ServerContext

    Returns
    -------
    PeerRegistry

    Raises
    ------
    pacsbox.ConfigError
        ``OrthancPeers`` is malformed (normally caught earlier by :func:`check_config`).
    """
    from .state import plugin_state
    state = plugin_state(ctx)
    with state.lock:
        reg = state.extra.get(EXTRA_KEY)
        if reg is None:
            try:
                configured = parse_peers(ctx.config.get("OrthancPeers", {}),
                                         base_dir=getattr(ctx.config, "base_dir", None))
            except PeerConfigError as e:
                raise ConfigError(f"option OrthancPeers: {e}") from None
            reg = PeerRegistry(configured, ctx.index if option(ctx, "OrthancPeersInDatabase") else None)
            state.extra[EXTRA_KEY] = reg
    return reg


def peer_timeout(ctx: Any, peer: Peer) -> float | None:
    """Timeout of the requests to ``peer``, in seconds.

    Parameters
    ----------
    ctx : pacsbox.ServerContext
    peer : Peer

    Returns
    -------
    float or None
        The peer's ``Timeout`` when > 0, else ``HttpTimeout`` (default 60 s); None (no
        timeout) when both are 0. Source: Orthanc ``WebServiceParameters::GetTimeout``.
    """
    if peer.timeout > 0:
        return float(peer.timeout)
    t = option(ctx, "HttpTimeout")
    return float(t) if t else None


class _PeerAdapter(HTTPAdapter):
    """HTTPAdapter with an SSL context (client certificate with a key password)."""

    def __init__(self, ssl_context: ssl.SSLContext | None, **kwargs: Any) -> None:
        self._ssl_context = ssl_context
        super().__init__(**kwargs)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        if self._ssl_context is not None:
            kwargs["ssl_context"] = self._ssl_context
        super().init_poolmanager(*args, **kwargs)

    def proxy_manager_for(self, *args: Any, **kwargs: Any) -> Any:
        if self._ssl_context is not None:
            kwargs["ssl_context"] = self._ssl_context
        return super().proxy_manager_for(*args, **kwargs)


def _resolve(ctx: Any, path: str) -> str:
    base = getattr(ctx.config, "base_dir", None)
    return path if os.path.isabs(path) or base is None else os.path.join(base, path)


def http_session(ctx: Any, peer: Peer, *, pool_size: int | None = None) -> requests.Session:
    """A ``requests.Session`` toward ``peer``.

    Parameters
    ----------
    ctx : pacsbox.ServerContext
        The app (for ``HttpsVerifyPeers``, ``HttpsCACertificates``, ``HttpProxy``).
    peer : Peer
        The destination.
    pool_size : int, optional
        Connections kept open per host (default ``OrthancPeerStoreConcurrency``); size it
        to the number of threads sharing the session.

    Returns
    -------
    requests.Session
        Pooled keep-alive connections; HTTP Basic auth when the peer has a ``Username``;
        the peer's ``HttpHeaders``; ``verify`` from ``HttpsVerifyPeers`` and
        ``HttpsCACertificates``; proxies from ``HttpProxy`` (``host:port`` or a URL);
        the client certificate (``CertificateFile``, ``CertificateKeyFile``,
        ``CertificateKeyPassword``). Environment proxies and ``.netrc`` are ignored
        (``trust_env`` false), so that only the configuration decides. The timeout is not
        a session setting: pass ``timeout=peer_timeout(ctx, peer)`` to each request.

    Notes
    -----
    The session is not shared between apps; close it when done.
    """
    size = pool_size or option(ctx, "OrthancPeerStoreConcurrency")
    s = requests.Session()
    s.trust_env = False
    verify_peers = option(ctx, "HttpsVerifyPeers")
    ca = option(ctx, "HttpsCACertificates")
    if not verify_peers:
        s.verify = False
    elif ca:
        s.verify = _resolve(ctx, ca)
    ssl_context = None
    if peer.certificate_file and peer.url.startswith("https://"):
        ssl_context = ssl.create_default_context(cafile=_resolve(ctx, ca) if (verify_peers and ca) else None)
        if not verify_peers:
            ssl_context.check_hostname = False
            ssl_context.verify_mode = ssl.CERT_NONE
        ssl_context.load_cert_chain(_resolve(ctx, peer.certificate_file),
                                    _resolve(ctx, peer.certificate_key_file) if peer.certificate_key_file else None,
                                    peer.certificate_key_password or None)
    adapter = _PeerAdapter(ssl_context, pool_connections=2, pool_maxsize=max(1, size))
    s.mount("http://", adapter)
    s.mount("https://", adapter)
    if peer.username:
        s.auth = (peer.username, peer.password)
    s.headers.update(peer.http_headers)
    proxy = option(ctx, "HttpProxy")
    if proxy:
        if "://" not in proxy:
            proxy = "http://" + proxy
        s.proxies = {"http": proxy, "https": proxy}
    return s
