"""The operator's web pages at ``/admin`` (SPEC "Operators (admin key)").

Server-rendered with Jinja from ``arcade/admin/templates``: no CDN, no build step, no script.
An operator logs in with ``ADMIN_API_KEY`` into a signed session cookie (HttpOnly,
SameSite=Strict, Secure unless the page was asked for on a loopback host); every form carries
Flask-WTF's CSRF token, and a POST without a valid one is a 403. The pages call
``arcade.operators`` exactly as the JSON API and the CLI do.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import (
    Blueprint,
    Flask,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSessionInterface
from markupsafe import Markup
from werkzeug.exceptions import HTTPException

from arcade.errors import ApiError, ArcadeError, BadRequest, NotFound
from arcade.logs import REFUSALS
from arcade.services import services

logger = logging.getLogger(__name__)

bp = Blueprint("admin", __name__, url_prefix="/admin", template_folder="templates")

SESSION_HOURS = 12
# The payments page shows each of these, most urgent first.
ATTENTION = (
    ("pending_delivery", "Paid, not yet delivered to the cabinet"),
    ("unconfirmed", "Delivered, never confirmed by the cabinet"),
    ("disputed", "Disputed by the player"),
    ("unattributed", "Paid, but bought nothing here (see the reason)"),
    ("partially_refunded", "Partly refunded"),
    ("refunded", "Refunded"),
)
CSRF_MESSAGE = (
    "This form has expired or did not come from these pages, so nothing was done. "
    "Reload the page and try again."
)


class AdminSessionInterface(SecureCookieSessionInterface):
    """Flask's signed cookie, Secure except on a loopback host (plain http://127.0.0.1), opened
    only for the /admin pages: a webhook or a cabinet's call never pays for reading one."""

    def open_session(self, app: Flask, request: Any) -> Any:
        if not request.path.startswith(bp.url_prefix or "/admin"):
            return None  # Flask then gives the request a null session
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        """Secure unless a loopback host was asked over plain http. A proxy in front (TLS
        ended on this machine, forwarding to 127.0.0.1) says https in ``X-Forwarded-Proto``
        or ``Forwarded``: a caller who sends either only makes the cookie stricter, so it is
        believed here without a list of trusted proxies."""
        from arcade.wire import is_loopback

        if not request:
            return True
        return _over_https() or not is_loopback(request.host.rsplit(":", 1)[0])


def _over_https() -> bool:
    """Return True when the browser's request came over https: on this socket, or by the word
    of a proxy in front (``X-Forwarded-Proto`` or ``Forwarded``, believed without a list of
    trusted proxies: it only makes the cookie stricter and a refusal's explanation other)."""
    return request.is_secure or _forwarded_https()


def _forwarded_https() -> bool:
    """Return True when a proxy's header says the browser's request came over https."""
    said = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    if said == "https":
        return True
    forwarded = request.headers.get("Forwarded", "").split(",")[0]
    for pair in forwarded.split(";"):
        name, _, value = pair.strip().partition("=")
        if name.strip().lower() == "proto" and value.strip().strip('"').lower() == "https":
            return True
    return False


def init_app(app: Flask, admin_api_key: str | None) -> None:
    """Give ``app`` the session the pages need: its key is derived from ADMIN_API_KEY, so a new
    key signs every operator out, and all Lambda instances agree without another setting."""
    if admin_api_key:
        app.secret_key = hmac.new(
            admin_api_key.encode(), b"arcade-admin-session", hashlib.sha256
        ).hexdigest()
    app.session_interface = AdminSessionInterface()
    app.config.update(
        SESSION_COOKIE_NAME="arcade_admin",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_PATH="/",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=SESSION_HOURS),
    )
    app.register_blueprint(bp)


# --- who is logged in -------------------------------------------------------------------------
def _fingerprint(key: str) -> str:
    """What the session keeps of the key: enough to notice it changed, nothing to reuse."""
    return hmac.new(key.encode(), b"arcade-admin-login", hashlib.sha256).hexdigest()[:32]


# A signed cookie stays valid until it expires, wherever a copy of it went: logging out
# records the login's id, and a cookie carrying a recorded id opens no page (SPEC
# "Operators": logging out ends the session).
ENDED_SESSION = "admin_session_ended:"


def _session_open() -> bool:
    """Return True when the session's login has an id that was not logged out."""
    login_id = session.get("login")
    if not isinstance(login_id, str) or not login_id:
        return False  # a cookie from before logins had ids: log in again
    return services().store.get_value(ENDED_SESSION + login_id) is None


@bp.before_request
def load_operator() -> Any:
    """Refuse everything while admin is off; check the CSRF token of every POST."""
    key = services().settings.admin_api_key
    if not key:
        return (
            render_template(
                "admin/message.html",
                title="Admin is off",
                message="Set ADMIN_API_KEY (32 characters or more) and restart to use these pages.",
            ),
            503,
        )
    g.operator = session.get("operator") == _fingerprint(key) and _session_open()
    if request.method == "POST":
        from flask_wtf.csrf import CSRFError, validate_csrf
        from wtforms import ValidationError

        sent = request.form.get("csrf_token")
        try:
            validate_csrf(sent)
        except ValidationError as exc:
            # Our words in the log, not the library's.
            reason = "missing" if not sent else "wrong_or_expired"
            REFUSALS.log(logger, "csrf_refused", path=request.path, reason=reason)
            raise CSRFError(reason) from exc
    return None


@bp.app_context_processor
def template_helpers() -> dict[str, Any]:
    """Give templates ``csrf_field()`` (the hidden input every form carries), ``here()`` (a
    form's ``next``), ``money`` and ``major``."""
    from arcade.operators import major, money

    def field() -> Markup:
        from flask_wtf.csrf import generate_csrf

        return Markup('<input type="hidden" name="csrf_token" value="{}">').format(generate_csrf())

    return {"csrf_field": field, "here": _here, "money": money, "major": major}


def _here() -> str:
    """Return this page's address as the browser asked for it, base path included (Lambda's
    /pay; ``request.full_path`` leaves it out), for a ``next`` that ``_back`` compares with
    ``url_for``."""
    return request.script_root + request.full_path.rstrip("?")


def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapped(**kwargs: Any) -> Any:
        if not g.get("operator"):
            return redirect(url_for("admin.login", next=_here()))
        return view(**kwargs)

    return wrapped


@bp.after_request
def never_cache(response: Any) -> Any:
    """Operator pages (a new token among them) are kept by no browser cache or proxy."""
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.errorhandler(HTTPException)
def http_error(exc: HTTPException) -> Any:
    from flask_wtf.csrf import CSRFError

    if isinstance(exc, CSRFError):
        from arcade.wire import is_loopback

        host = request.host.rsplit(":", 1)[0]
        if not _over_https() and not is_loopback(host) and not request.cookies:
            # The login cookie is Secure: a browser keeps it only over HTTPS.
            message = (
                f"These pages were opened over plain http on {host}, so the browser did not "
                "keep the login cookie (it is sent over HTTPS only). Open them over HTTPS, or "
                "on this computer at http://127.0.0.1."
            )
        else:
            message = CSRF_MESSAGE
        return render_template("admin/message.html", title="Refused", message=message), 403
    # Keep werkzeug's headers that matter to the client, e.g. Allow on a 405.
    headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
    return (
        render_template("admin/message.html", title=exc.name, message=exc.description),
        exc.code or 500,
        headers,
    )


@bp.errorhandler(ArcadeError)
def arcade_error(exc: ArcadeError) -> Any:
    """A failure of a page (store down, say) reads as a sentence, never as a trace."""
    from arcade.http_errors import OWN_ERRORS

    message = exc.message if isinstance(exc, ApiError) else str(exc)
    status = exc.status if isinstance(exc, ApiError) else 503
    for kind, (own_status, _code, _logged) in OWN_ERRORS.items():
        if isinstance(exc, kind):
            status = own_status
            break
    return render_template(
        "admin/message.html", title="Something is wrong", message=message
    ), status


def _back(default: str) -> str:
    """Return where a form asked to go back to, if it is one of these pages, else ``default``.

    The caller chose ``next``: only a path under /admin, of visible ASCII (a CR or LF would
    split the Location header, a 500), with no ``.`` or ``..`` segment to climb out of it
    (``%2e%2e`` is ``..`` to a browser too), no backslash (read as ``/``) and no scheme or
    host of its own, is taken.
    """
    from urllib.parse import unquote, urlsplit

    target = request.form.get("next") or request.args.get("next") or ""
    prefix = url_for("admin.machines")
    if (
        not target.startswith(prefix)
        or not all("!" <= char <= "~" for char in target)
        or "\\" in target
    ):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or {".", ".."} & set(unquote(parts.path).split("/")):
        return default
    return target


def _act(action: Callable[[], str], *, back: str) -> Any:
    """Run a form's action; say what happened, or why not, on the page it came from."""
    try:
        flash(_sentence(action()), "ok")
    except ApiError as exc:
        flash(_sentence(exc.message), "error")
    except ArcadeError as exc:
        flash(_sentence(str(exc)), "error")
    return redirect(_back(back))


# A flashed sentence travels in the session cookie, and may quote what a form sent (a time
# zone, an id): longer, the cookie would pass the 4 KB a browser keeps, which logs the
# operator out and writes a raw warning to stderr.
FLASH_CHARS = 300


def _sentence(text: str) -> str:
    """Return the API's lower-case message as a sentence for a page, at most
    ``FLASH_CHARS`` long (cut with an ellipsis)."""
    text = text.strip()
    if len(text) > FLASH_CHARS:
        text = text[: FLASH_CHARS - 1].rstrip() + "…"
    if not text:
        return text
    return text[0].upper() + text[1:] + ("" if text[-1] in ".!?…" else ".")


# --- log in and out ---------------------------------------------------------------------------
@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    key = services().settings.admin_api_key or ""
    if request.method == "POST":
        typed = request.form.get("key", "")
        if hmac.compare_digest(typed.encode(errors="replace"), key.encode()):
            session.clear()
            session.permanent = True
            session["operator"] = _fingerprint(key)
            session["login"] = secrets.token_urlsafe(16)
            return redirect(_back(url_for("admin.machines")))
        REFUSALS.log(logger, "credentials_refused", code="admin_login", path=request.path)
        flash("That is not the admin key.", "error")
        return render_template("admin/login.html", next=request.form.get("next", "")), 401
    if g.operator:
        return redirect(url_for("admin.machines"))
    return render_template("admin/login.html", next=request.args.get("next", ""))


@bp.post("/logout")
def logout() -> Any:
    login_id = session.get("login")
    if g.get("operator") and isinstance(login_id, str):
        from arcade.clock import iso, utc_now

        services().store.put_value(ENDED_SESSION + login_id, iso(utc_now()))
    session.clear()
    flash("Logged out.", "ok")
    return redirect(url_for("admin.login"))


# --- pages ------------------------------------------------------------------------------------
@bp.get("/")
@login_required
def machines() -> Any:
    from arcade.admin.pages import machine_rows

    svc = services()
    rows, totals = machine_rows(svc)
    waiting = svc.operators.payments(status="pending_delivery", limit=100)
    shown = f"{len(waiting['payments'])}{'+' if waiting['next_cursor'] else ''}"
    return render_template("admin/machines.html", rows=rows, totals=totals, waiting=shown)


@bp.get("/machines/<machine_id>")
@login_required
def machine(machine_id: str) -> Any:
    from arcade.admin.pages import machine_page
    from arcade.machines import check_machine_id

    check_machine_id(machine_id)
    page = machine_page(services(), machine_id)
    if page is None:
        raise NotFound(f"there is no machine {machine_id} and no payment for it")
    return render_template(
        "admin/machine.html", **page, grant_key=uuid.uuid4().hex, refund_key=uuid.uuid4().hex
    )


@bp.post("/machines/<machine_id>/rotate-token")
@login_required
def rotate_token(machine_id: str) -> Any:
    from arcade.machines import check_machine_id

    check_machine_id(machine_id)
    token = services().registry.rotate_token(machine_id)
    return render_template("admin/token.html", machine_id=machine_id, token=token)


@bp.get("/payments")
@login_required
def payments() -> Any:
    operators = services().operators
    sections = []
    for status, title in ATTENTION:
        listed = operators.payments(status=status, limit=50)["payments"]
        hidden = 0
        if status == "unattributed":
            # Money that bought nothing and went back in full needs nothing more.
            kept = [p for p in listed if p["amount_refunded"] < p["amount"] or not p["amount"]]
            hidden, listed = len(listed) - len(kept), kept
        sections.append((status, title, listed, hidden))
    machine_ids = [m.machine_id for m in services().store.list_machines()]
    return render_template(
        "admin/payments.html",
        sections=sections,
        unmatched=operators.unmatched()["refunds"],
        machine_ids=machine_ids,
        grant_key=uuid.uuid4().hex,
        refund_key=uuid.uuid4().hex,
    )


@bp.post("/payments/<payment_id>/resend")
@login_required
def resend(payment_id: str) -> Any:
    def act() -> str:
        answer = services().operators.resend(payment_id)
        return f"Coinpulse of {payment_id} sent again: the broker acknowledged it." + (
            "" if answer["result"] == "resent" else f" ({answer['status'].replace('_', ' ')})"
        )

    return _act(act, back=url_for("admin.payments"))


@bp.post("/payments/<payment_id>/refund")
@login_required
def refund(payment_id: str) -> Any:
    from arcade.operators import from_major, money

    def act() -> str:
        typed = request.form.get("amount", "").strip()
        amount: Any = None
        if typed:
            currency = services().operators.payment(payment_id).currency
            amount = from_major(typed, currency)
            if amount is None or amount <= 0:
                raise BadRequest(
                    f"the amount to refund must be an amount in {currency.upper()}, such as 0.50"
                )
        # One key per page, payment and amount: a second click (or a reload that posts
        # again) refunds once, even after Stripe's charge.refunded has been recorded.
        page_key = (request.form.get("idempotency_key") or "")[:64]
        key = f"admin-{page_key}-{payment_id}-{amount}" if page_key else None
        answer = services().operators.refund(payment_id, amount=amount, idempotency_key=key)
        return (
            f"Stripe is refunding {money(answer['amount'], answer['currency'])} of {payment_id}; "
            "the payment's status changes when Stripe confirms."
        )

    return _act(act, back=url_for("admin.payments"))


@bp.post("/credits")
@login_required
def grant() -> Any:
    from arcade.machines import check_machine_id
    from arcade.operators import manual_grant_request, whole_number

    def act() -> str:
        machine_id = check_machine_id(request.form.get("machine_id"))
        typed = request.form.get("credits", "").strip()
        number = whole_number(typed)
        count, reason = manual_grant_request(
            typed if number is None else number, request.form.get("reason")
        )
        key = request.form.get("idempotency_key") or None
        answer = services().operators.grant(machine_id, count, reason, key=key)
        if answer["status"] == "pending_delivery":
            return (
                f"{count} credit{'s' if count != 1 else ''} for {machine_id} recorded; the broker"
                " did not answer, "
                "so they are delivered as soon as it does."
            )
        return f"{count} credit{'s' if count != 1 else ''} sent to {machine_id}."

    return _act(act, back=url_for("admin.payments"))


# --- pricing plans and machine settings -----------------------------------------------------
@bp.get("/plans")
@login_required
def default_plan() -> Any:
    from arcade.admin.pages import plan_page
    from arcade.pricing import DEFAULT_PLAN

    return render_template("admin/plan.html", plan=plan_page(services(), DEFAULT_PLAN))


@bp.post("/plans")
@login_required
def save_default_plan() -> Any:
    from arcade.pricing import DEFAULT_PLAN

    return _act(lambda: _save_plan(DEFAULT_PLAN), back=url_for("admin.default_plan"))


@bp.post("/machines/<machine_id>/plan")
@login_required
def save_machine_plan(machine_id: str) -> Any:
    from arcade.machines import check_machine_id

    check_machine_id(machine_id)
    back = url_for("admin.machine", machine_id=machine_id) + "#plan"
    return _act(lambda: _save_plan(machine_id), back=back)


def _save_plan(owner: str) -> str:
    """Save the plan typed in the form as the owner's next version; say what happened."""
    from arcade.common.jsontext import NotJson, TooDeep, load_json
    from arcade.plans import BY_ADMIN_SESSION

    try:
        body = load_json(request.form.get("plan", ""))
    except TooDeep as exc:
        raise BadRequest(f"the plan is not read: {exc}") from exc
    except NotJson as exc:
        raise BadRequest("the plan is not JSON: check its brackets, commas and quotes") from exc
    saved = services().plans.save(owner, body, by=BY_ADMIN_SESSION)
    links = saved["links"]
    said = (
        f"Plan version {saved['version']} is in force: {len(saved['plan']['bundles'])} bundles,"
        f" {links['made']} payment links made and {links['updated']} updated"
    )
    if links.get("problems"):
        said += f"; not ready yet (the player's page makes them later): {len(links['problems'])}"
    return said


@bp.post("/machines/<machine_id>/settings")
@login_required
def configure_machine(machine_id: str) -> Any:
    from arcade.machines import check_machine_id
    from arcade.operators import whole_number
    from arcade.plans import BY_ADMIN_SESSION

    check_machine_id(machine_id)

    def act() -> str:
        typed = request.form.get("credits_per_game", "").strip()
        number = whole_number(typed)
        answer = services().plans.configure(
            machine_id,
            credits_per_game=(typed or None) if number is None else number,
            timezone=request.form.get("timezone", "").strip() or None,
            by=BY_ADMIN_SESSION,
        )
        return (
            f"One game on {machine_id} costs {answer['credits_per_game']} credit(s); its happy"
            f" hours are read in {answer['timezone']}"
        )

    return _act(act, back=url_for("admin.machine", machine_id=machine_id) + "#settings")


@bp.route("/<path:unknown>", methods=["GET", "POST"])
@login_required
def not_found(unknown: str) -> Any:
    raise NotFound("there is no such page")


@bp.get("/revenue")
@login_required
def revenue() -> Any:
    from arcade.admin.pages import revenue_page

    page = revenue_page(
        services(),
        days=request.args.get("days", "30"),
        tz=request.args.get("tz") or None,
    )
    return render_template("admin/revenue.html", **page)
