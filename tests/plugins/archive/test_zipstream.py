"""The streaming ZIP writer: classic structures by default, ZIP64 only when the entry
count needs it (checked with Python's zipfile and ``unzip -t``), streamed entries with
data descriptors or patched headers, and the scan used to resume a partial archive."""
from __future__ import annotations

import io
import struct
import zipfile

import pytest
from archive_helpers import unzip_test
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from pacsbox_archive import zipstream as Z


_TINY_UID = "1.2.826.0.1.3680043.8.498.10000000"


def _tiny_template() -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.file_meta.MediaStorageSOPInstanceUID = _TINY_UID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = _TINY_UID
    ds.PatientID = "TINY"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


_TEMPLATE = _tiny_template()


def tiny_instance(i: int) -> bytes:
    """A minimal Part 10 file (about 300 bytes) whose SOP Instance UID ends with ``i``
    (made from one pydicom-written file, the UID patched at the same length)."""
    assert 0 <= i < 10 ** 7
    return _TEMPLATE.replace(_TINY_UID.encode(), f"1.2.826.0.1.3680043.8.498.1{i:07d}".encode())


def write_archive(path, entries) -> int:
    with open(path, "wb") as f:
        w = Z.ZipWriter(f.write, comment=b"Created by Orthanc")
        for name, data in entries:
            w.add(Z.prepare_entry(name, data))
        return w.close()


def test_small_archive_is_classic_zip(tmp_path):
    p = tmp_path / "a.zip"
    datas = [tiny_instance(i) for i in range(3)] + [b"", b"\x00" * 100000]
    size = write_archive(p, [(f"d/{i}.dcm", d) for i, d in enumerate(datas)])
    assert size == p.stat().st_size
    assert not Z.uses_zip64(p)
    with zipfile.ZipFile(p) as z:
        assert z.testzip() is None and z.comment == b"Created by Orthanc"
        assert [z.read(f"d/{i}.dcm") for i in range(len(datas))] == datas
        infos = z.infolist()
        assert infos[3].compress_type == zipfile.ZIP_STORED          # empty: nothing to deflate
        assert infos[4].compress_type == zipfile.ZIP_DEFLATED
        assert all(i.extract_version == 20 and not i.extra for i in infos)
    unzip_test(p)


def test_zip64_only_beyond_65534_entries(tmp_path):
    one = tiny_instance(1)
    p = tmp_path / "below.zip"
    write_archive(p, ((f"IM{i}", one) for i in range(65534)))
    assert not Z.uses_zip64(p)
    with zipfile.ZipFile(p) as z:
        assert len(z.infolist()) == 65534
    # 65,536 distinct tiny synthetic instances: the count needs ZIP64
    datas = [tiny_instance(i) for i in range(65536)]
    p = tmp_path / "many.zip"
    write_archive(p, ((f"IMAGES/IM{i}", d) for i, d in enumerate(datas)))
    assert Z.uses_zip64(p)
    with zipfile.ZipFile(p) as z:
        infos = z.infolist()
        assert len(infos) == 65536
        assert z.testzip() is None
        assert z.read("IMAGES/IM0") == datas[0] and z.read("IMAGES/IM65535") == datas[65535]
        # entries themselves stay classic: small sizes and offsets need no ZIP64 extra
        assert not infos[-1].extra
    out = unzip_test(p)
    assert "No errors detected" in out


def test_streamed_entry_with_data_descriptor(tmp_path):
    buf = io.BytesIO()
    w = Z.ZipWriter(buf.write)
    payload = bytes(range(256)) * 20000
    w.add(Z.prepare_entry("first", b"abc"))
    rec = w.add_stream("big", (payload[i:i + 65536] for i in range(0, len(payload), 65536)),
                       size_hint=len(payload))
    w.add_stream("stored", iter([b"xyz"] * 3), size_hint=9, compress=False)
    w.close()
    assert rec.flags & 0x08
    p = tmp_path / "s.zip"
    p.write_bytes(buf.getvalue())
    with zipfile.ZipFile(p) as z:
        assert z.read("big") == payload and z.read("stored") == b"xyzxyzxyz" and z.read("first") == b"abc"
        assert z.getinfo("big").flag_bits & 0x08
    unzip_test(p)


def test_patched_entries_can_be_scanned_and_resumed(tmp_path):
    p = tmp_path / "r.zip"
    payload = b"0123456789" * 300000
    with open(p, "wb") as f:
        w = Z.ZipWriter(f.write)
        w.add(Z.prepare_entry("a", b"A" * 1000))
        w.add_stream("b", iter([payload[:1000000], payload[1000000:]]), size_hint=len(payload), patch=f)
        cut = w.offset
        w.add(Z.prepare_entry("c", b"C" * 10))        # written after the commit point
    with open(p, "rb") as f:
        records = Z.scan_entries(f, cut)
        assert [r.name for r in records] == [b"a", b"b"]
        assert records[1].size == len(payload) and not records[1].flags & 0x08
        assert Z.scan_entries(f, cut - 1) is None       # not an entry boundary
    # resume: truncate at the commit point and go on
    with open(p, "r+b") as f:
        f.truncate(cut)
        f.seek(cut)
        w = Z.ZipWriter(f.write, offset=cut, records=records)
        w.add(Z.prepare_entry("d", b"D" * 10))
        w.close()
    with zipfile.ZipFile(p) as z:
        assert z.namelist() == ["a", "b", "d"]
        assert z.read("b") == payload and z.testzip() is None
    unzip_test(p)


def test_offsets_beyond_4_gib_get_zip64_fields(tmp_path):
    """A writer resumed at an offset past 4 GiB writes ZIP64 offsets and end records
    (what a >4 GiB archive produces), readable by zipfile from the central directory."""
    buf = io.BytesIO()
    base = 5 * 2 ** 30
    w = Z.ZipWriter(buf.write, offset=base)
    w.add(Z.prepare_entry("late", b"hello"))
    w.close()
    data = buf.getvalue()
    # the central record of "late" carries its offset in a ZIP64 extra field
    cd = data.index(struct.pack("<I", 0x02014B50))
    extra_len = struct.unpack_from("<H", data, cd + 30)[0]
    assert struct.unpack_from("<I", data, cd + 42)[0] == 0xFFFFFFFF and extra_len == 12
    assert struct.unpack_from("<HHQ", data, cd + 46 + 4) == (1, 8, base)
    assert struct.pack("<I", 0x06064B50) in data and struct.pack("<I", 0x07064B50) in data


@pytest.mark.parametrize("backend", sorted(Z.BACKENDS))
def test_backends_produce_standard_deflate(backend):
    data = tiny_instance(3) * 50
    e = Z.prepare_entry("x", data, backend=backend)
    assert e.method == Z.DEFLATED and len(e.data) < len(data)
    import zlib
    assert zlib.decompress(e.data, -15) == data and e.crc == zlib.crc32(data)
