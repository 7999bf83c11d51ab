"""Lambda HTTP events as AWS sends them, built by keyword-only factories.

The shapes follow AWS's documented examples: API Gateway's "Lambda proxy integration input
format" (REST API, payload format 1.0), HTTP API's "payload format version 2.0", the Lambda
function URL request payload (also 2.0) and ELB's "Lambda functions as targets". Each factory
takes the request as a client sends it (query and headers as lists of pairs, the body as
bytes) and encodes it the way that service does.
"""

from __future__ import annotations

import base64 as b64
from typing import Any
from urllib.parse import quote, urlencode

Pairs = list[tuple[str, str]]

ACCOUNT_ID = "123456789012"
SOURCE_IP = "203.0.113.7"
USER_AGENT = "curl/8.5.0"
TRACE_ID = "Root=1-67891233-abcdef012345678912345678"
REST_API_ID = "a1b2c3d4e5"
HTTP_API_ID = "f6g7h8i9j0"
FUNCTION_URL_ID = "abcdefghijklmnopqrstuvwxyz0123"
REQUEST_TIME = "22/Nov/2026:10:00:00 +0000"
REQUEST_TIME_EPOCH = 1795348800000
TARGET_GROUP_ARN = (
    "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/arcade-pay/6d0ecf831eec9f09"
)


def make_v1_event(
    *,
    method: str = "GET",
    path: str = "/",
    query: Pairs | None = None,
    headers: Pairs | None = None,
    body: bytes = b"",
    base64: bool = False,
    stage: str = "prod",
    custom_domain: str | None = None,
    base_path: str = "",
    resource: str = "/{proxy+}",
) -> dict[str, Any]:
    """Return an API Gateway REST API proxy event (payload format 1.0).

    ``path`` is the path as API Gateway reports it: without the stage on the execute-api
    domain, or as the client sent it on ``custom_domain``. With ``base_path`` (a custom
    domain's base path mapping, e.g. ``/pay``) the event's path starts with it, and the
    ``{proxy+}`` parameter holds ``path`` alone. ``resource`` is the API's resource that
    matched: ``/{proxy+}`` by default, or one without parameters (``/``, ``/webhook``).
    """
    route = path
    path = base_path + path
    domain = custom_domain or f"{REST_API_ID}.execute-api.us-east-1.amazonaws.com"
    all_headers = _with_defaults(
        _edge_headers(domain, lower=False),
        headers or [],
        body,
    )
    multi_headers = _group(all_headers)
    multi_query = _group(query or [])
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {name: values[-1] for name, values in multi_headers.items()},
        "multiValueHeaders": multi_headers,
        # API Gateway decodes the query before handing it over, and sends null for none.
        "queryStringParameters": (
            {key: values[-1] for key, values in multi_query.items()} if multi_query else None
        ),
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": {"proxy": route.lstrip("/")} if "{proxy+}" in resource else None,
        "stageVariables": None,
        "requestContext": {
            "accountId": ACCOUNT_ID,
            "apiId": REST_API_ID,
            "authorizer": None,
            "domainName": domain,
            "domainPrefix": domain.split(".")[0],
            "extendedRequestId": "Ab1CdEfGhIjKlMn=",
            "httpMethod": method,
            "identity": {
                "accessKey": None,
                "accountId": None,
                "caller": None,
                "cognitoAuthenticationProvider": None,
                "cognitoAuthenticationType": None,
                "cognitoIdentityId": None,
                "cognitoIdentityPoolId": None,
                "principalOrgId": None,
                "sourceIp": SOURCE_IP,
                "user": None,
                "userAgent": USER_AGENT,
                "userArn": None,
            },
            "path": path if custom_domain else f"/{stage}{path}",
            "protocol": "HTTP/1.1",
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "requestTime": REQUEST_TIME,
            "requestTimeEpoch": REQUEST_TIME_EPOCH,
            "resourceId": "abc123",
            "resourcePath": resource,
            "stage": stage,
        },
        "body": _encode_body(body, base64) if body else None,
        "isBase64Encoded": base64,
    }


def make_v2_event(
    *,
    method: str = "GET",
    path: str = "/",
    query: Pairs | None = None,
    raw_query: str | None = None,
    headers: Pairs | None = None,
    cookies: list[str] | None = None,
    body: bytes = b"",
    base64: bool = False,
    stage: str = "$default",
    function_url: bool = False,
    custom_domain: str | None = None,
    base_path: str = "",
    route: str = "$default",
) -> dict[str, Any]:
    """Return an HTTP API (or, with ``function_url``, a function URL) event, payload format 2.0.

    ``raw_query`` is the query string exactly as the client sent it; without it, ``query`` is
    encoded the way a browser would. On ``custom_domain`` with an API mapping (``base_path``,
    e.g. ``/pay``) rawPath keeps the base path in front and leaves the stage out. ``route`` is
    the route key that matched (``ANY /{proxy+}`` fills the ``proxy`` path parameter).
    """
    api_id = FUNCTION_URL_ID if function_url else HTTP_API_ID
    domain = custom_domain or (
        f"{api_id}.lambda-url.us-east-1.on.aws"
        if function_url
        else f"{api_id}.execute-api.us-east-1.amazonaws.com"
    )
    if custom_domain:
        raw_path = base_path + path
    else:
        raw_path = path if stage == "$default" else f"/{stage}{path}"
    if raw_query is None:
        raw_query = urlencode(query or [], quote_via=quote)
    all_headers = _with_defaults(
        _edge_headers(domain, lower=True),
        headers or [],
        body,
    )
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route,
        "rawPath": raw_path,
        "rawQueryString": raw_query,
        # 2.0 lower-cases names and joins repeats with a bare comma.
        "headers": {name.lower(): ",".join(values) for name, values in _group(all_headers).items()},
        "requestContext": {
            "accountId": "anonymous" if function_url else ACCOUNT_ID,
            "apiId": api_id,
            "domainName": domain,
            "domainPrefix": api_id,
            "http": {
                "method": method,
                "path": raw_path,
                "protocol": "HTTP/1.1",
                "sourceIp": SOURCE_IP,
                "userAgent": USER_AGENT,
            },
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "routeKey": route,
            "stage": stage,
            "time": REQUEST_TIME,
            "timeEpoch": REQUEST_TIME_EPOCH,
        },
        "isBase64Encoded": base64,
    }
    # 2.0 leaves out the fields it has nothing for.
    if "{proxy+}" in route:
        event["pathParameters"] = {"proxy": path.lstrip("/")}
    if cookies:
        event["cookies"] = list(cookies)
    if query:
        event["queryStringParameters"] = {
            key: ",".join(values) for key, values in _group(query).items()
        }
    if body:
        event["body"] = _encode_body(body, base64)
    return event


def make_alb_event(
    *,
    method: str = "GET",
    path: str = "/",
    query: Pairs | None = None,
    headers: Pairs | None = None,
    body: bytes = b"",
    base64: bool = False,
    multi_value: bool = True,
) -> dict[str, Any]:
    """Return an ALB target group event, with multi-value headers on or off."""
    domain = "arcade-alb-1234567890.us-east-1.elb.amazonaws.com"
    all_headers = _with_defaults(
        _edge_headers(domain, lower=True),
        headers or [],
        body,
    )
    # The load balancer passes the query on still percent-encoded.
    raw_query = _group([(quote(key, safe=""), quote(value, safe="")) for key, value in query or []])
    event: dict[str, Any] = {
        "requestContext": {"elb": {"targetGroupArn": TARGET_GROUP_ARN}},
        "httpMethod": method,
        "path": path,
        "body": _encode_body(body, base64),
        "isBase64Encoded": base64,
    }
    if multi_value:
        event["multiValueQueryStringParameters"] = raw_query
        event["multiValueHeaders"] = _group(all_headers)
    else:
        # Without multi-value headers the load balancer keeps only the last of each repeat.
        event["queryStringParameters"] = {key: values[-1] for key, values in raw_query.items()}
        event["headers"] = {name: values[-1] for name, values in _group(all_headers).items()}
    return event


def _edge_headers(domain: str, *, lower: bool) -> Pairs:
    """Return the headers AWS's edge adds to every request for ``domain``: in lower case for
    HTTP API, function URL and ALB events, as the client sent them for a REST API."""
    headers = [
        ("Accept", "*/*"),
        ("Host", domain),
        ("User-Agent", USER_AGENT),
        ("X-Amzn-Trace-Id", TRACE_ID),
        ("X-Forwarded-For", SOURCE_IP),
        ("X-Forwarded-Port", "443"),
        ("X-Forwarded-Proto", "https"),
    ]
    return [(name.lower(), value) for name, value in headers] if lower else headers


def _with_defaults(defaults: Pairs, given: Pairs, body: bytes) -> Pairs:
    given_names = {name.lower() for name, _ in given}
    kept = [(name, value) for name, value in defaults if name.lower() not in given_names]
    if body and "content-length" not in given_names:
        kept.append(
            ("content-length" if defaults[0][0].islower() else "Content-Length", str(len(body)))
        )
    return kept + list(given)


def _group(pairs: Pairs) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        grouped.setdefault(key, []).append(value)
    return grouped


def _encode_body(body: bytes, base64: bool) -> str:
    return b64.b64encode(body).decode("ascii") if base64 else body.decode("utf-8")
