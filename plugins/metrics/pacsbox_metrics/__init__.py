"""pacsbox_metrics: first-party pacsbox plugin (see README.md)."""
__version__ = "0.1.0"
