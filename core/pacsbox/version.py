"""The version of pacsbox, in a module of its own that imports nothing.

Modules that need the version (``/system``'s ``ProductVersion``, the DICOM
``ImplementationVersionName``, the OpenAPI document) import it from here, never from the
package ``pacsbox`` itself, whose ``__init__`` imports them back (an import cycle that
only line order would save). Keep it equal to ``version`` in ``pyproject.toml``
(``tests/core/test_cli.py`` checks it).
"""

#: The distribution's version (PEP 440).
__version__ = "0.1.0"
