"""DIMSE command sets and P-DATA-TF PDUs, encoded and parsed without pydicom.

The hot paths of the plugin (the C-STORE SCU of ``send.py``, the C-STORE SCP fast path
of ``receive.py``, the C-FIND and C-MOVE/C-GET Pending responses) write and read
command sets themselves: pynetdicom builds a pydicom data set per message and hands
every PDU between two threads, which costs more than storing the instance. These are
the few primitives they share.

Sources: PS3.7 section 6.3.1 (a command set is group 0000 in Implicit VR Little Endian,
its group length first), PS3.7 annex E (the command fields), PS3.8 section 9.3.5
(P-DATA-TF PDU) and annex E (the message control header of a PDV).
"""
from __future__ import annotations

import struct

__all__ = ["element", "uid", "us", "command_set", "command_pdu", "data_pdus", "parse_command", "command_uid",
           "command_us", "response_pdu", "PDV_COMMAND", "PDV_LAST"]

#: Message control header bits of a PDV (PS3.8 annex E.2).
PDV_COMMAND = 0x01
PDV_LAST = 0x02

_PDU_HEADER = struct.Struct(">BBIIBB")   # PDU type, reserved, PDU length, PDV length, context ID, control
_ELEMENT = struct.Struct("<HHI")          # group, element, value length (Implicit VR LE)
_US = struct.Struct("<H")


def element(elem: int, value: bytes) -> bytes:
    """One element ``(0000,elem)`` of a command set with its already encoded ``value``
    (even length)."""
    return _ELEMENT.pack(0x0000, elem, len(value)) + value


def uid(value: str) -> bytes:
    """A UI value: ASCII, padded with a NUL to even length (PS3.5 section 9.1)."""
    b = value.encode("ascii")
    return b + b"\x00" if len(b) % 2 else b


def us(value: int) -> bytes:
    """A US value (unsigned 16-bit, little endian), clamped to 0-65535."""
    return _US.pack(min(max(int(value), 0), 65535))


def command_set(elements: list[bytes]) -> bytes:
    """The command set of ``elements`` (each from :func:`element`, in ascending tag
    order), preceded by its (0000,0000) *Command Group Length*."""
    rest = b"".join(elements)
    return element(0x0000, struct.pack("<I", len(rest))) + rest


def command_pdu(context_id: int, command: bytes) -> bytes:
    """One P-DATA-TF PDU holding ``command`` whole, as the last command fragment (a
    command set is a few hundred bytes, below any maximum PDU length the standard
    allows a peer to announce, 4096 bytes at least in practice)."""
    return _PDU_HEADER.pack(0x04, 0, len(command) + 6, len(command) + 2, context_id,
                            PDV_COMMAND | PDV_LAST) + command


def data_pdus(context_id: int, data: bytes, max_pdu: int) -> list[bytes]:
    """The P-DATA-TF PDUs of a data set: one PDV per PDU, each at most ``max_pdu - 6``
    bytes of data (``max_pdu`` is the peer's *maximum length received*, 0 for no
    limit), the last one flagged.

    Returns
    -------
    list of bytes
        Headers and fragments, alternating, to be joined or written in order.
    """
    n = len(data)
    step = max_pdu - 6 if max_pdu and max_pdu > 6 else max(n, 1)
    view = memoryview(data)
    out: list[bytes] = []
    for start in range(0, max(n, 1), step):
        frag = view[start:start + step]
        out.append(_PDU_HEADER.pack(0x04, 0, len(frag) + 6, len(frag) + 2, context_id,
                                    PDV_LAST if start + step >= n else 0))
        out.append(frag)
    return out


def response_pdu(context_id: int, command_field: int, sop_class_uid: str, responded_id: int, status: int,
                 sop_instance_uid: str | None = None, extra: list[bytes] = ()) -> bytes:
    """The PDU of a response without data set (PS3.7 annex E): Affected SOP Class UID,
    Command Field, Message ID Being Responded To, Command Data Set Type ``0x0101``,
    Status, then (0000,1000) *Affected SOP Instance UID* when given, then ``extra``
    elements (tags above (0000,1000), in order).

    Byte-identical to what pynetdicom's ``DIMSEServiceProvider.send_msg`` writes for
    the same response (checked by the tests for C-STORE, C-MOVE and C-GET responses).
    """
    elements = [element(0x0002, uid(sop_class_uid)), element(0x0100, us(command_field)),
                element(0x0120, us(responded_id)), element(0x0800, us(0x0101)), element(0x0900, us(status))]
    if sop_instance_uid is not None:
        elements.append(element(0x1000, uid(sop_instance_uid)))
    elements.extend(extra)
    return command_pdu(context_id, command_set(elements))


def parse_command(data: bytes) -> dict[int, bytes]:
    """The elements of an encoded command set, ``{element number: raw value}``.

    Raises
    ------
    ValueError
        The bytes are not a command set (an element outside group 0000, or a value
        running past the end).
    """
    out: dict[int, bytes] = {}
    pos, n = 0, len(data)
    while pos + 8 <= n:
        group, elem, length = _ELEMENT.unpack_from(data, pos)
        pos += 8
        if group != 0x0000 or pos + length > n:
            raise ValueError("not a DIMSE command set")
        out[elem] = data[pos:pos + length]
        pos += length
    if pos != n:
        raise ValueError("truncated DIMSE command set")
    return out


def command_uid(fields: dict[int, bytes], elem: int) -> str:
    """A UI (or AE) value of a parsed command set, without padding; empty when absent."""
    raw = fields.get(elem)
    return raw.decode("ascii", "replace").rstrip("\x00 ").lstrip(" ") if raw else ""


def command_us(fields: dict[int, bytes], elem: int) -> int | None:
    """A US value of a parsed command set; None when absent or not 2 bytes long."""
    raw = fields.get(elem)
    return _US.unpack(raw)[0] if raw is not None and len(raw) == 2 else None
