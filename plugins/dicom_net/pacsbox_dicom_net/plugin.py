"""Hook implementations of the pacsbox_dicom_net plugin."""
from pacsbox import hookimpl  # noqa: F401
