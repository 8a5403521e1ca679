"""Calls of the plugin's own chained and first-result hooks whose failures are blamed on
the implementing plugin: the SCP's filters (``filter_incoming_find``,
``filter_incoming_worklist``, ``filter_incoming_cstore``) and the SCU's
``filter_outgoing_find`` (:mod:`.find_scu`).

A hook implementation that raises, or returns a value of the wrong type, becomes a
:class:`HookFailed` naming its plugin; the caller turns it into a DIMSE failure status
or an HTTP error, and logs it with :func:`log_hook_failed`.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger("pacsbox.dicom_net.scp")


def log_hook_exception(ctx: Any, hook: str, exc: BaseException) -> None:
    """Log that a pluggy call of ``hook`` raised ``exc``, naming the plugin to blame.

    Parameters
    ----------
    ctx : ServerContext
    hook : str
        The hook's name.
    exc : BaseException
        What the call raised.
    """
    log.error("plugin %r failed in hook %s: %s: %s", ctx.pm.culprit(hook, exc), hook, type(exc).__name__, exc,
              exc_info=exc)


class HookFailed(Exception):
    """An implementation of a chained or first-result hook of this plugin raised, or
    returned a value of the wrong type.

    Attributes
    ----------
    plugin : str
        The implementation's plugin name.
    hook : str
        The hook's name.
    error : BaseException
        What it raised (a ``TypeError`` for a wrong result).
    """

    def __init__(self, plugin: str, hook: str, error: BaseException) -> None:
        super().__init__(f"plugin {plugin!r} failed in hook {hook}: {type(error).__name__}: {error}")
        self.plugin, self.hook, self.error = plugin, hook, error


def implementations(ctx: Any, hook: str) -> list[Any]:
    """The implementations of ``hook`` in pluggy's calling order (wrappers left out).

    Parameters
    ----------
    ctx : ServerContext
    hook : str
        The hook's name.

    Returns
    -------
    list of pluggy.HookImpl
        Empty when no plugin implements the hook (or it is not declared).
    """
    caller = getattr(ctx.pm.hook, hook, None)
    if caller is None:
        return []
    return [i for i in reversed(caller.get_hookimpls()) if not (i.wrapper or i.hookwrapper)]


def call_chain(ctx: Any, hook: str, name: str, value: Any, expected: type | tuple[type, ...],
               valid: Callable[[Any], bool] | None = None, **kwargs: Any) -> Any:
    """Call a **chained filter** of this plugin (``filter_incoming_find``,
    ``filter_incoming_worklist``, ``filter_outgoing_find``).

    Parameters
    ----------
    ctx : ServerContext
    hook : str
        The hook's name.
    name : str
        The name of the argument that is chained (``"query"``).
    value : object
        Its value for the first implementation.
    expected : type or tuple of type
        What an implementation may return besides ``None``.
    valid : callable, optional
        A further check of a result (``valid(result) -> bool``).
    **kwargs
        The other arguments of the hook.

    Returns
    -------
    object
        What the last implementation that returned something gave (``value`` when none
        did, or when no plugin implements the hook).

    Raises
    ------
    HookFailed
        An implementation raised, or returned something not ``None`` nor ``expected``;
        the implementations after it are not called.
    """
    for impl in implementations(ctx, hook):
        args = {**kwargs, name: value}
        try:
            out = impl.function(*[args[a] for a in impl.argnames])
        except Exception as e:  # noqa: BLE001 - reported with the plugin's name
            raise HookFailed(impl.plugin_name, hook, e) from e
        if out is None:
            continue
        if not isinstance(out, expected) or (valid is not None and not valid(out)):
            raise HookFailed(impl.plugin_name, hook, TypeError(f"returned an invalid {type(out).__name__}"))
        value = out
    return value


def log_hook_failed(exc: HookFailed) -> None:
    """Log a :class:`HookFailed` (with the traceback of what the implementation raised,
    none for a result of the wrong type).

    Parameters
    ----------
    exc : HookFailed
    """
    log.error("%s", exc, exc_info=exc.error if not isinstance(exc.error, TypeError) else None)
