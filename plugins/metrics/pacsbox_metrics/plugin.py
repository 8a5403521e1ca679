"""Hook implementations of the pacsbox_metrics plugin."""
from pacsbox import hookimpl  # noqa: F401
