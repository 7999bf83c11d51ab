"""QR codes of payment link URLs, as PNG and SVG.

Drawing one is pure Python: about 17 ms of CPU for a PNG, 8 ms for an SVG, far more for a long
URL, all of it holding the interpreter. Anyone may ask for a QR code, over and over, so each
image is drawn once and kept (``CACHED_IMAGES``, least recently used first out), a request
that would draw one may choose not to wait behind ``DRAWING_AT_ONCE`` others (``Busy``), and a
URL longer than ``MAX_URL_LENGTH`` is not drawn at all: a flood of QR requests must not keep
Stripe's webhooks waiting for the workers (SPEC "Serving locally").

An address the caller chose (the player page's, made of the request's Host) can be a new one
with every request: such images are kept apart (``CACHED_CHOSEN_IMAGES``) and drawn one at a
time, so made-up Host names can neither push a machine's QR code out of the kept ones nor
hold every drawing slot while it has to be drawn again.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict

MEDIA_TYPES = {"png": "image/png", "svg": "image/svg+xml"}

# A Payment Link's URL with its client_reference_id is about 90 characters, a player page's
# its host name and /play/<id>; anything near a QR code's own limit (2,953 bytes, where
# qrcode raises ValueError) is neither, and no phone reads such a code from a screen.
MAX_URL_LENGTH = 512
CACHED_IMAGES = 256
CACHED_CHOSEN_IMAGES = 64
DRAWING_AT_ONCE = 2

_lock = threading.Lock()
_images: OrderedDict[tuple[str, str], bytes] = OrderedDict()
_chosen_images: OrderedDict[tuple[str, str], bytes] = OrderedDict()
_drawing = threading.BoundedSemaphore(DRAWING_AT_ONCE)
# Of the DRAWING_AT_ONCE slots, images of addresses a caller chose take at most this one.
_drawing_chosen = threading.BoundedSemaphore(1)


class TooLong(ValueError):
    """The URL is longer than ``MAX_URL_LENGTH``: no QR code is drawn of it."""


class Busy(RuntimeError):
    """``DRAWING_AT_ONCE`` QR codes are being drawn already and the caller would not wait."""


def render(url: str, kind: str, *, wait: bool = True, chosen_by_caller: bool = False) -> bytes:
    """Return the QR code of ``url`` as ``png`` or ``svg`` bytes, drawn once and kept.

    ``chosen_by_caller``: the URL holds what the request chose (its Host), so the image is
    kept apart and drawn in the one slot such images share.
    Raises TooLong for a URL over ``MAX_URL_LENGTH``, and, without ``wait``, Busy when the
    image is not kept yet and the slots it may be drawn in are taken.
    """
    if len(url) > MAX_URL_LENGTH:
        raise TooLong(f"a QR code's address is at most {MAX_URL_LENGTH} characters")
    key = (url, kind)
    kept, room = (
        (_chosen_images, CACHED_CHOSEN_IMAGES) if chosen_by_caller else (_images, CACHED_IMAGES)
    )
    with _lock:
        image = kept.get(key)
        if image is not None:
            kept.move_to_end(key)
            return image
    slots = [_drawing_chosen, _drawing] if chosen_by_caller else [_drawing]
    taken: list[threading.BoundedSemaphore] = []
    try:
        for slot in slots:
            if not slot.acquire(blocking=wait):
                raise Busy("QR codes are being drawn for other requests")
            taken.append(slot)
        image = _draw(url, kind)
    finally:
        for slot in reversed(taken):
            slot.release()
    with _lock:
        kept[key] = image
        while len(kept) > room:
            kept.popitem(last=False)
    return image


def _draw(url: str, kind: str) -> bytes:
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
