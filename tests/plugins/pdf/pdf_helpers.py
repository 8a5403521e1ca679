"""Helpers of the pdf plugin's tests: apps with the plugin, payloads, data URIs."""
from __future__ import annotations

import base64
import io

import falcon.testing

import pacsbox_pdf.plugin as pdf_plugin

#: The Dictionary of reference section 7 (a creator, an LO and a US).
KIT_DICTIONARY = {"0041,10": ["LO", "KitComment", 1, 1, "KitCreator"],
                  "0041,11": ["US", "KitNumber", 1, 1, "KitCreator"]}


def pdf_client(make_app, config: dict | None = None, plugins=()):
    """A falcon TestClient of an app with the pdf plugin (and ``plugins``)."""
    app = make_app(config or {}, plugins=[pdf_plugin, *plugins])
    return falcon.testing.TestClient(app)


def data_uri(mime: str, payload: bytes) -> str:
    """``data:<mime>;base64,...``."""
    return f"data:{mime};base64," + base64.b64encode(payload).decode("ascii")


def make_pdf(size: int = 193, *, ending: bytes = b"%%EOF\n") -> bytes:
    """A PDF-like payload of exactly ``size`` bytes (``%PDF-`` header, ``ending`` last)."""
    head = b"%PDF-1.4\n"
    filler = size - len(head) - len(ending)
    assert filler >= 0
    return head + (b"x" * filler) + ending


def image_bytes(mode: str, size=(5, 3), color=None, fmt: str = "PNG", **save) -> bytes:
    """A pillow image encoded as ``fmt``."""
    from PIL import Image
    if color is None:
        color = {"L": 77, "I;16": 1000, "RGB": (1, 2, 3), "RGBA": (1, 2, 3, 4), "P": 1, "LA": (1, 2)}[mode]
    img = Image.new(mode, size, color)
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def read_dataset(client, instance_id: str):
    """The stored file of an instance, parsed by pydicom."""
    import pydicom
    r = client.simulate_get(f"/instances/{instance_id}/file")
    assert r.status_code == 200
    return pydicom.dcmread(io.BytesIO(r.content))
