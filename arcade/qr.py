"""QR codes of payment link URLs, as PNG and SVG."""

from __future__ import annotations

import hashlib
import io

MEDIA_TYPES = {"png": "image/png", "svg": "image/svg+xml"}


def render(url: str, kind: str) -> bytes:
    """Return the QR code of ``url`` as ``png`` or ``svg`` bytes."""
    import qrcode

    if kind == "png":
        from qrcode.image.pure import PyPNGImage

        factory = PyPNGImage
    else:
        from qrcode.image.svg import SvgPathImage

        factory = SvgPathImage
    image = qrcode.make(url, image_factory=factory, box_size=10, border=4)
    out = io.BytesIO()
    image.save(out)
    return out.getvalue()


def etag(url: str, kind: str) -> str:
    """Return a strong ETag for the QR code of ``url`` in ``kind``."""
    return '"' + hashlib.sha256(f"{kind}:{url}".encode()).hexdigest()[:32] + '"'
