"""Serve the WSGI app for API Gateway, HTTP API, function URL and ALB events through aws-wsgi.

aws-wsgi 0.2.7 reads a single event shape, API Gateway's payload format 1.0, and reads even
that one lossily:

- ``QUERY_STRING`` is ``urlencode(queryStringParameters)``: a repeated key keeps only its last
  value, an ALB's still percent-encoded values are encoded a second time (``%2F`` reaches the
  app as ``%252F``), and an ALB target group with multi-value headers on (which sends no
  ``queryStringParameters``) raises ``KeyError``.
- Only ``headers`` is read: a repeated header keeps one value, and an ALB with multi-value
  headers on (which sends only ``multiValueHeaders``) reaches the app with no headers at all.
- ``PATH_INFO`` is ``path`` as sent, still percent-encoded, and the stage is never stripped.
- ``REMOTE_ADDR`` is the first ``X-Forwarded-For`` entry, which the client chooses.
- The response headers go through ``dict()``, so a second ``Set-Cookie`` is lost; API Gateway
  gets ``statusCode`` as a string; the app's response iterable is never closed.
- Payload format 2.0 (HTTP API, function URL) is not recognised at all: ``KeyError``.

So every event is first reshaped into the one 1.0-style event that aws-wsgi reads well (method,
WSGI-decoded path, one value per header with repeats joined), and a thin WSGI shim sets what
that shape cannot carry (the exact query string, ``SCRIPT_NAME``, the client address) before
the app runs, keeps the full response header list and closes the response. aws-wsgi still
decodes the request body (base64 included), builds the environ and encodes the response body;
the answer is then reshaped for the service that sent the event.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, unquote, unquote_to_bytes, urlencode

import awsgi

from arcade.logs import REFUSALS, log_event

__all__ = ["BINARY_CONTENT_TYPES", "handle"]

logger = logging.getLogger(__name__)

# aws-wsgi decodes every other response body as UTF-8 and crashes on anything else, so each
# binary type the app serves must be listed here to go back base64-encoded.
BINARY_CONTENT_TYPES = frozenset(
    {
        "application/gzip",
        "application/octet-stream",
        "application/pdf",
        "application/zip",
        "image/gif",
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/x-icon",
    }
)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
_Kind = Literal["v1", "v2", "alb"]

_LABELS: dict[_Kind, str] = {
    "v1": "API Gateway payload format 1.0",
    "v2": "payload format 2.0",
    "alb": "ALB",
}


def handle(app: WsgiApp, event: dict[str, Any], context: object) -> dict[str, Any]:
    """Serve one Lambda HTTP event with ``app`` and answer in the format of the event's source.

    Raises ``ValueError`` naming the missing field when ``event`` is not an API Gateway REST,
    HTTP API, function URL or ALB event.
    """
    kind = _kind_of(event)
    try:
        request = _read_request(kind, event)
        awsgi_event = request.awsgi_event(event)
    except MalformedEvent as exc:
        return _refuse(kind, event, exc)
    shim = _Shim(app, request, event)
    answer = awsgi.response(shim, awsgi_event, context, base64_content_types=BINARY_CONTENT_TYPES)
    return _reply(kind, event, answer, shim.response_headers)


class MalformedEvent(ValueError):
    """An HTTP event of a known shape with a field no AWS service sends that way (a body that
    is not base64 though flagged so, a header value that is not text): the request cannot be
    read, so it is answered 400 in the event's shape (SPEC "HTTP": a caller's input gets a
    4xx). The message names the field, never its value."""


def _refuse(kind: _Kind, event: Mapping[str, Any], exc: MalformedEvent) -> dict[str, Any]:
    REFUSALS.log(logger, "lambda_event_refused", kind=_LABELS[kind], reason=str(exc))
    body = json.dumps({"error": str(exc), "code": "bad_request"})
    answer = {"statusCode": 400, "body": body, "isBase64Encoded": False}
    if kind == "alb":
        answer["statusDescription"] = "400 Bad Request"
    return _reply(kind, event, answer, [("Content-Type", "application/json")])


@dataclass(frozen=True)
class _Request:
    method: str
    path_info: str
    script_name: str
    query_string: str
    headers: dict[str, str]
    remote_addr: str | None

    def awsgi_event(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Return the 1.0-style event aws-wsgi reads; the shim overrides what it gets wrong."""
        return {
            "httpMethod": self.method,
            "path": self.path_info,
            "headers": self.headers,
            # aws-wsgi would urlencode() this dict; the shim sets QUERY_STRING instead.
            "queryStringParameters": None,
            # aws-wsgi reads bytes as they are: no decoding of its own to go wrong.
            "body": _body_bytes(event),
            "isBase64Encoded": False,
            # aws-wsgi picks its ALB response class by the presence of requestContext.elb.
            "requestContext": _mapping(event.get("requestContext")),
        }


def _body_bytes(event: Mapping[str, Any]) -> bytes:
    """Return the request body's bytes: exactly the ones the client sent, which a Stripe
    signature covers (SPEC "AWS Lambda").

    A base64 body is decoded strictly (aws-wsgi's lenient decoder raised binascii.Error on a
    bad padding and skipped stray characters); a text body is its UTF-8 bytes, a lone
    surrogate (JSON can carry ``"\\udc80"``) included, which strict UTF-8 refused with
    UnicodeEncodeError before the app ran. Raises MalformedEvent for anything else.
    """
    body = event.get("body")
    encoded = event.get("isBase64Encoded")
    if encoded is not None and not isinstance(encoded, bool):
        raise MalformedEvent("the event's 'isBase64Encoded' is not true or false")
    if body is None:
        return b""
    if not isinstance(body, str):
        raise MalformedEvent("the event's 'body' is not text")
    if not encoded:
        return _utf8(body)
    try:
        return base64.b64decode(body.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise MalformedEvent("the event's 'body' is flagged base64 but is not base64") from None


def _mapping(value: object) -> Mapping[str, Any]:
    # Context objects that are missing, null or of another type tell nothing.
    return value if isinstance(value, Mapping) else {}


def _kind_of(event: object) -> _Kind:
    if not isinstance(event, Mapping):
        raise ValueError(f"a Lambda HTTP event is a JSON object, not {type(event).__name__}")
    request_context = event.get("requestContext")
    if isinstance(request_context, Mapping) and "elb" in request_context:
        return "alb"
    version = event.get("version")
    if version == "2.0":
        return "v2"
    if version not in (None, "1.0"):
        raise ValueError(f"unsupported payload format version {version!r}: expected 1.0 or 2.0")
    if "httpMethod" in event:
        return "v1"
    raise ValueError(
        "not an API Gateway, function URL or ALB event: it has no 'httpMethod', no "
        f"'version': '2.0' and no 'requestContext.elb' (keys: {sorted(event)})"
    )


def _field(event: Mapping[str, Any], dotted: str, kind: _Kind) -> str:
    """Return a field that says which request this is (method, path); raise ValueError naming
    it when it is missing or not text, for then the event is not a request at all."""
    value: Any = event
    for key in dotted.split("."):
        if not isinstance(value, Mapping) or value.get(key) is None:
            raise ValueError(f"{_LABELS[kind]} event has no {dotted!r}")
        value = value[key]
    if not isinstance(value, str):
        raise ValueError(f"{_LABELS[kind]} event's {dotted!r} is not text")
    return value


def _text(value: object, field: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise MalformedEvent(f"the event's {field!r} is not text")


def _single_values(event: Mapping[str, Any], field: str) -> dict[str, str]:
    """Return a name → value field (``headers``, ``queryStringParameters``), null values left
    out; raise MalformedEvent when it or a value is not what AWS sends."""
    mapping = event.get(field)
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise MalformedEvent(f"the event's {field!r} is not an object")
    values = {str(name): _text(value, field) for name, value in mapping.items()}
    return {name: value for name, value in values.items() if value is not None}


def _multi_values(event: Mapping[str, Any], field: str) -> dict[str, list[str]]:
    """Return a name → list of values field (``multiValueHeaders``, …); raise MalformedEvent
    when it, a list or a value is not what AWS sends."""
    mapping = event.get(field)
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise MalformedEvent(f"the event's {field!r} is not an object")
    grouped: dict[str, list[str]] = {}
    for name, values in mapping.items():
        if values is None:
            values = []
        if not isinstance(values, list):
            raise MalformedEvent(f"the event's {field!r} holds a value that is not a list")
        grouped[str(name)] = [value for value in values if _text(value, field) is not None]
    return grouped


def _read_request(kind: _Kind, event: Mapping[str, Any]) -> _Request:
    request_context = _mapping(event.get("requestContext"))
    if kind == "v2":
        method = _field(event, "requestContext.http.method", kind)
        raw_path = _field(event, "rawPath", kind)
        # 2.0 already joins repeated headers with commas and moves cookies to their own list.
        headers = _join_headers(
            {name: [value] for name, value in _single_values(event, "headers").items()}
        )
        cookies = [*_cookies(event), *filter(None, [headers.pop("cookie", None)])]
        if cookies:
            headers["cookie"] = "; ".join(cookies)
        # rawQueryString is what the client sent, byte for byte (see _ascii_query).
        query_string = _ascii_query(_text(event.get("rawQueryString"), "rawQueryString") or "")
        remote_addr = _mapping(request_context.get("http")).get("sourceIp")
    else:
        method = _field(event, "httpMethod", kind)
        raw_path = _field(event, "path", kind)
        # Each source sends either the multi-value or the single-value fields (API Gateway
        # sends both, and the console's test events may leave either null).
        headers = _join_headers(_multi_value(event, "multiValueHeaders", "headers"))
        query = _multi_value(event, "multiValueQueryStringParameters", "queryStringParameters")
        if kind == "alb":
            # ALB passes keys and values on still percent-encoded: encoding them again
            # would double-encode.
            query_string = _ascii_query(
                "&".join(f"{key}={value}" for key, values in query.items() for value in values)
            )
            remote_addr = _last_forwarded_for(headers)
        else:
            # API Gateway decodes them, so they must be encoded again.
            pairs = [(key, value) for key, values in query.items() for value in values]
            query_string = urlencode(pairs, quote_via=quote, errors="surrogatepass")
            remote_addr = _mapping(request_context.get("identity")).get("sourceIp")

    # The route the event names is the route, whatever the stage is called; only an event
    # that names none has its stage, or API_BASE_PATH, cut from the front of its path.
    routed = _route_from_template(kind, event, raw_path)
    if routed is not None:
        raw_path, script_name = routed
    else:
        raw_path, script_name = _strip_stage(raw_path, _stage_in_path(kind, event))
        mapped, base = _strip_api_base_path(raw_path)
        if base:
            raw_path, script_name = mapped, script_name + base
    if kind == "v1" and not script_name:
        script_name = _rest_api_prefix(raw_path, request_context.get("path"))
    return _Request(
        method=method,
        path_info=_wsgi_path(raw_path),
        script_name=_wsgi_path(script_name),
        query_string=query_string,
        headers=headers,
        remote_addr=remote_addr if isinstance(remote_addr, str) else None,
    )


def _cookies(event: Mapping[str, Any]) -> list[str]:
    cookies = event.get("cookies")
    if cookies is None:
        return []
    if not isinstance(cookies, list):
        raise MalformedEvent("the event's 'cookies' is not a list")
    return [cookie for cookie in cookies if _text(cookie, "cookies")]


def _multi_value(event: Mapping[str, Any], multi: str, single: str) -> dict[str, list[str]]:
    grouped = _multi_values(event, multi)
    singles = _single_values(event, single)
    if grouped:
        return grouped
    return {key: [value] for key, value in singles.items()}


def _join_headers(headers: Mapping[str, list[str]]) -> dict[str, str]:
    # WSGI holds one string per header, so repeats are joined the way HTTP allows (RFC 9110
    # 5.3), cookies with "; " (RFC 6265 5.4). Names match case-insensitively.
    grouped: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for name, values in headers.items():
        key = name.lower()
        names.setdefault(key, name)
        grouped.setdefault(key, []).extend(value for value in values if value is not None)
    return {
        names[key]: ("; " if key == "cookie" else ", ").join(values)
        for key, values in grouped.items()
    }


def _last_forwarded_for(headers: Mapping[str, str]) -> str | None:
    # The load balancer appends the peer it saw; every entry before that is the client's say.
    for name, value in headers.items():
        if name.lower() == "x-forwarded-for":
            return value.rsplit(",", 1)[-1].strip() or None
    return None


def _stage_in_path(kind: _Kind, event: Mapping[str, Any]) -> str | None:
    """Return the stage that may open the event's path, or None.

    An HTTP API on a named stage puts it in rawPath; a REST API's path holds it only behind a
    custom domain whose base path is the stage's name (on its execute-api domain the path
    leaves the stage out, so a route that begins like the stage's name must stay whole).
    """
    if kind == "alb":
        return None
    request_context = _mapping(event.get("requestContext"))
    stage = request_context.get("stage")
    domain = request_context.get("domainName")
    if kind == "v1" and isinstance(domain, str) and ".execute-api." in domain:
        return None
    return stage if isinstance(stage, str) else None


def _strip_stage(raw_path: str, stage: str | None) -> tuple[str, str]:
    # Flask's routes know only the path after the stage.
    if stage and stage != "$default":
        prefix = f"/{stage}"
        if raw_path == prefix or raw_path.startswith(f"{prefix}/"):
            return raw_path[len(prefix) :] or "/", prefix
    return raw_path, ""


# A path parameter in a resource or route key: {name}, or greedy {name+}.
_PATH_PARAMETER = re.compile(r"\{([^{}+]+)\+?\}")


def _route_from_template(
    kind: _Kind, event: Mapping[str, Any], raw_path: str
) -> tuple[str, str] | None:
    """Return (path the app routes, base path in front of it) as the event's route says, or
    None when the event names no route (an HTTP API's ``$default``, an ALB).

    Behind a custom domain with a base path mapping (``/pay`` → the API) both a REST API's
    ``path`` and an HTTP API's ``rawPath`` keep the base path in front, while the matched
    resource (``resource``: ``/{proxy+}``, ``/webhook``, ``/``) or route key (``ANY
    /{proxy+}``) filled with ``pathParameters`` is exactly the route (SPEC "AWS Lambda").
    Whatever comes before it (base path, stage) goes to SCRIPT_NAME.
    """
    template: object = None
    if kind == "v1":
        template = event.get("resource")
    elif kind == "v2":
        route_key = event.get("routeKey")
        if isinstance(route_key, str) and " " in route_key:
            template = route_key.split(" ", 1)[1]
    if not isinstance(template, str) or not template.startswith("/"):
        return None
    parameters = event.get("pathParameters")
    parameters = parameters if isinstance(parameters, Mapping) else {}
    if any(not isinstance(parameters.get(name), str) for name in _PATH_PARAMETER.findall(template)):
        return None
    route = _PATH_PARAMETER.sub(lambda found: parameters[found.group(1)], template)
    # Compared decoded: API Gateway hands path parameters over decoded, the path not always.
    path_text, route_text = unquote(raw_path), unquote(route)
    if route_text == "/":
        base_text = path_text.rstrip("/")
    elif path_text.endswith(route_text):
        base_text = path_text[: -len(route_text)]
    else:
        return None
    if not base_text:
        return raw_path, ""
    if not base_text.startswith("/"):
        return None
    # A base path and a stage are whole segments with no encoded slash in them.
    base = "/".join(raw_path.split("/")[: base_text.count("/") + 1])
    return raw_path[len(base) :] or "/", base


def _strip_api_base_path(raw_path: str) -> tuple[str, str]:
    """Return (path the app routes, base path in front of it) by ``API_BASE_PATH``: the base
    path of a custom domain's mapping for any event where nothing in the event says it."""
    base = os.environ.get("API_BASE_PATH", "").strip().strip("/")
    if not base:
        return raw_path, ""
    base = "/" + base
    path_text = unquote(raw_path)
    if path_text == base or path_text.startswith(base + "/"):
        raw_base = "/".join(raw_path.split("/")[: base.count("/") + 1])
        return raw_path[len(raw_base) :] or "/", raw_base
    return raw_path, ""


def _rest_api_prefix(raw_path: str, full_path: object) -> str:
    # A REST API's path leaves out the stage that the client's URL holds (requestContext.path
    # keeps it); SCRIPT_NAME lets url_for build links that work from the client's side.
    if isinstance(full_path, str) and full_path != raw_path and full_path.endswith(raw_path):
        return full_path[: -len(raw_path)].rstrip("/")
    return ""


def _wsgi_path(raw_path: str) -> str:
    # PEP 3333: PATH_INFO holds the decoded bytes as latin-1 code points; Werkzeug turns
    # them back into UTF-8 text.
    return unquote_to_bytes(_utf8(raw_path)).decode("latin-1")


def _ascii_query(text: str) -> str:
    """Return a query string as sent, with every byte that is not visible ASCII
    percent-encoded.

    An event carries the client's bytes decoded as UTF-8, and may carry what no UTF-8 holds
    (a lone surrogate): a ``?q=€`` sent unencoded reached Werkzeug as a code point no WSGI
    string may hold, and the handler raised UnicodeEncodeError for an anonymous caller (SPEC
    "HTTP": a 4xx or the right answer). Encoded, it reads as the same text, or as a value the
    route refuses.
    """
    return quote(_utf8(text), safe=_VISIBLE_ASCII)


# Every visible ASCII character, the query's own delimiters and percent signs included.
_VISIBLE_ASCII = "".join(chr(code) for code in range(0x21, 0x7F))


def _utf8(text: str) -> bytes:
    # "surrogatepass": JSON may carry a lone surrogate ("\\udc80"), which strict UTF-8 refuses.
    return text.encode("utf-8", "surrogatepass")


class _Shim:
    """Finish the environ aws-wsgi built, run the app and keep all of its response."""

    def __init__(self, app: WsgiApp, request: _Request, event: Mapping[str, Any]) -> None:
        self.app = app
        self.request = request
        self.event = event
        self.response_headers: list[tuple[str, str]] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        request = self.request
        environ["SCRIPT_NAME"] = request.script_name
        environ["QUERY_STRING"] = request.query_string
        if request.remote_addr:
            environ["REMOTE_ADDR"] = request.remote_addr
        # aws-wsgi takes these from X-Forwarded-Proto and X-Forwarded-Port as given. Without
        # them (console test events) Werkzeug would build URLs like "://"; with a value that
        # is no scheme or port (a hand-made event, a trigger that passes the client's header
        # on) a redirect's Location raised outside the app's error handlers.
        scheme = str(environ.get("wsgi.url_scheme") or "").strip().lower()
        scheme = scheme if scheme in ("http", "https") else "https"
        environ["wsgi.url_scheme"] = scheme
        port = str(environ.get("SERVER_PORT") or "").strip()
        environ["SERVER_PORT"] = (
            port if port.isascii() and port.isdigit() else ("443" if scheme == "https" else "80")
        )
        domain = _mapping(self.event.get("requestContext")).get("domainName")
        environ["SERVER_NAME"] = (
            environ.get("SERVER_NAME") or (domain if isinstance(domain, str) else "") or "localhost"
        )
        environ["awsgi.event"] = self.event

        def recording_start_response(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], Any]:
            self.response_headers = list(headers)
            # aws-wsgi looks the type up in a dict() of the headers by this exact spelling.
            spelled = [
                ("Content-Type", value) if name.lower() == "content-type" else (name, value)
                for name, value in headers
            ]
            return start_response(status, spelled, exc_info)

        result = self.app(environ, recording_start_response)
        try:
            body = b"".join(result)
        finally:
            # PEP 3333 requires close(); aws-wsgi never calls it, so call_on_close never ran.
            close = getattr(result, "close", None)
            if close is not None:
                close()
        self._check_text(body)
        return [body]

    def _check_text(self, body: bytes) -> None:
        content_type = next(
            (
                value
                for name, value in reversed(self.response_headers)
                if name.lower() == "content-type"
            ),
            "",
        )
        if content_type.split(";")[0].strip() in BINARY_CONTENT_TYPES:
            return
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"the response to {self.request.method} {self.request.path_info} is "
                f"{content_type or 'untyped'!r} but its body is not UTF-8 text; add its type to "
                f"{__name__}.BINARY_CONTENT_TYPES so it goes back base64-encoded"
            ) from exc


def _reply(
    kind: _Kind, event: Mapping[str, Any], answer: Mapping[str, Any], headers: list[tuple[str, str]]
) -> dict[str, Any]:
    grouped: dict[str, list[str]] = {}
    names: dict[str, str] = {}
    for name, value in headers:
        names.setdefault(name.lower(), name)
        grouped.setdefault(names[name.lower()], []).append(value)
    reply: dict[str, Any] = {
        # aws-wsgi hands API Gateway the status as a string.
        "statusCode": int(answer["statusCode"]),
        "body": answer["body"],
        "isBase64Encoded": answer["isBase64Encoded"],
    }
    if kind == "v2":
        # 2.0 has no multi-value headers: repeats are joined, and each cookie is its own
        # entry in "cookies" because Set-Cookie cannot be comma-joined.
        cookies = [
            value
            for name in list(grouped)
            if name.lower() == "set-cookie"
            for value in grouped.pop(name)
        ]
        reply["headers"] = {name: ", ".join(values) for name, values in grouped.items()}
        reply["cookies"] = cookies
    elif kind == "alb":
        reply["statusDescription"] = answer["statusDescription"]
        # The target group's multi-value setting decides which field the load balancer reads,
        # and the event shows that setting.
        if "multiValueHeaders" in event:
            reply["multiValueHeaders"] = grouped
        else:
            reply["headers"] = _single_value_headers(grouped)
    else:
        # API Gateway merges both fields and drops pairs that repeat one in multiValueHeaders,
        # so "headers" keeps readers of a single value working without duplicating anything.
        reply["headers"] = {name: values[-1] for name, values in grouped.items()}
        reply["multiValueHeaders"] = grouped
    return reply


def _single_value_headers(grouped: Mapping[str, list[str]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, values in grouped.items():
        if name.lower() == "set-cookie":
            if len(values) > 1:
                log_event(
                    logger,
                    "lambda_set_cookie_dropped",
                    level=logging.WARNING,
                    kept=1,
                    dropped=len(values) - 1,
                )
            # A comma would split a cookie's Expires date: only one can go.
            headers[name] = values[-1]
        else:
            headers[name] = ", ".join(values)
    return headers
