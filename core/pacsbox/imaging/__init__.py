"""Decoding and rendering of DICOM pixel data: the imaging core shared by the REST image
routes, archives and the network plugin.

Plugins use it as ``from pacsbox import imaging`` (or ``import pacsbox.imaging``).

Decoding follows Orthanc 1.10.1's pixel formats, so that what a route returns has the
reference's shape and dtype (Orthanc's ``DicomImageInformation::ExtractPixelFormat``):

==========================================  ====================  ===================
source                                      Orthanc format        array
==========================================  ====================  ===================
grayscale, 8 bits stored, unsigned          Grayscale8            ``(H, W)`` uint8
grayscale, 1 bit (segmentations)            Grayscale8, 0 or 255  ``(H, W)`` uint8
grayscale, 16 bits allocated, unsigned      Grayscale16           ``(H, W)`` uint16
grayscale, 16 bits allocated, signed        SignedGrayscale16     ``(H, W)`` int16
grayscale, 32 bits allocated, unsigned      Grayscale32           ``(H, W)`` uint32
RGB / YBR_* (converted to RGB), 8 bits      RGB24                 ``(H, W, 3)`` uint8
PALETTE COLOR, 8 bits stored                RGB24 (LUT >> 8)      ``(H, W, 3)`` uint8
PALETTE COLOR, 16 bits stored               RGB48                 ``(H, W, 3)`` uint16
==========================================  ====================  ===================

pacsbox also decodes what the reference refuses: signed 8-bit grayscale (as int16),
signed 32-bit (int32), 16-bit colour (uint16 RGB), uncompressed YBR images, and the
floating-point pixels of parametric maps, (7FE0,0008) *Float Pixel Data* as ``(H, W)``
float32 and (7FE0,0009) *Double Float Pixel Data* as float64 (PS3.3 C.7.6.24; the REST
routes refuse those as the reference does).

The codecs are pydicom's pixel handlers (numpy for native data and RLE, pylibjpeg with
libjpeg/openjpeg/rle, pyjpegls, pillow): the ``transcode`` extra installs them. Without
numpy every function raises :class:`ImagingUnavailable`, which the routes turn into the
reference's "unsupported" answer (415).

The package re-exports the public names of its modules:

- :mod:`~pacsbox.imaging.errors`: the errors, :func:`available`;
- :mod:`~pacsbox.imaging.attributes`: :func:`read_dataset`, :class:`ImageInfo`,
  :func:`image_info`, :func:`frame_count`, the modality transform and VOI window;
- :mod:`~pacsbox.imaging.frames`: :func:`decode_frame`, :func:`iter_frames`,
  :func:`raw_frame`;
- :mod:`~pacsbox.imaging.rendering`: :func:`preview`, :func:`render`, :func:`truncate`;
- :mod:`~pacsbox.imaging.writers`: PNG, JPEG, PAM, NumPy and Matlab files;
- :mod:`~pacsbox.imaging.encoders` (not re-exported): the compressed transfer syntaxes.
"""
from __future__ import annotations

from .attributes import ImageInfo, default_window, frame_count, image_info, is_monochrome1, read_dataset, \
    rescale_parameters
from .errors import DecodeError, FrameOutOfRange, ImagingUnavailable, IncompatibleImages, available
from .frames import decode_frame, iter_frames, raw_frame
from .rendering import preview, render, target_size, truncate
from .writers import encode_jpeg, encode_pam, encode_png, matlab_text, numpy_file, numpy_frame, numpy_header

__all__ = [
    "ImagingUnavailable", "DecodeError", "FrameOutOfRange", "ImageInfo", "available",
    "read_dataset", "image_info", "frame_count", "decode_frame", "iter_frames",
    "rescale_parameters", "default_window", "preview", "truncate", "render",
    "encode_png", "encode_jpeg", "encode_pam", "numpy_file", "matlab_text", "raw_frame",
    "IncompatibleImages", "is_monochrome1", "target_size", "numpy_header", "numpy_frame",
]
