"""Wire format of Orthanc's transfers accelerator plugin: names, instance descriptions,
buckets, bucket planning and the gzip bucket codec. No HTTP, no falcon.

Everything here mirrors ``orthanc-transfers`` (``Framework/TransferToolbox.h``,
``DicomInstanceInfo.cpp``, ``TransferBucket.cpp``, ``TransferScheduler.cpp``):

- an instance travels as ``{"ID": <Orthanc ID>, "Size": "<bytes, decimal string>",
  "MD5": "<lowercase hex MD5 of the DICOM file>"}``;
- a bucket is a JSON array of chunks ``{"ID", "Offset", "Size"}`` (decimal strings); only
  its first chunk may start at a non-zero offset, and nothing follows a partial chunk;
- instances smaller than the bucket size are grouped (in increasing order of Orthanc ID,
  as the plugin's ``std::map``), instances under twice the bucket size travel alone, and
  larger ones are split into ``ceil(size / (2 * BucketSize))`` nearly equal chunks;
- a bucket's bytes are its chunks concatenated, gzipped as a whole when the transfer's
  ``Compression`` is ``"gzip"``.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from pacsbox import ErrorCode, OrthancError

#: Job types (``JOB_TYPE_PUSH``, ``JOB_TYPE_PULL``).
JOB_TYPE_PUSH = "PushTransfer"
JOB_TYPE_PULL = "PullTransfer"
#: The plugin's name as listed by ``GET /plugins`` (``PLUGIN_NAME``).
PLUGIN_NAME = "transfers"
#: Configuration section (``KEY_PLUGIN_CONFIGURATION``).
CONFIG_SECTION = "Transfers"

URI_CHUNKS = "/transfers/chunks"
URI_LOOKUP = "/transfers/lookup"
URI_PEERS = "/transfers/peers"
URI_PULL = "/transfers/pull"
URI_PUSH = "/transfers/push"
URI_SEND = "/transfers/send"
URI_PLUGINS = "/plugins"
URI_JOBS = "/jobs"

KEY_BUCKETS = "Buckets"
KEY_COMPRESSION = "Compression"
KEY_ID = "ID"
KEY_INSTANCES = "Instances"
KEY_LEVEL = "Level"
KEY_MD5 = "MD5"
KEY_OFFSET = "Offset"
KEY_ORIGINATOR = "Originator"
KEY_PATH = "Path"
KEY_PEER = "Peer"
KEY_PRIORITY = "Priority"
KEY_REMOTE_JOB = "RemoteJob"
KEY_REMOTE_SELF = "RemoteSelf"
KEY_RESOURCES = "Resources"
KEY_SIZE = "Size"
KEY_URL = "URL"
KEY_SENDER_TRANSFER_ID = "SenderTransferID"
#: HTTP header carrying ``SenderTransferID`` on every request of a transfer.
HEADER_SENDER_TRANSFER_ID = "sender-transfer-id"

#: Compression names (``StringToBucketCompression``).
COMPRESSIONS = ("none", "gzip")

KB = 1024
MB = 1024 * 1024
#: The plugin keeps pull URLs under 2000 characters minus one Orthanc ID.
MAX_URL_LENGTH = 2000 - 44
#: gzip level of buckets (the wire format does not fix it; 1 favours throughput).
GZIP_LEVEL = 1


def megabytes(value: int) -> int:
    """Bytes to rounded megabytes (``ConvertToMegabytes``).

    Parameters
    ----------
    value : int
        Bytes.

    Returns
    -------
    int
        Megabytes (1 MB = 1048576 bytes), rounded to the nearest integer.
    """
    return int(round(value / MB))


def check_compression(value: Any) -> str:
    """Validate a ``Compression`` field (``StringToBucketCompression``).

    Parameters
    ----------
    value : any

    Returns
    -------
    str
        ``"gzip"`` or ``"none"``.

    Raises
    ------
    OrthancError
        ``ParameterOutOfRange`` (400) for another string, as the plugin;
        ``BadFileFormat`` (400) for a non-string.
    """
    if not isinstance(value, str):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Compression must be a string")
    if value not in COMPRESSIONS:
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE,
                           f'Valid compression methods are "gzip" and "none", but found: {value}')
    return value


def _size_text(value: Any) -> int:
    if not isinstance(value, str) or not value.isdigit() or not value.isascii():
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Expected a decimal string, found: {value!r}")
    return int(value)


@dataclass(frozen=True)
class InstanceInfo:
    """One instance of a transfer (``DicomInstanceInfo``).

    Attributes
    ----------
    id : str
        Orthanc ID of the instance.
    size : int
        Bytes of its DICOM file.
    md5 : str
        Lowercase hexadecimal MD5 of its DICOM file.
    """

    id: str
    size: int
    md5: str

    def to_json(self) -> dict[str, str]:
        """dict: ``{"ID", "Size", "MD5"}``, the size as a decimal string."""
        return {KEY_ID: self.id, KEY_SIZE: str(self.size), KEY_MD5: self.md5}

    @classmethod
    def from_json(cls, value: Any) -> "InstanceInfo":
        """Parse ``{"ID", "Size", "MD5"}`` (all strings).

        Raises
        ------
        OrthancError
            ``BadFileFormat`` (400) for another shape, as the plugin.
        """
        if (not isinstance(value, Mapping) or not all(isinstance(value.get(k), str) for k in (KEY_ID, KEY_SIZE, KEY_MD5))):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Bad description of a transferred instance")
        return cls(value[KEY_ID], _size_text(value[KEY_SIZE]), value[KEY_MD5].lower())


@dataclass(frozen=True)
class Chunk:
    """A byte range of one instance inside a bucket.

    Attributes
    ----------
    id : str
        Orthanc ID of the instance.
    offset : int
        First byte in the instance's file.
    size : int
        Bytes.
    """

    id: str
    offset: int
    size: int


@dataclass(frozen=True)
class Bucket:
    """The unit of one HTTP request (``TransferBucket``): consecutive chunks.

    Attributes
    ----------
    chunks : tuple of Chunk
    """

    chunks: tuple[Chunk, ...]

    @property
    def total_size(self) -> int:
        """int: bytes of the bucket before compression."""
        return sum(c.size for c in self.chunks)

    def to_json(self) -> list[dict[str, str]]:
        """list of dict: ``[{"ID", "Offset", "Size"}, ...]``, numbers as decimal strings."""
        return [{KEY_ID: c.id, KEY_OFFSET: str(c.offset), KEY_SIZE: str(c.size)} for c in self.chunks]

    @classmethod
    def from_json(cls, value: Any) -> "Bucket":
        """Parse a bucket array.

        Raises
        ------
        OrthancError
            ``BadFileFormat`` (400) for another shape.
        """
        if not isinstance(value, list):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "A bucket must be a JSON array")
        chunks = []
        for item in value:
            if not isinstance(item, Mapping) or not all(isinstance(item.get(k), str) for k in (KEY_ID, KEY_OFFSET, KEY_SIZE)):
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Bad chunk in a bucket")
            chunks.append(Chunk(item[KEY_ID], _size_text(item[KEY_OFFSET]), _size_text(item[KEY_SIZE])))
        return cls(tuple(chunks))

    def pull_uri(self, compression: str) -> str:
        """The ``GET`` URI that downloads this bucket from its source
        (``TransferBucket::ComputePullUri``).

        Parameters
        ----------
        compression : {"none", "gzip"}

        Returns
        -------
        str
            ``/transfers/chunks/<id>.<id>...?offset=<first offset>&size=<total>&compression=<c>``.
        """
        ids = ".".join(c.id for c in self.chunks)
        return (f"{URI_CHUNKS}/{ids}?offset={self.chunks[0].offset}&size={self.total_size}"
                f"&compression={compression}")


def plan_buckets(instances: Iterable[InstanceInfo], bucket_size: int, *, base_url: str = "",
                 compression: str = "none") -> list[Bucket]:
    """Cut a transfer into buckets (``TransferScheduler::ComputeBucketsInternal``).

    Parameters
    ----------
    instances : iterable of InstanceInfo
    bucket_size : int
        ``Transfers.BucketSize`` in bytes: the grouping threshold; instances of at least
        twice this size are split.
    base_url : str
        Pull mode: the source's URL, so that no download URL reaches
        :data:`MAX_URL_LENGTH` characters. Empty in push mode.
    compression : {"none", "gzip"}
        Pull mode: the compression written in the URLs.

    Returns
    -------
    list of Bucket
        Alone-travelling and split instances first, then the groups of small ones, as
        the plugin orders them.

    Raises
    ------
    ValueError
        ``bucket_size`` is not positive.
    """
    if bucket_size <= 0:
        raise ValueError("bucket size must be positive")
    separate = 2 * bucket_size
    out: list[Bucket] = []
    small: list[InstanceInfo] = []
    for inst in sorted(instances, key=lambda i: i.id):
        if inst.size < bucket_size:
            small.append(inst)
        elif inst.size < separate:
            out.append(Bucket((Chunk(inst.id, 0, inst.size),)))
        else:
            count = -(-inst.size // separate)
            step = inst.size // count
            for i in range(count):
                off = i * step
                size = inst.size - off if i == count - 1 else step
                out.append(Bucket((Chunk(inst.id, off, size),)))
    current: list[Chunk] = []
    total = 0
    for inst in small:
        if inst.size == 0:
            continue  # the plugin drops empty chunks (``TransferBucket::AddChunk``)
        current.append(Chunk(inst.id, 0, inst.size))
        total += inst.size
        full = total >= bucket_size
        if not full and base_url:
            full = len(base_url) + len(Bucket(tuple(current)).pull_uri(compression)) >= MAX_URL_LENGTH
        if full:
            out.append(Bucket(tuple(current)))
            current, total = [], 0
    if current:
        out.append(Bucket(tuple(current)))
    return out


def gzip_bytes(data: bytes, level: int = GZIP_LEVEL) -> bytes:
    """Compress ``data`` as one gzip member (what Orthanc's ``GzipCompressor`` reads).

    Parameters
    ----------
    data : bytes
    level : int
        zlib level, 0-9.

    Returns
    -------
    bytes
    """
    c = zlib.compressobj(level, zlib.DEFLATED, 31)
    return c.compress(data) + c.flush()


def gunzip_bytes(data: bytes) -> bytes:
    """Inflate a gzip bucket.

    Raises
    ------
    OrthancError
        ``BadFileFormat`` (400) when ``data`` is not valid gzip.
    """
    try:
        d = zlib.decompressobj(31)
        out = d.decompress(data) + d.flush()
        if not d.eof:
            raise zlib.error("truncated")
        return out
    except zlib.error:
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Corrupted gzip bucket") from None


def parse_resources(value: Any) -> list[tuple[str, str]]:
    """Parse a ``Resources`` array of ``{"Level", "ID"}`` objects
    (``TransferScheduler::ParseListOfResources``).

    Parameters
    ----------
    value : any

    Returns
    -------
    list of (str, str)
        ``(level, id)``, the level normalized to ``Patient``/``Study``/``Series``/``Instance``.

    Raises
    ------
    OrthancError
        ``BadFileFormat`` (400) for a malformed array or item; ``ParameterOutOfRange``
        (400) for an unknown level.
    """
    if not isinstance(value, list):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Resources must be a JSON array")
    out = []
    for item in value:
        if (not isinstance(item, Mapping) or not isinstance(item.get(KEY_LEVEL), str)
                or not isinstance(item.get(KEY_ID), str)):
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, 'Each resource must be an object with "Level" and "ID"')
        out.append((normalize_level(item[KEY_LEVEL]), item[KEY_ID]))
    return out


_LEVELS = {"patient": "Patient", "patients": "Patient", "study": "Study", "studies": "Study",
           "series": "Series", "instance": "Instance", "instances": "Instance", "image": "Instance"}


def normalize_level(name: str) -> str:
    """Orthanc's ``StringToResourceType``: case-insensitive, plural and ``Image`` accepted.

    Raises
    ------
    OrthancError
        ``ParameterOutOfRange`` (400) for an unknown level.
    """
    lvl = _LEVELS.get(name.strip().lower())
    if lvl is None:
        raise OrthancError(ErrorCode.PARAMETER_OUT_OF_RANGE, f"Unknown resource level: {name}")
    return lvl


def parse_transfer_query(body: Any) -> dict[str, Any]:
    """Check the body of ``/transfers/send`` and ``/transfers/pull`` (``TransferQuery``).

    Parameters
    ----------
    body : any

    Returns
    -------
    dict
        ``Peer`` (str), ``Resources`` (the array as given), ``Compression``, ``Priority``
        (int, 0 by default), and ``Originator`` / ``SenderTransferID`` when given.

    Raises
    ------
    OrthancError
        ``BadFileFormat`` (400) when ``Resources`` (array), ``Peer`` or ``Compression``
        (strings) is missing or mistyped, or ``Priority`` is not an integer, or
        ``Originator`` / ``SenderTransferID`` is not a string.
    """
    if (not isinstance(body, Mapping) or not isinstance(body.get(KEY_RESOURCES), list)
            or not isinstance(body.get(KEY_PEER), str) or not isinstance(body.get(KEY_COMPRESSION), str)):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT,
                           'The body must be an object with "Resources" (array), "Peer" and "Compression" (strings)')
    out: dict[str, Any] = {KEY_PEER: body[KEY_PEER], KEY_RESOURCES: body[KEY_RESOURCES],
                           KEY_COMPRESSION: check_compression(body[KEY_COMPRESSION])}
    parse_resources(body[KEY_RESOURCES])
    prio = body.get(KEY_PRIORITY, 0)
    if isinstance(prio, bool) or not isinstance(prio, int):
        raise OrthancError(ErrorCode.BAD_FILE_FORMAT, "Priority must be an integer")
    out[KEY_PRIORITY] = prio
    for key in (KEY_ORIGINATOR, KEY_SENDER_TRANSFER_ID):
        if key in body:
            if not isinstance(body[key], str):
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"{key} should be a string")
            out[key] = body[key]
    return out


def check_bucket_layout(instances: Sequence[InstanceInfo], buckets: Sequence[Bucket]) -> None:
    """Check that every chunk of ``buckets`` lies inside a known instance.

    Parameters
    ----------
    instances : sequence of InstanceInfo
    buckets : sequence of Bucket

    Raises
    ------
    OrthancError
        ``BadFileFormat`` (400) for a chunk of an unknown instance or out of its bounds,
        or an instance listed twice.
    """
    sizes = {}
    for inst in instances:
        if inst.id in sizes:
            raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Instance listed twice: {inst.id}")
        sizes[inst.id] = inst.size
    for b in buckets:
        for c in b.chunks:
            if c.id not in sizes:
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Bucket chunk of an unknown instance: {c.id}")
            if c.offset + c.size > sizes[c.id]:
                raise OrthancError(ErrorCode.BAD_FILE_FORMAT, f"Bucket chunk out of the bounds of instance {c.id}")
