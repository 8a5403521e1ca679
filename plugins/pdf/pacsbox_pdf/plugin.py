"""Hook implementations of the pacsbox_pdf plugin."""
from pacsbox import hookimpl  # noqa: F401
