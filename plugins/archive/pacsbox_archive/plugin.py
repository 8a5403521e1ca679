"""Hook implementations of the pacsbox_archive plugin."""
from pacsbox import hookimpl  # noqa: F401
