"""Orthanc peers: ``/peers`` routes and the ``OrthancPeerStore`` job (reference section 10).

The configuration API other modules build on (the transfers accelerator) is re-exported
here from :mod:`.peer_registry`: :func:`peer_registry`, :class:`Peer`,
:func:`http_session`, :func:`peer_timeout`.
"""
from __future__ import annotations

from .peer_registry import (Peer, PeerConfigError, PeerRegistry, check_config, http_session, parse_peer,
                            parse_peers, peer_registry, peer_timeout)

__all__ = ["Peer", "PeerConfigError", "PeerRegistry", "check_config", "http_session", "parse_peer", "parse_peers",
           "peer_registry", "peer_timeout", "routes", "job_types"]


def routes(ctx):
    """The routes of this module (none yet)."""
    return []


def job_types():
    """The job types of this module (none yet)."""
    return []
