"""The attract-screen QR code, drawn in the terminal with block characters."""

from __future__ import annotations

import io

import qrcode


def qr_text(url: str, *, invert: bool = False) -> str:
    """Return the QR code of ``url`` as lines of block characters, the URL under it."""
    code = qrcode.QRCode(border=2)
    code.add_data(url)
    code.make(fit=True)
    out = io.StringIO()
    code.print_ascii(out=out, invert=invert)
    return f"{out.getvalue()}Scan to pay: {url}\n"
