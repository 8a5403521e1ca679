"""Image routes of instances and series, as Orthanc 1.10.1 answers them
(``OrthancRestResources.cpp``): ``/instances/{id}/frames``, ``preview``,
``image-uint8``/``image-uint16``/``image-int16``, ``rendered``, ``numpy``, ``matlab``,
``raw``/``raw.gz`` at frame level, and ``/series/{id}/numpy``.

The decoding and rendering is :mod:`pacsbox.imaging`. Error answers follow the
reference exactly:

- image routes (preview, image-*, rendered): a frame index that is not an unsigned
  integer, out of range or an unknown instance give an **empty 404**; an image that
  cannot be decoded or converted (colour to grayscale, no codec installed) an **empty
  415** (or a 301 redirection to ``app/images/unsupported.png`` with
  ``?returnUnsupportedImage``); an ``Accept`` that matches no encoder an empty 404;
- numpy/matlab/raw: the JSON errors of the reference (400 "Parameter out of range" for
  an out-of-range frame, 404 "Unknown resource"), after its checks of the image
  attributes (:func:`_check_image_attributes`).

The reference reads (7FE0,0010) *Pixel Data* only: the floating-point pixels of parametric
maps (*Float* and *Double Float Pixel Data*), which :mod:`pacsbox.imaging` decodes, get its
answers for an instance without pixels (415 for the images, 400 "Bad file format" for
numpy and matlab, "Cannot access a raw frame" for raw; 64-bit ones its 500 "Image not
supported: 64 bits allocated").
"""
from __future__ import annotations

import gzip
import logging
import re

from .. import imaging
from ..errors import ErrorCode, OrthancError, not_found
from ..hookspecs import hookimpl
from ..index.models import CONTENT_TYPE_DICOM, Level
from ..routing.registry import RouteSpec

log = logging.getLogger("pacsbox.rest.images")

#: Sub-routes of ``/instances/{id}/frames/{n}``, as the reference lists them.
FRAME_CHILDREN = ["image-int16", "image-uint16", "image-uint8", "matlab", "numpy", "preview", "raw", "raw.gz",
                  "rendered"]

_UINT = re.compile(r"[0-9]+")


class _NoAnswer(Exception):
    """The reference answers nothing: an empty 404."""


class _Unsupported(Exception):
    """The reference's ``SignalError(415)`` (or the unsupported-image redirection)."""


def _boost_uint(text: str) -> int | None:
    """``boost::lexical_cast<unsigned int>``: digits, optionally after a sign (a minus
    wraps around); None when not a number or out of 32 bits."""
    m = re.fullmatch(r"([+-]?)([0-9]+)", text or "")
    if m is None:
        return None
    v = int(m.group(2))
    if v >= 1 << 32:
        return None
    return (-v) % (1 << 32) if m.group(1) == "-" else v


def _parse_bool(name: str, value: str) -> bool:
    """Orthanc's ``GetBooleanArgument``: ``true``/``1``/empty or ``false``/``0``."""
    if value in ("", "true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE,
                       f'Expected a Boolean for GET argument "{name}", found: {value}')


def _bool_arg(req, name: str, default: bool) -> bool:
    if name not in req.params:
        return default
    v = req.params[name]
    if isinstance(v, list):
        v = v[-1]
    return _parse_bool(name, v)


def _negotiate(accept: str | None) -> str | None:
    """Orthanc's ``HttpContentNegociation`` over PNG, JPEG and PAM (registered in this
    order): the most specific match, then the highest quality, first wins ties.

    Returns
    -------
    str or None
        ``"png"``, ``"jpeg"`` or ``"pam"``; None when nothing matches.

    Raises
    ------
    _Unsupported
        A ``q`` outside [0, 1] (the reference's BadRequest, caught as 415).
    """
    handlers = [("image", "png"), ("image", "jpeg"), ("image", "x-portable-arbitrarymap")]
    best = None  # (level, quality, name)
    for media in (accept if accept is not None else "*/*").split(","):
        params = media.split(";")
        if not params:
            continue
        quality = 1.0
        for p in params[1:]:
            if "=" in p:
                k, v = p.split("=", 1)
                if k.strip() == "q":
                    try:
                        quality = float(v.strip())
                    except ValueError:
                        raise _Unsupported() from None
                    if not 0.0 <= quality <= 1.0:
                        raise _Unsupported()
                    break
        if "/" not in params[0]:
            continue
        t, s = (x.strip() for x in params[0].split("/", 1))
        level = 0 if (t, s) == ("*", "*") else 1 if s == "*" else 2
        for ht, hs in handlers:
            if (t, s) == ("*", "*") or (s == "*" and t == ht) or (t, s) == (ht, hs):
                if best is None or (best[0], best[1]) < (level, quality):
                    best = (level, quality, hs)
    if best is None:
        return None
    return {"png": "png", "jpeg": "jpeg", "x-portable-arbitrarymap": "pam"}[best[2]]


class DatasetCache:
    """Parsed instances and encoded image answers kept for a few seconds, like Orthanc's
    cache of parsed DICOM files: a viewer asks for the preview, then the rendered frames,
    then the same preview again. Keyed by the attachment's UUID (a new file is a new
    key); bounded by the total size of the cached files and answers (bytes) and by an age
    (seconds); decoded frames are never kept.

    Parameters
    ----------
    max_bytes : int
        Total size of the files held, 64 MiB by default.
    ttl : float
        Seconds an entry is used after it was parsed.
    """

    def __init__(self, max_bytes: int = 64 << 20, ttl: float = 10.0):
        import collections
        import threading
        self.max_bytes, self.ttl = max_bytes, ttl
        self._entries: "collections.OrderedDict[str, tuple[float, int, object]]" = collections.OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: str):
        """The dataset cached under ``key``, or None."""
        import time
        with self._lock:
            e = self._entries.get(key)
            if e is None:
                return None
            if time.monotonic() - e[0] > self.ttl:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return e[2]

    def put(self, key: str, size: int, ds) -> None:
        """Keep ``ds`` (parsed from ``size`` bytes), evicting the oldest entries."""
        import time
        if size > self.max_bytes // 4:
            return  # a big file would evict everything else
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = (time.monotonic(), size, ds)
            self._size += size
            while self._size > self.max_bytes and self._entries:
                self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        _, size, _ = self._entries.pop(key)
        self._size -= size


class _Images:
    """Shared reading of instances for the image routes."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.cache = ctx.stash.setdefault("pacsbox.rest.images", DatasetCache())

    def dataset(self, instance_id: str, att=None):
        if att is None:
            att = self.ctx.index.attachment_by_public_id(instance_id, CONTENT_TYPE_DICOM)
        if att is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
        ds = self.cache.get(att.uuid)
        if ds is None:
            data = self.ctx.resources.read_file(instance_id)
            ds = imaging.read_dataset(data)
            self.cache.put(att.uuid, len(data), ds)
        return ds


def _jpeg_quality(req) -> int:
    v = req.params.get("quality", "90")
    if isinstance(v, list):
        v = v[-1]
    q = _boost_uint(v)
    if q is None or not 1 <= q <= 100 or v.startswith("-"):
        raise _Unsupported()  # the reference's BadRequest, raised inside its try: 415
    return q


def _answer_image(req, resp, image, mode: str) -> None:
    """Encode as negotiated, in the reference's order of checks: ``quality``, ``Accept``,
    JPEG of a 16-bit mode, then the conversion of ``mode`` (``preview`` and ``rendered``
    images are ready; ``uint8``/``uint16``/``int16`` truncate grayscale, refuse colour)."""
    quality = _jpeg_quality(req)
    fmt = _negotiate(req.get_header("Accept"))
    if fmt is None:
        raise _NoAnswer()
    if fmt == "jpeg" and mode not in ("preview", "uint8", "rendered"):
        raise _NoAnswer()  # ParameterOutOfRange: empty 404
    if mode in ("uint8", "uint16", "int16"):
        if image.ndim == 3:
            raise _Unsupported()  # no colour to grayscale conversion: 415
        image = imaging.truncate(image, mode)
    if fmt == "jpeg":
        resp.content_type = "image/jpeg"
        resp.data = imaging.encode_jpeg(image, quality)
    elif fmt == "pam":
        resp.content_type = "image/x-portable-arbitrarymap"
        resp.data = imaging.encode_pam(image)
    else:
        resp.content_type = "image/png"
        resp.data = imaging.encode_png(image)


class ImageRoute(_Images):
    """``preview``, ``image-uint8``, ``image-uint16``, ``image-int16`` and ``rendered``
    at instance level (frame 0) and frame level."""

    def __init__(self, ctx, mode: str):
        super().__init__(ctx)
        self.mode = mode

    def on_get(self, req, resp, id, frame="0"):
        try:
            index = _boost_uint(frame)
            if index is None:
                raise _NoAnswer()
            if not imaging.available():
                raise _Unsupported()
            att = self.ctx.index.attachment_by_public_id(id, CONTENT_TYPE_DICOM)
            if att is None:
                raise _NoAnswer()
            # the same image asked again (a viewer's grid, a refresh): the encoded answer
            key = f"{att.uuid}|{self.mode}|{index}|{req.query_string}|{req.get_header('Accept')}"
            hit = self.cache.get(key)
            if hit is not None:
                resp.content_type, resp.data = hit
                return
            try:
                ds = self.dataset(id, att)
                if "PixelData" not in ds:
                    raise _Unsupported()  # parametric maps too: the reference reads Pixel Data only
                decoded = imaging.decode_frame(ds, index)
            except OrthancError as e:
                if e.code in (ErrorCode.UNKNOWN_RESOURCE, ErrorCode.INEXISTENT_FILE):
                    raise _NoAnswer() from None
                raise
            except imaging.FrameOutOfRange:
                raise _NoAnswer() from None
            except (imaging.DecodeError, imaging.ImagingUnavailable) as e:
                log.info("cannot decode frame %s of instance %s: %s", index, id, e)
                raise _Unsupported() from None
            if self.mode == "rendered":
                image = self._rendered(req, ds, decoded, index)
                _answer_image(req, resp, image, "rendered")
            elif self.mode == "preview":
                image = imaging.preview(decoded, invert=imaging.is_monochrome1(ds))
                _answer_image(req, resp, image, "preview")
            else:
                _answer_image(req, resp, decoded, self.mode)
            self.cache.put(key, len(resp.data), (resp.content_type, resp.data))
        except _NoAnswer:
            raise not_found() from None
        except _Unsupported:
            if "returnUnsupportedImage" in req.params:
                depth = len([p for p in req.path.split("/") if p])
                resp.status = 301  # the reference: "301 Moved Permanently"
                resp.set_header("Location", "../" * (depth - 1) + "app/images/unsupported.png")
                resp.content_type = None
                resp.data = b""
            else:
                raise OrthancError(ErrorCode.UNSUPPORTED_MEDIA_TYPE, empty=True) from None

    def _rendered(self, req, ds, decoded, index: int):
        intercept, slope = imaging.rescale_parameters(ds, index)
        center, width = imaging.default_window(ds, index)

        def number(name: str, integer: bool = False):
            v = req.params.get(name)
            if isinstance(v, list):
                v = v[-1]
            try:
                x = int(v) if integer else float(v)
            except (TypeError, ValueError):
                raise _NoAnswer() from None  # ParameterOutOfRange: empty 404
            if integer and x < 0:
                raise _NoAnswer()
            return x

        if "window-width" in req.params:
            width = number("window-width")
        if "window-center" in req.params:
            center = number("window-center")
        out_w = number("width", True) if "width" in req.params else 0
        out_h = number("height", True) if "height" in req.params else 0
        smooth = False
        if "smooth" in req.params:
            v = req.params["smooth"]
            v = v[-1] if isinstance(v, list) else v
            if v in ("", "true", "1"):
                smooth = True
            elif v in ("false", "0"):
                smooth = False
            else:
                raise _Unsupported()  # BadRequest inside the reference's try: 415
        return imaging.render(decoded, intercept=intercept, slope=slope, center=center, width=width,
                              invert=imaging.is_monochrome1(ds) and decoded.ndim == 2, out_width=out_w,
                              out_height=out_h, smooth=smooth)


class FramesRoute(_Images):
    """``GET /instances/{id}/frames``: the frame indices."""

    def on_get(self, req, resp, id):
        from ..web import send_json
        res = self.ctx.index.lookup(id, Level.INSTANCE)
        if res is None:
            raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
        try:
            ds = imaging.read_dataset(self.ctx.resources.read_file(res))
            count = imaging.frame_count(ds)
        except imaging.DecodeError as e:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT) from e
        send_json(resp, list(range(count)))


class FrameChildrenRoute:
    """``GET /instances/{id}/frames/{n}``: the names of the frame's sub-routes (the
    reference lists them for any index)."""

    def __init__(self, ctx):
        self.ctx = ctx

    def on_get(self, req, resp, id, frame):
        from ..web import send_json
        send_json(resp, FRAME_CHILDREN)


def _frame_arg(frame: str) -> int:
    """``SerializationToolbox::ParseUnsignedInteger32`` for numpy."""
    if not _UINT.fullmatch(frame or "") or int(frame) >= 1 << 32:
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, 'Expected an unsigned integer for the "frame" argument')
    return int(frame)


def _check_image_attributes(ds) -> None:
    """What Orthanc 1.10.1's ``DicomImageInformation`` checks before numpy, matlab and raw
    read any pixel: Rows, Columns and BitsAllocated are numbers (else its bare 500 "Not
    implemented yet", as for a structured report), at most 32 bits allocated.

    Raises
    ------
    OrthancError
        ``NOT_IMPLEMENTED``; ``INCOMPATIBLE_IMAGE_FORMAT`` "Image not supported: 64 bits
        allocated" (a double-float parametric map).
    """
    values = []
    for keyword in ("Rows", "Columns", "BitsAllocated"):
        v = ds.get(keyword)
        try:
            values.append(int(v[0] if isinstance(v, (list, tuple)) else v))
        except (TypeError, ValueError, IndexError):
            raise OrthancError(ErrorCode.NOT_IMPLEMENTED) from None
    if values[2] > 32:
        raise OrthancError(ErrorCode.INCOMPATIBLE_IMAGE_FORMAT, f"Image not supported: {values[2]} bits allocated")


def _decode_or_raise(ds, index: int):
    """Decode for numpy/matlab: the attribute checks, no (7FE0,0010) *Pixel Data* the
    reference's 400 (before the frame index is looked at), out of range its 400,
    undecodable its 500."""
    _check_image_attributes(ds)
    if "PixelData" not in ds:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT)
    try:
        return imaging.decode_frame(ds, index)
    except imaging.FrameOutOfRange:
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE) from None
    except (imaging.ImagingUnavailable, imaging.DecodeError) as e:
        log.info("cannot decode frame %s: %s", index, e)
        raise OrthancError(ErrorCode.NOT_IMPLEMENTED) from None  # the reference's bare 500


def _numpy_answer(resp, frames, count, rescale: bool, compress: bool) -> None:
    try:
        data = imaging.numpy_file(frames, count, rescale=rescale, compress=compress)
    except imaging.IncompatibleImages as e:
        code = ErrorCode.INCOMPATIBLE_IMAGE_SIZE if e.what == "size" else ErrorCode.INCOMPATIBLE_IMAGE_FORMAT
        raise OrthancError(code, str(e)) from None
    except imaging.DecodeError as e:
        log.info("cannot export as numpy: %s", e)
        raise OrthancError(ErrorCode.NOT_IMPLEMENTED) from None
    resp.content_type = "application/octet-stream"
    resp.data = data


class NumpyRoute(_Images):
    """``numpy`` of a frame, an instance or a series (``rescale``, ``compress``)."""

    def __init__(self, ctx, level: str):
        super().__init__(ctx)
        self.level = level

    def on_get(self, req, resp, id, frame=None):
        compress = _bool_arg(req, "compress", False)
        rescale = _bool_arg(req, "rescale", True)
        if not imaging.available():
            raise OrthancError(ErrorCode.NOT_IMPLEMENTED, "Cannot decode DICOM instance")
        if self.level == "frame":
            index = _frame_arg(frame)
            ds = self.dataset(id)
            _numpy_answer(resp, [(ds, _decode_or_raise(ds, index), index)], None, rescale, compress)
        elif self.level == "instance":
            ds = self.dataset(id)
            n = imaging.frame_count(ds)
            if n == 0:
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Empty DICOM instance")
            _numpy_answer(resp, ((ds, _decode_or_raise(ds, i), i) for i in range(n)), n, rescale, compress)
        else:
            series = self.ctx.index.lookup(id, Level.SERIES)
            if series is None:
                raise OrthancError(ErrorCode.UNKNOWN_RESOURCE)
            datasets = [imaging.read_dataset(self.ctx.resources.read_file(inst))
                        for inst in _ordered_instances(self.ctx, series)]
            count = sum(imaging.frame_count(ds) for ds in datasets)
            frames = ((ds, _decode_or_raise(ds, i), i) for ds in datasets for i in range(imaging.frame_count(ds)))
            _numpy_answer(resp, frames, count, rescale, compress)


def _ordered_instances(ctx, series):
    """The instances of a series in the reference's slice order (``SliceOrdering``):
    along the normal by ImagePositionPatient when every instance has one, else by
    InstanceNumber, else by index order."""
    insts = list(ctx.index.descendant_instances(series.internal_id, series.level))
    keyed = []
    for inst in insts:
        try:
            ds = ctx.resources.read_dataset(inst.public_id, stop_before_pixels=True)
        except Exception:  # noqa: BLE001
            ds = None
        keyed.append((inst, ds))

    def floats(ds, name):
        try:
            return [float(x) for x in ds.get(name)]
        except Exception:  # noqa: BLE001
            return None

    normal = None
    positions = []
    for inst, ds in keyed:
        pos = floats(ds, "ImagePositionPatient") if ds is not None else None
        ori = floats(ds, "ImageOrientationPatient") if ds is not None else None
        if pos is None or len(pos) != 3 or ori is None or len(ori) != 6:
            positions = None
            break
        n = (ori[1] * ori[5] - ori[2] * ori[4], ori[2] * ori[3] - ori[0] * ori[5], ori[0] * ori[4] - ori[1] * ori[3])
        normal = normal or n
        positions.append((sum(a * b for a, b in zip(normal, pos)), inst))
    if positions:
        if len({p for p, _ in positions}) == len(positions):
            return [inst for _, inst in sorted(positions, key=lambda t: t[0])]
    numbers = []
    for inst, ds in keyed:
        try:
            numbers.append((int(ds.get("InstanceNumber")), inst))
        except Exception:  # noqa: BLE001
            numbers = None
            break
    if numbers and len({n for n, _ in numbers}) == len(numbers):
        return [inst for _, inst in sorted(numbers, key=lambda t: t[0])]
    return insts


class MatlabRoute(_Images):
    """``matlab`` of frame 0 or of a frame: Octave/Matlab text."""

    def on_get(self, req, resp, id, frame="0"):
        index = _boost_uint(frame)
        if index is None:
            raise not_found()
        if not imaging.available():
            raise OrthancError(ErrorCode.NOT_IMPLEMENTED, f"Cannot decode DICOM instance with ID: {id}")
        ds = self.dataset(id)
        decoded = _decode_or_raise(ds, index)
        try:
            text = imaging.matlab_text(decoded)
        except imaging.DecodeError as e:
            raise OrthancError(ErrorCode.NOT_IMPLEMENTED, str(e)) from None
        resp.content_type = "text/plain"
        resp.data = text.encode("ascii")


class RawFrameRoute(_Images):
    """``raw`` and ``raw.gz`` of a frame: its bytes as stored (compressed frames stay
    compressed)."""

    def __init__(self, ctx, gz: bool):
        super().__init__(ctx)
        self.gz = gz

    def on_get(self, req, resp, id, frame):
        index = _boost_uint(frame)
        if index is None:
            raise not_found()
        ds = self.dataset(id)
        _check_image_attributes(ds)
        try:
            if index >= imaging.frame_count(ds):
                raise imaging.FrameOutOfRange()
            if "PixelData" not in ds:
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Cannot access a raw frame")
            data, mime = imaging.raw_frame(ds, index)
        except imaging.FrameOutOfRange:
            raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE) from None
        except imaging.DecodeError as e:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, str(e)) from None
        if self.gz:
            resp.content_type = "application/gzip"
            resp.data = gzip.compress(data)
        else:
            resp.content_type = mime
            resp.data = data


def transcoded_file(ctx, instance_id: str, target) -> bytes:
    """``GET /instances/{id}/file?transcode=UID`` (Orthanc 1.12's argument): the file in
    another transfer syntax.

    Raises
    ------
    OrthancError
        400 ``BAD_REQUEST`` "Unknown transfer syntax" for a UID that is not a transfer
        syntax; an empty 404 when the file cannot be converted (Orthanc answers nothing).
    """
    from ..dicom.transcode import is_transfer_syntax, transcode
    if isinstance(target, list):
        target = target[-1]
    target = (target or "").strip()
    if not is_transfer_syntax(target):
        raise OrthancError(ErrorCode.BAD_REQUEST, f"Unknown transfer syntax: {target}")
    out = transcode(ctx.resources.read_file(instance_id), target)
    if out is None:
        raise not_found()
    return out


def routes(ctx) -> list[RouteSpec]:
    """The image routes (module docstring)."""
    specs = [
        RouteSpec("/instances/{id}/frames", FramesRoute),
        RouteSpec("/instances/{id}/frames/{frame}", FrameChildrenRoute),
        RouteSpec("/instances/{id}/numpy", lambda c: NumpyRoute(c, "instance")),
        RouteSpec("/instances/{id}/frames/{frame}/numpy", lambda c: NumpyRoute(c, "frame")),
        RouteSpec("/series/{id}/numpy", lambda c: NumpyRoute(c, "series")),
        RouteSpec("/instances/{id}/matlab", MatlabRoute),
        RouteSpec("/instances/{id}/frames/{frame}/matlab", MatlabRoute),
        RouteSpec("/instances/{id}/frames/{frame}/raw", lambda c: RawFrameRoute(c, False)),
        RouteSpec("/instances/{id}/frames/{frame}/raw.gz", lambda c: RawFrameRoute(c, True)),
    ]
    for mode, name in (("preview", "preview"), ("uint8", "image-uint8"), ("uint16", "image-uint16"),
                       ("int16", "image-int16"), ("rendered", "rendered")):
        specs.append(RouteSpec(f"/instances/{{id}}/{name}", lambda c, m=mode: ImageRoute(c, m)))
        specs.append(RouteSpec(f"/instances/{{id}}/frames/{{frame}}/{name}", lambda c, m=mode: ImageRoute(c, m)))
    return specs


@hookimpl(trylast=True)
def register_routes(ctx):
    """The image routes of instances and series (default plugin)."""
    return routes(ctx)
