"""The per-app notification dispatcher: notification hooks run here, off the request path.

One background thread per app drains a queue of events and calls each implementation of
the notification hook in turn, through the plugin manager's dispatcher
(:meth:`pacsbox.plugins.PacsboxPluginManager.call`). Only hooks whose calling convention is
``notification`` can be emitted. An implementation's exception is logged with its plugin's
name and does not stop the others (DESIGN.md section 0, "Notification hooks").
"""
from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Callable

log = logging.getLogger("pacsbox.notify")

_STOP = object()


class Notifier:
    """Dispatch notification hooks on a background thread.

    Parameters
    ----------
    pm : PacsboxPluginManager
        The app's plugin manager.

    Notes
    -----
    Events are delivered in the order they were emitted, one at a time, on the thread
    named ``pacsbox-notify``. :meth:`emit` never blocks on a plugin.
    """

    def __init__(self, pm) -> None:
        self.pm = pm
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._pending = 0

    def start(self) -> None:
        """Start the dispatcher thread (idempotent)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="pacsbox-notify", daemon=True)
            self._thread.start()

    def _check(self, hook_name: str) -> None:
        conv = self.pm.convention(hook_name)
        if conv != "notification":
            raise TypeError(f"hook {hook_name} is a {conv or 'convention-less'} hook, not a notification: "
                            f"call it through the plugin manager (pm.call)")

    def has_listeners(self, hook_name: str) -> bool:
        """Whether any plugin implements the notification hook ``hook_name``.

        Raises
        ------
        TypeError
            ``hook_name`` is not a notification hook.
        """
        self._check(hook_name)
        return self.pm.has_impls(hook_name)

    def emit(self, hook_name: str, _lazy: dict[str, Callable[[], Any]] | None = None, **kwargs: Any) -> None:
        """Queue a notification; returns at once.

        Parameters
        ----------
        hook_name : str
            ``"instance_stored"``, ``"change_recorded"`` or ``"job_state_changed"``.
        _lazy : dict of str to callable, optional
            Arguments computed on the dispatcher thread, only when there is a listener
            (e.g. parsing the dataset for ``instance_stored``).
        **kwargs
            The hook's arguments.

        Raises
        ------
        TypeError
            ``hook_name`` is not a notification hook (a filter or a registration hook is
            called through :meth:`pacsbox.plugins.PacsboxPluginManager.call`).
        """
        if not self.has_listeners(hook_name):
            return
        with self._idle:
            self._pending += 1
        self._queue.put((hook_name, kwargs, _lazy))
        if self._thread is None:
            self.start()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            hook_name, kwargs, lazy = item
            try:
                if lazy:
                    for k, fn in lazy.items():
                        kwargs[k] = fn()
                self.pm.call(hook_name, kwargs)
            except Exception:  # noqa: BLE001
                log.exception("notification %s could not be prepared", hook_name)
            finally:
                with self._idle:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.notify_all()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until every queued notification was delivered (used by tests and shutdown)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued, then stop the thread."""
        if self._thread is not None:
            self.wait_idle(timeout)
            self._queue.put(_STOP)
            self._thread.join(timeout)
            self._thread = None
