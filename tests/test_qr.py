"""The QR code a cabinet shows: its default payment link URL, as PNG or SVG, cacheable.

No QR decoder is installed, so the PNG is checked two ways: its pixels, read back with pypng,
are exactly the module grid ``qrcode`` computes for the link URL, and its bytes equal what
``qrcode`` renders for that URL with the same image factory.
"""

from __future__ import annotations

import io

import png
import pytest
import qrcode
from qrcode.image.pure import PyPNGImage
from qrcode.image.svg import SvgPathImage

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BOX_SIZE = 10
BORDER = 4


def link_url(client, cabinet) -> str:
    answer = client.post(
        "/create-payment-link", json={"machine_id": cabinet.machine_id}, headers=cabinet.auth
    )
    assert answer.status_code == 200
    return answer.json["url"]


def rendered(url: str, factory) -> bytes:
    out = io.BytesIO()
    qrcode.make(url, image_factory=factory, box_size=BOX_SIZE, border=BORDER).save(out)
    return out.getvalue()


def dark_modules(png_bytes: bytes) -> list[list[bool]]:
    """Read a QR PNG back into its grid of modules (True = dark), sampling each box's centre."""
    width, height, rows, _info = png.Reader(bytes=png_bytes).asRGB8()
    pixels = [list(row) for row in rows]
    assert width == height and width % BOX_SIZE == 0

    def dark(x: int, y: int) -> bool:
        px, py = x * BOX_SIZE + BOX_SIZE // 2, y * BOX_SIZE + BOX_SIZE // 2
        return sum(pixels[py][3 * px : 3 * px + 3]) < 3 * 128

    size = width // BOX_SIZE
    return [[dark(x, y) for x in range(size)] for y in range(size)]


def qr_matrix(url: str) -> list[list[bool]]:
    code = qrcode.QRCode(border=BORDER)
    code.add_data(url)
    code.make(fit=True)
    return code.get_matrix()


def test_the_png_is_the_qr_code_of_the_machines_link(client, cabinet):
    """GIVEN a machine's link WHEN its qr.png is fetched THEN a PNG of exactly that URL."""
    url = link_url(client, cabinet)

    answer = client.get("/machines/cab001/qr.png")

    assert answer.status_code == 200
    assert answer.mimetype == "image/png"
    image = answer.get_data()
    assert image.startswith(PNG_SIGNATURE)
    assert dark_modules(image) == qr_matrix(url)
    assert image == rendered(url, PyPNGImage)


def test_the_svg_is_the_qr_code_of_the_machines_link(client, cabinet):
    """GIVEN a machine's link WHEN its qr.svg is fetched THEN an SVG path of that URL's code."""
    url = link_url(client, cabinet)

    answer = client.get("/machines/cab001/qr.svg")

    assert answer.status_code == 200
    assert answer.mimetype == "image/svg+xml"
    text = answer.get_data(as_text=True)
    assert "<svg" in text and "<path" in text
    assert answer.get_data() == rendered(url, SvgPathImage)


def test_the_qr_code_needs_no_token_and_makes_the_link_once(client, cabinet, stripe_standin):
    """GIVEN no link yet WHEN the QR is fetched, then the link asked THEN one link, same URL."""
    image = client.get("/machines/cab001/qr.png")
    vector = client.get("/machines/cab001/qr.svg")
    url = link_url(client, cabinet)

    assert image.status_code == 200 and vector.status_code == 200
    assert len(stripe_standin.payment_links) == 1
    assert image.get_data() == rendered(url, PyPNGImage)


def test_the_qr_code_is_of_the_open_quantity_link(client, cabinet):
    """GIVEN a fixed-quantity link made first WHEN the QR is fetched THEN it shows the open one."""
    fixed = client.post(
        "/create-payment-link", json={"machine_id": "cab001", "quantity": 2}, headers=cabinet.auth
    ).json["url"]
    url = link_url(client, cabinet)

    image = client.get("/machines/cab001/qr.png").get_data()

    assert fixed != url
    assert image == rendered(url, PyPNGImage)


@pytest.mark.parametrize("kind", ["png", "svg"])
def test_the_qr_code_is_cacheable(client, cabinet, kind):
    """GIVEN a QR code WHEN fetched twice THEN the same strong ETag and a Cache-Control."""
    first = client.get(f"/machines/cab001/qr.{kind}")
    second = client.get(f"/machines/cab001/qr.{kind}")

    tag = first.headers["ETag"]
    assert tag.startswith('"') and tag.endswith('"')
    assert second.headers["ETag"] == tag
    assert "max-age=" in first.headers["Cache-Control"]
    assert "no-store" not in first.headers["Cache-Control"]


def test_png_and_svg_have_different_etags(client, cabinet):
    """GIVEN both images of one link WHEN fetched THEN their ETags differ."""
    png_tag = client.get("/machines/cab001/qr.png").headers["ETag"]
    svg_tag = client.get("/machines/cab001/qr.svg").headers["ETag"]

    assert png_tag != svg_tag


@pytest.mark.parametrize("kind", ["png", "svg"])
def test_a_matching_if_none_match_is_a_304(client, cabinet, stripe_standin, kind):
    """GIVEN the ETag a screen holds WHEN it asks again with If-None-Match THEN 304, no body."""
    tag = client.get(f"/machines/cab001/qr.{kind}").headers["ETag"]
    stripe_standin.reset_requests()

    answer = client.get(f"/machines/cab001/qr.{kind}", headers={"If-None-Match": tag})

    assert answer.status_code == 304
    assert answer.get_data() == b""
    assert answer.headers["ETag"] == tag
    assert stripe_standin.requests == []


@pytest.mark.parametrize(
    "header",
    ['"stale", {tag}', "W/{tag}", "*"],
    ids=["in-a-list", "weak", "star"],
)
def test_if_none_match_is_read_as_http_says(client, cabinet, header):
    """GIVEN the ETag in a list, as weak, or '*' WHEN sent THEN 304 (weak comparison, RFC 9110)."""
    tag = client.get("/machines/cab001/qr.png").headers["ETag"]

    answer = client.get(
        "/machines/cab001/qr.png", headers={"If-None-Match": header.format(tag=tag)}
    )

    assert answer.status_code == 304


def test_a_stale_if_none_match_gets_the_image(client, cabinet):
    """GIVEN an ETag that is not the current one WHEN sent THEN 200 with the image."""
    answer = client.get("/machines/cab001/qr.png", headers={"If-None-Match": '"stale"'})

    assert answer.status_code == 200
    assert answer.get_data().startswith(PNG_SIGNATURE)


def test_an_unknown_machine_has_no_qr_code(client, stripe_standin):
    """GIVEN no machine ghost01 WHEN its QR is fetched THEN 404 and no Stripe call."""
    answer = client.get("/machines/ghost01/qr.png")

    assert answer.status_code == 404
    assert answer.json["code"] == "unknown_machine"
    assert stripe_standin.requests == []


@pytest.mark.parametrize("path", ["/machines/a%20b/qr.png", "/machines/%2B/qr.svg"])
def test_a_bad_machine_id_is_a_400(client, stripe_standin, path):
    """GIVEN an unsafe machine id WHEN its QR is fetched THEN 400."""
    answer = client.get(path)

    assert answer.status_code == 400
    assert answer.json["code"] == "invalid_machine_id"
    assert stripe_standin.requests == []


@pytest.mark.parametrize("kind", ["gif", "PNG", "jpg"])
def test_an_unknown_image_format_is_a_400(client, cabinet, stripe_standin, kind):
    """GIVEN a format other than png or svg WHEN asked THEN 400, no Stripe call."""
    answer = client.get(f"/machines/cab001/qr.{kind}")

    assert answer.status_code == 400
    assert set(answer.json) == {"error", "code"}
    assert answer.json["code"] == "invalid_format"
    assert stripe_standin.requests == []


def test_anonymous_qr_requests_during_a_stripe_outage_cost_one_stripe_call(
    client, cabinet, stripe_standin, fast_stripe_retries
):
    """GIVEN Stripe failing WHEN 20 anonymous qr.png requests come for a machine with no link
    yet THEN one request reaches Stripe in all, and each answer is a 502, not a 500."""
    stripe_standin.fail_next(500, count=100)
    stripe_standin.reset_requests()

    answers = [client.get("/machines/cab001/qr.png") for _ in range(20)]

    assert {a.status_code for a in answers} == {502}
    assert len(stripe_standin.requests) == 1


def test_an_anonymous_qr_request_makes_its_link_with_one_stripe_call(
    client, cabinet, stripe_standin
):
    """GIVEN no link yet WHEN the QR code is asked for THEN one Stripe request makes the link:
    its Price comes back expanded with it."""
    stripe_standin.reset_requests()

    answer = client.get("/machines/cab001/qr.png")

    assert answer.status_code == 200
    assert [(r.method, r.path) for r in stripe_standin.requests] == [("POST", "/v1/payment_links")]


def test_anonymous_qr_requests_when_only_link_creation_fails_cost_one_call(
    client, cabinet, stripe_standin, fast_stripe_retries
):
    stripe_standin.fail_next(500, count=100, path="POST /v1/payment_links")
    stripe_standin.reset_requests()

    answers = [client.get("/machines/cab001/qr.png") for _ in range(20)]

    assert {a.status_code for a in answers} == {502}
    assert len(stripe_standin.requests) == 1


# --- the QR code of a chosen link (quantity, price) ----------------------------------------------


@pytest.mark.parametrize("kind", ["png", "svg"])
def test_the_qr_path_answered_for_a_quantity_is_the_code_of_that_link(client, cabinet, kind):
    """GIVEN a link for 3 units WHEN the QR path it answered is fetched THEN the image is of that
    link's URL, not the default one's."""
    answer = client.post(
        "/create-payment-link", json={"machine_id": "cab001", "quantity": 3}, headers=cabinet.auth
    ).json
    default_url = link_url(client, cabinet)

    image = client.get(answer[f"qr_{kind}"])

    assert answer[f"qr_{kind}"] == f"/machines/cab001/qr.{kind}?quantity=3"
    assert image.status_code == 200
    factory = PyPNGImage if kind == "png" else SvgPathImage
    assert image.get_data() == rendered(answer["url"], factory)
    assert answer["url"] != default_url


def test_the_qr_path_answered_for_another_price_is_the_code_of_that_link(
    client, register, stripe_standin
):
    """GIVEN a machine with its own price WHEN a link at the default price is asked THEN its QR
    path names that price and shows that link."""
    stripe_standin.add_price("price_cab002", 75)
    cabinet = register("cab002", price_id="price_cab002")
    answer = client.post(
        "/create-payment-link",
        json={"machine_id": "cab002", "price_id": "price_default_credit"},
        headers=cabinet.auth,
    ).json

    image = client.get(answer["qr_png"])

    assert answer["qr_png"] == "/machines/cab002/qr.png?price_id=price_default_credit"
    assert image.status_code == 200
    assert dark_modules(image.get_data()) == qr_matrix(answer["url"])


def test_different_quantities_have_different_etags(client, cabinet):
    """GIVEN links for 1 and 2 units WHEN their QR codes are fetched THEN different ETags."""
    for quantity in (1, 2):
        client.post(
            "/create-payment-link",
            json={"machine_id": "cab001", "quantity": quantity},
            headers=cabinet.auth,
        )

    one = client.get("/machines/cab001/qr.png?quantity=1").headers["ETag"]
    two = client.get("/machines/cab001/qr.png?quantity=2").headers["ETag"]

    assert one != two


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("quantity=0", "invalid_quantity"),
        ("quantity=11", "invalid_quantity"),
        ("quantity=-1", "invalid_quantity"),
        ("quantity=3.0", "invalid_quantity"),
        ("quantity=abc", "invalid_quantity"),
        ("quantity=", "invalid_quantity"),
        ("quantity=true", "invalid_quantity"),
        ("quantity=%EF%BC%93", "invalid_quantity"),  # a full-width 3
        ("quantity=99999999999999999999", "invalid_quantity"),
        ("price_id=", "invalid_price_id"),
        ("price_id=price_someone_elses", "price_not_allowed"),
    ],
)
def test_a_bad_choice_in_the_qr_query_is_a_400(client, cabinet, stripe_standin, query, code):
    """GIVEN a quantity or price create-payment-link would refuse WHEN put in the QR code's query
    THEN the same 400, as JSON, and no Stripe call."""
    stripe_standin.reset_requests()

    answer = client.get(f"/machines/cab001/qr.png?{query}")

    assert answer.status_code == 400
    assert set(answer.json) == {"error", "code"}
    assert answer.json["code"] == code
    assert stripe_standin.requests == []


def test_anonymous_qr_requests_for_every_quantity_cost_one_stripe_call_a_minute(
    client, register, stripe_standin
):
    """GIVEN a machine with no link yet WHEN anonymous QR requests ask for quantities 1 to 10
    THEN one reaches Stripe and makes its link; the others are 429 until a minute has passed
    (SPEC "HTTP": at most one Stripe call per machine per minute)."""
    register("cab001")
    stripe_standin.reset_requests()

    answers = [client.get(f"/machines/cab001/qr.png?quantity={n}") for n in range(1, 11)]
    answers += [client.get("/machines/cab001/qr.svg")]

    assert answers[0].status_code == 200
    assert {a.status_code for a in answers[1:]} == {429}
    assert {a.json["code"] for a in answers[1:]} == {"too_many_requests"}
    assert [(r.method, r.path) for r in stripe_standin.requests] == [("POST", "/v1/payment_links")]
    # A link once made costs nothing: asked again, still no second call.
    assert client.get("/machines/cab001/qr.png?quantity=1").status_code == 200
    assert len(stripe_standin.requests) == 1


def test_the_anonymous_limit_is_per_machine_and_never_holds_back_a_cabinet(
    client, register, stripe_standin
):
    """GIVEN one anonymous Stripe call spent on cab001 WHEN cab002's QR code is asked, and cab001
    asks for another link with its token THEN both are made, and the token's link then shows
    anonymously without a Stripe call."""
    cab001 = register("cab001")
    register("cab002")
    assert client.get("/machines/cab001/qr.png").status_code == 200

    other_machine = client.get("/machines/cab002/qr.png")
    with_token = client.post(
        "/create-payment-link", json={"machine_id": "cab001", "quantity": 2}, headers=cab001.auth
    )
    stripe_standin.reset_requests()
    shown = client.get(with_token.json["qr_png"])

    assert other_machine.status_code == 200
    assert with_token.status_code == 200
    assert shown.status_code == 200
    assert stripe_standin.requests == []
    assert len(stripe_standin.payment_links) == 3


def test_after_the_minute_an_anonymous_request_may_make_the_next_link(
    client, cabinet, stripe_standin, monkeypatch
):
    """GIVEN the machine's anonymous call spent WHEN the window has passed THEN the next
    anonymous request reaches Stripe (the window is shortened here, not waited for)."""
    import arcade.links

    # The links module's clock, moved by hand: a slow machine cannot end the window early.
    now = [1000.0]
    monkeypatch.setattr(arcade.links, "monotonic", lambda: now[0])
    assert client.get("/machines/cab001/qr.png").status_code == 200
    now[0] += 59
    assert client.get("/machines/cab001/qr.png?quantity=2").status_code == 429

    now[0] += 2
    later = client.get("/machines/cab001/qr.png?quantity=2")

    assert later.status_code == 200
    assert len(stripe_standin.requests_to("POST", "/v1/payment_links")) == 2


@pytest.mark.parametrize("path", ["/machines/cab001/qr.gif", "/play/cab001/qr.gif"])
def test_both_qr_doors_refuse_an_unknown_format_in_the_same_words(client, cabinet, path):
    """GIVEN the link's QR code and the player page's WHEN asked for a GIF THEN each answers the
    same 400 sentence, naming the two formats there are."""
    answer = client.get(path)

    assert answer.status_code == 400
    assert answer.json == {
        "error": "the QR code comes as qr.png or qr.svg",
        "code": "invalid_format",
    }
