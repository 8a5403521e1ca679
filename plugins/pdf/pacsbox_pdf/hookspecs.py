"""Extension points of the pdf plugin (plugin-owned hook specs).

They exist only when the ``pdf`` plugin is loaded: it adds them through the core's
``add_hookspecs`` hook. Implement them in your plugin with
``@hookimpl(optionalhook=True)``, so that your plugin still loads when ``pdf`` is
blocked::

    from pacsbox import OrthancError, ErrorCode, hookimpl

    def encode_text(payload, dataset):
        dataset.SOPClassUID = dataset.get("SOPClassUID") or "1.2.840.10008.5.1.4.1.1.104.1"
        ...

    @hookimpl(optionalhook=True)
    def register_content_encoders(ctx):
        return {"text/plain": encode_text}

Source: Orthanc ``POST /tools/create-dicom`` (``ParsedDicomFile::EmbedContent``);
DICOM PS3.3 A.45 (Encapsulated PDF IOD), A.85 (Encapsulated STL/OBJ/MTL IODs).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Mapping

from pacsbox import hookspec

if TYPE_CHECKING:  # pragma: no cover
    import pydicom

    from pacsbox import ServerContext

#: What an encoder is: ``encode(payload, dataset)``; see :func:`register_content_encoders`.
ContentEncoder = Callable[[bytes, "pydicom.Dataset"], None]


@hookspec(convention="collect-all")
def register_content_encoders(ctx: ServerContext) -> Mapping[str, ContentEncoder]:
    """Declare the MIME types ``POST /tools/create-dicom`` accepts in ``Content``.

    Calling convention: **collect-all**, at start-up (when the routes are registered):
    every implementation is called once; the core of the plugin merges the mappings. The
    pdf plugin's own implementation (``application/pdf``, ``image/png``, ``image/jpeg``,
    ``model/stl``, ``model/obj``, ``model/mtl``) is ``trylast``, and another plugin may
    declare one of these types again to replace it; two other plugins declaring the same
    type stop the start-up with both plugin names.

    Parameters
    ----------
    ctx : pacsbox.ServerContext
        The app's services (``ctx.config`` for options of the encoder).

    Returns
    -------
    mapping of str to callable
        Lower-case MIME type (``"text/plain"``) → encoder
        ``encode(payload: bytes, dataset: pydicom.Dataset) -> None``. ``payload`` is the
        decoded content of the data URI (``data:<mime>;base64,...``), of any length.
        ``dataset`` is the new instance, already holding the generated identifiers,
        dates and the client's ``Tags`` (and ``dataset.file_meta``, whose
        ``TransferSyntaxUID`` is Explicit VR Little Endian and may be changed, e.g. to
        JPEG Baseline for kept JPEG bytes). The encoder adds the content's attributes
        (``EncapsulatedDocument``, ``PixelData``...) and sets ``SOPClassUID`` and
        ``Modality`` only when the client gave none. It may return ``None`` only.

    Raises
    ------
    Exception
        At start-up, an implementation that raises, or returns something other than a
        mapping of strings to callables, stops the start-up (``pacsbox.StartupError``
        naming the plugin). At request time, an encoder raises
        ``pacsbox.OrthancError`` for content it refuses (``ErrorCode.BAD_FILE_FORMAT``,
        400, for a payload that is not of its type); any other exception becomes a 500
        ``InternalError`` answer; in both cases nothing is stored.

    Notes
    -----
    Encoders run on the request thread: one ``POST /tools/create-dicom`` calls one
    encoder per instance it creates (an array ``Content`` creates one instance per
    item). A MIME type nobody declares is answered 500 "Unsupported MIME type for the
    content of a new DICOM file: <mime>", as Orthanc 1.10.1. The payload size is bounded
    by the ``CreateDicomMaximumSize`` option before any decoding.

    Orthanc equivalent: none for plugins; the built-in types are Orthanc's
    ``ParsedDicomFile::EmbedContent`` (``EmbedImage``, ``EmbedPdf``; STL/OBJ/MTL since
    1.12.1).
    """
