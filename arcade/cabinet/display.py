"""What the cabinet's screen shows: the payment QR code while it can take money, else a notice.

Drawn in the terminal with block characters.
"""

from __future__ import annotations

import io

import qrcode

OUT_OF_ORDER = "OUT OF ORDER"


def qr_text(url: str, *, invert: bool = False) -> str:
    """Return the QR code of ``url`` as lines of block characters, the URL under it."""
    code = qrcode.QRCode(border=2)
    code.add_data(url)
    code.make(fit=True)
    out = io.StringIO()
    code.print_ascii(out=out, invert=invert)
    return f"{out.getvalue()}Scan to pay: {url}\n"


def out_of_order_text(reason: str) -> str:
    """Return the screen shown instead of the QR code while credits cannot arrive."""
    width = max(len(OUT_OF_ORDER), len(reason)) + 4
    rule = "#" * width
    return f"{rule}\n# {OUT_OF_ORDER.center(width - 4)} #\n# {reason.center(width - 4)} #\n{rule}\n"
