"""The Lambda container image, rebuilt as a folder and run the way Lambda runs it.

There is no Docker engine here, so the image is reproduced instead of built: hadolint lints
the Dockerfile, then the Dockerfile's own COPY and RUN lines (read, not restated here) lay out
its task root in a temporary folder, honouring .dockerignore. The function then runs from that
folder under the real runtime client, awslambdaric, in a fresh interpreter whose import path
holds the task root and, after it, a folder with awslambdaric alone (AWS's base image keeps the
runtime client outside the task root too). ``python -S`` keeps this virtualenv's packages out,
so the app and its dependencies can only come from the task root. The runtime polls a loopback
stand-in of the Lambda Runtime API, with the environment the Lambda service sets.

What this leaves out: the base image's interpreter (3.13 there, this venv's 3.11 here) and its
OS libraries; the dependencies are the same pinned versions, built for this interpreter.

The SAM template is checked here too: cfn-lint, and the table and policy against the store.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
import yaml

from arcade.config import Settings
from arcade.store.dynamodb import DynamoStore
from tests.support.http_server import LoopbackServer
from tests.support.lambda_events import make_v1_event, make_v2_event
from tests.support.lambda_runtime_standin import LambdaRuntimeStandIn, Outcome
from tests.support.processes import stop_process
from tests.support.stripe_standin import event as stripe_event
from tests.support.stripe_standin import sign_payload

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
TEMPLATE = ROOT / "template.yaml"
# The venv's scripts (hadolint, cfn-lint) sit beside its interpreter; no resolve(): that would
# follow the symlink out of the venv.
VENV_BIN = Path(sys.executable).parent
IMAGE_TASK_ROOT = "/var/task"  # LAMBDA_TASK_ROOT in AWS's base images, and their WORKDIR
WEBHOOK_SECRET = "whsec_container_test_secret"
TABLE = "ArcadePayContainerTest"
INVOKE_TIMEOUT = 60.0


# --- the Dockerfile, read ------------------------------------------------------------------------
@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str
    line: int


def read_dockerfile(path: Path) -> list[Instruction]:
    """Return the Dockerfile's instructions, with continuation lines joined."""
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        text = raw.strip()
        if not pending and (not text or text.startswith("#")):
            continue
        if pending and text.startswith("#"):
            continue  # a comment inside a continued instruction
        if not pending:
            start = number
        if text.endswith("\\"):
            pending.append(text[:-1])
            continue
        pending.append(text)
        keyword, _, arguments = " ".join(pending).strip().partition(" ")
        instructions.append(Instruction(keyword.upper(), arguments.strip(), start))
        pending = []
    assert not pending, "the Dockerfile ends in a line continuation"
    return instructions


def only(instructions: list[Instruction], keyword: str) -> Instruction:
    """Return the one instruction with this keyword."""
    found = [i for i in instructions if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword} in the Dockerfile, found {len(found)}"
    return found[0]


def image_path(text: str) -> str:
    """Expand the task-root variable and make a path absolute from the base image's WORKDIR."""
    text = text.replace("${LAMBDA_TASK_ROOT}", IMAGE_TASK_ROOT)
    text = text.replace("$LAMBDA_TASK_ROOT", IMAGE_TASK_ROOT)
    assert "$" not in text, f"this test knows only LAMBDA_TASK_ROOT, not {text!r}"
    return text if text.startswith("/") else f"{IMAGE_TASK_ROOT}/{text}"


def local_path(task_root: Path, in_image: str) -> Path:
    """Return where a path under the image's task root lives in the reproduced one."""
    in_image = in_image.rstrip("/") or "/"
    assert in_image == IMAGE_TASK_ROOT or in_image.startswith(f"{IMAGE_TASK_ROOT}/"), (
        f"{in_image} is outside the task root; this test reproduces only the task root"
    )
    return task_root / in_image.removeprefix(IMAGE_TASK_ROOT).lstrip("/")


# --- .dockerignore, with Docker's matching rules ----------------------------------------------
class DockerIgnore:
    """Decide which context paths Docker leaves out of the build, as moby's patternmatcher does.

    Patterns are anchored at the context root (``*.db`` is only the root's; ``**/*.db`` is every
    folder's), ``!`` re-includes, the last matching pattern wins, and a path is left out when
    its folder is.
    """

    def __init__(self, text: str):
        self.patterns: list[tuple[bool, re.Pattern[str]]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            include = line.startswith("!")
            pattern = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
            self.patterns.append((include, re.compile(_pattern_regex(pattern))))

    @classmethod
    def of(cls, context: Path) -> DockerIgnore:
        path = context / ".dockerignore"
        return cls(path.read_text() if path.exists() else "")

    def excludes(self, relative: str) -> bool:
        """Return whether the context path ``relative`` (with / separators) is left out."""
        parts = relative.strip("/").split("/")
        prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        excluded = False
        for include, regex in self.patterns:
            if any(regex.fullmatch(prefix) for prefix in prefixes):
                excluded = not include
        return excluded


def _pattern_regex(pattern: str) -> str:
    regex = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            regex += ".*"
            i += 2
        elif pattern[i] == "*":
            regex += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            regex += "[^/]"
            i += 1
        else:
            regex += re.escape(pattern[i])
            i += 1
    return regex


# --- the image's task root, reproduced ---------------------------------------------------------
def reproduce_task_root(instructions: list[Instruction], context: Path, task_root: Path) -> None:
    """Carry out the Dockerfile's COPY and RUN lines in order, into ``task_root``."""
    ignore = DockerIgnore.of(context)
    task_root.mkdir(parents=True, exist_ok=True)
    for instruction in instructions:
        if instruction.keyword in ("FROM", "CMD", "LABEL"):
            continue
        if instruction.keyword == "COPY":
            _copy(instruction, context, ignore, task_root)
        elif instruction.keyword == "RUN":
            _run(instruction, task_root)
        else:
            pytest.fail(
                f"Dockerfile line {instruction.line}: this test does not reproduce "
                f"{instruction.keyword}; teach it, or the copy it runs is not the image"
            )


def _copy(instruction: Instruction, context: Path, ignore: DockerIgnore, task_root: Path) -> None:
    arguments = instruction.arguments
    words = json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)
    flags = [word for word in words if word.startswith("--")]
    assert not [flag for flag in flags if flag.startswith("--from")], "multi-stage COPY"
    *sources, destination = [word for word in words if not word.startswith("--")]
    target = local_path(task_root, image_path(destination))
    into_folder = destination.endswith("/") or len(sources) > 1
    for source in sources:
        relative = os.path.normpath(source).lstrip("/")
        assert not ignore.excludes(relative), (
            f"Dockerfile line {instruction.line} copies {source}, which .dockerignore leaves "
            "out of the build context: the build would fail"
        )
        origin = context / relative
        assert origin.exists(), f"Dockerfile line {instruction.line}: no {source} to copy"
        if origin.is_dir():
            # Docker copies a folder's contents, minus what the context never had.
            for path in sorted(origin.rglob("*")):
                inside = path.relative_to(context).as_posix()
                if path.is_file() and not ignore.excludes(inside):
                    copied = target / path.relative_to(origin)
                    copied.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, copied)
        else:
            copied = target / origin.name if into_folder else target
            copied.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, copied)


def _run(instruction: Instruction, task_root: Path) -> None:
    words = shlex.split(instruction.arguments)
    if words[:2] == ["pip", "install"]:
        command = _pip_install(instruction, words[2:], task_root)
    elif words[:3] == ["python", "-m", "compileall"]:
        paths = [str(local_path(task_root, image_path(w))) for w in words[3:] if w != "-q"]
        command = [sys.executable, "-m", "compileall", "-q", *paths]
    else:
        pytest.fail(f"Dockerfile line {instruction.line}: this test cannot reproduce RUN {words}")
    started = time.perf_counter()
    done = subprocess.run(command, cwd=task_root, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    print(f"reproduced Dockerfile line {instruction.line} in {time.perf_counter() - started:.1f}s")


def _pip_install(instruction: Instruction, words: list[str], task_root: Path) -> list[str]:
    requirements: list[str] = []
    target = None
    rest = iter(words)
    for word in rest:
        if word == "-r":
            requirements += ["-r", str(local_path(task_root, image_path(next(rest))))]
        elif word == "--target":
            target = local_path(task_root, image_path(next(rest)))
        elif word != "--no-cache-dir":  # here pip's cache is welcome: it saves the download
            pytest.fail(f"Dockerfile line {instruction.line}: unknown pip option {word}")
    assert requirements and target == task_root, "pip must install requirements into the task root"
    # The image's pip compiles what it installs; so does this one (the task root is read-only
    # in Lambda, and the function runs here with PYTHONDONTWRITEBYTECODE as if it were).
    return [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        *requirements,
        "--target",
        str(target),
    ]


# --- the function, run as Lambda runs it -------------------------------------------------------
def runtime_client_folder(folder: Path) -> Path:
    """Link awslambdaric and what it requires, and nothing else, into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    wanted = ["awslambdaric"]
    seen: set[str] = set()
    while wanted:
        name = wanted.pop()
        if name.lower() in seen:
            continue
        seen.add(name.lower())
        distribution = importlib.metadata.distribution(name)
        for requirement in distribution.requires or []:
            if "extra ==" not in requirement:
                wanted.append(re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0])
        for file in distribution.files or []:
            top = file.parts[0]
            if top in ("..", "__pycache__") or top.endswith((".dist-info", ".data")):
                continue
            link = folder / top
            if not link.exists():
                link.symlink_to(Path(distribution.locate_file(top)))
    return folder


class DynamoTripwire:
    """A DynamoDB endpoint that refuses every call and remembers it; these tests expect none."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        calls = self.calls

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                calls.append(self.headers.get("X-Amz-Target", "?"))
                body = b'{"__type":"com.amazon.coral.service#AccessDeniedException"}'
                self.send_response(400)
                self.send_header("Content-Type", "application/x-amz-json-1.0")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                """Stay quiet."""

        self._server = LoopbackServer(Handler, name="dynamodb-tripwire")

    @property
    def url(self) -> str:
        return self._server.url

    def close(self) -> None:
        self._server.close()


@dataclass(frozen=True)
class Image:
    """The reproduced image: its task root, its handler, and the runtime client beside it."""

    task_root: Path
    handler: str
    runtime_dir: Path

    def environment(self, runtime_api: str, **settings: str) -> dict[str, str]:
        """Return the environment of the function's process: the image's, Lambda's, the app's."""
        return {
            # The base image's.
            "LAMBDA_TASK_ROOT": str(self.task_root),
            "LAMBDA_RUNTIME_DIR": str(self.runtime_dir),
            "LANG": "en_US.UTF-8",
            "TZ": ":UTC",
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            # Python finds the task root first and the runtime client after it, nothing else.
            "PYTHONPATH": os.pathsep.join([str(self.task_root), str(self.runtime_dir)]),
            "PYTHONDONTWRITEBYTECODE": "1",  # /var/task is read-only in Lambda
            # The Lambda service's.
            "_HANDLER": self.handler,
            "AWS_LAMBDA_RUNTIME_API": runtime_api,
            "AWS_LAMBDA_FUNCTION_NAME": "arcade-pay",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/arcade-pay",
            "AWS_LAMBDA_LOG_STREAM_NAME": "2026/11/22/[$LATEST]0123456789abcdef0123456789abcdef",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "ASIAEXAMPLEEXAMPLE00",
            "AWS_SECRET_ACCESS_KEY": "example-secret-access-key",
            "AWS_SESSION_TOKEN": "example-session-token",
            # The app's.
            **settings,
        }

    def python(self) -> list[str]:
        """Return the interpreter command: -S keeps site-packages (this venv's) off the path."""
        return [sys.executable, "-S"]


class LambdaFunction:
    """One function instance: awslambdaric serving ``image``'s handler against a stand-in API."""

    def __init__(self, image: Image, logs: Path, **settings: str):
        self.image = image
        self.runtime_api = LambdaRuntimeStandIn(timeout_seconds=15).start()
        self.stdout_path = logs / "stdout.log"
        self.stderr_path = logs / "stderr.log"
        logs.mkdir(parents=True, exist_ok=True)
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            # The base image's entry point runs exactly this: python -m awslambdaric <CMD>.
            self.process = subprocess.Popen(
                [*image.python(), "-m", "awslambdaric", image.handler],
                cwd=image.task_root,
                env=image.environment(self.runtime_api.address, **settings),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )

    def invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        """Hand ``event`` to the function and return what it answered."""
        outcome = self._outcome(event)
        assert outcome.kind == "response", (
            f"the handler failed ({outcome.error_type}): {outcome.body!r}\n{self.output()}"
        )
        return outcome.json()

    def invoke_expecting_error(self, event: dict[str, Any]) -> dict[str, Any]:
        """Hand ``event`` to the function and return the error the runtime reported."""
        outcome = self._outcome(event)
        assert outcome.kind == "error", f"the handler answered {outcome.body!r}"
        return outcome.json()

    def _outcome(self, event: dict[str, Any]) -> Outcome:
        request_id = self.runtime_api.submit(event)
        deadline = time.monotonic() + INVOKE_TIMEOUT
        while time.monotonic() < deadline:
            outcome = self.runtime_api.outcome(request_id, timeout=0.1)
            if outcome is not None:
                return outcome
            if self.process.poll() is not None:
                init_error = self.runtime_api.wait_for_init_error(timeout=0)
                pytest.fail(
                    f"the function exited ({self.process.returncode}); init error: "
                    f"{init_error and init_error.body!r}\n{self.output()}"
                )
        pytest.fail(f"no answer within {INVOKE_TIMEOUT}s\n{self.output()}")

    def output(self) -> str:
        return (
            f"--- stdout\n{self.stdout_path.read_text(errors='replace')}"
            f"--- stderr\n{self.stderr_path.read_text(errors='replace')}"
        )

    def log_events(self) -> list[dict[str, Any]]:
        """Return the app's JSON log lines (stderr) so far."""
        events = []
        for line in self.stderr_path.read_text().splitlines():
            if line.startswith("{"):
                events.append(json.loads(line))
        return events

    def stop(self) -> None:
        """Stop the process (it is waiting for its next event) and the runtime API."""
        stop_process(self.process, timeout=10)
        self.runtime_api.close()


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def dockerfile() -> list[Instruction]:
    """Read the repository's Dockerfile."""
    return read_dockerfile(DOCKERFILE)


@pytest.fixture(scope="session")
def image(dockerfile: list[Instruction], tmp_path_factory: pytest.TempPathFactory) -> Image:
    """Reproduce the image's task root once per session (pip install takes seconds)."""
    folder = tmp_path_factory.mktemp("image")
    started = time.perf_counter()
    reproduce_task_root(dockerfile, ROOT, folder / "var" / "task")
    print(f"reproduced the image's task root in {time.perf_counter() - started:.1f}s")
    cmd = json.loads(only(dockerfile, "CMD").arguments)
    return Image(
        task_root=folder / "var" / "task",
        handler=cmd[0],
        runtime_dir=runtime_client_folder(folder / "var" / "runtime"),
    )


@pytest.fixture(scope="module")
def dynamodb_tripwire() -> Iterator[DynamoTripwire]:
    """Stand where DynamoDB would be, refusing and counting every call."""
    tripwire = DynamoTripwire()
    yield tripwire
    tripwire.close()


@pytest.fixture
def start_function(
    image: Image, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., LambdaFunction]]:
    """Start function instances with the given app settings; stop them after the test."""
    started: list[LambdaFunction] = []

    def start(**settings: str) -> LambdaFunction:
        function = LambdaFunction(image, tmp_path_factory.mktemp("function"), **settings)
        started.append(function)
        return function

    yield start
    for function in started:
        function.stop()


@pytest.fixture(scope="module")
def warm_function(
    image: Image, dynamodb_tripwire: DynamoTripwire, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LambdaFunction]:
    """One function instance on a DynamoDB store, invoked by several tests in turn."""
    function = LambdaFunction(
        image,
        tmp_path_factory.mktemp("warm-function"),
        DATABASE_URL=f"dynamodb://{TABLE}",
        AWS_ENDPOINT_URL_DYNAMODB=dynamodb_tripwire.url,
        STRIPE_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    yield function
    function.stop()


def customer_created() -> bytes:
    """Return a Stripe event body of a type the app ignores."""
    body = stripe_event("customer.created", {"id": "cus_test123", "object": "customer"})
    return json.dumps(body, indent=2).encode()


# --- the Dockerfile ------------------------------------------------------------------------------
def test_hadolint_finds_nothing_in_the_dockerfile():
    hadolint = VENV_BIN / "hadolint"

    done = subprocess.run(
        [str(hadolint), str(DOCKERFILE)], capture_output=True, text=True, check=False
    )

    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_dockerfile_builds_on_the_lambda_base_image_for_any_architecture(dockerfile):
    base = only(dockerfile, "FROM").arguments

    assert re.fullmatch(r"public\.ecr\.aws/lambda/python:3\.1[2-9]", base)
    assert "--platform" not in base  # buildx --platform picks linux/amd64 or linux/arm64
    assert json.loads(only(dockerfile, "CMD").arguments) == ["app.lambda_handler"]


def test_dockerignore_keeps_secrets_state_and_tooling_out_of_the_build():
    ignore = DockerIgnore.of(ROOT)

    left_out = [
        "tests/conftest.py",
        ".venv/bin/python",
        ".git/HEAD",
        "arcade.db",
        "data/arcade.db",
        ".env",
        ".env.local",
        "arcade/__pycache__/config.cpython-313.pyc",
    ]
    kept = ["app.py", "ca.crt", "requirements.txt", "arcade/__init__.py", "arcade/store/base.py"]
    assert [path for path in left_out if not ignore.excludes(path)] == []
    assert [path for path in kept if ignore.excludes(path)] == []


def test_the_image_holds_the_app_its_dependencies_and_no_tests(image):
    root = image.task_root

    assert (root / "app.py").is_file()
    assert (root / "ca.crt").is_file()
    assert (root / "arcade" / "store" / "dynamodb.py").is_file()
    assert (root / "flask").is_dir()
    assert (root / "awsgi").is_dir()
    assert not (root / "tests").exists()
    assert not list(root.glob("*.db"))


def test_app_and_dependencies_resolve_from_the_task_root_only(image):
    probe = (
        "import importlib.util, json\n"
        "names = ['app', 'arcade', 'flask', 'werkzeug', 'stripe', 'paho', 'awsgi', 'qrcode',\n"
        "         'png', 'dotenv', 'boto3', 'botocore', 'awslambdaric', 'runtime_client',\n"
        "         'pytest', 'moto', 'cfnlint']\n"
        "found = {n: (s.origin if (s := importlib.util.find_spec(n)) else None) for n in names}\n"
        "print(json.dumps(found))\n"
    )

    done = subprocess.run(
        [*image.python(), "-c", probe],
        cwd=image.task_root,
        env=image.environment("127.0.0.1:9"),
        capture_output=True,
        text=True,
        check=True,
    )

    origins = json.loads(done.stdout)
    runtime = {"awslambdaric", "runtime_client"}
    dev_only = {"pytest", "moto", "cfnlint"}
    app_side = {name: path for name, path in origins.items() if name not in runtime | dev_only}
    assert {
        name: path for name, path in app_side.items() if not path.startswith(f"{image.task_root}/")
    } == {}
    assert all(origins[name].startswith(f"{image.runtime_dir}/") for name in runtime)
    assert {name: origins[name] for name in dev_only} == dict.fromkeys(dev_only)


# --- the function, invoked through the runtime API ----------------------------------------------
def test_status_through_api_gateway_rest(warm_function, dynamodb_tripwire):
    answer = warm_function.invoke(make_v1_event(method="GET", path="/status"))

    assert answer["statusCode"] == 200
    assert answer["multiValueHeaders"]["Content-Type"] == ["application/json"]
    body = json.loads(answer["body"])
    assert (body["status"], body["store"]) == ("up", "dynamodb")
    assert dynamodb_tripwire.calls == []


def test_signed_webhook_with_a_base64_body_through_a_function_url(warm_function, dynamodb_tripwire):
    payload = customer_created()
    signature = sign_payload(payload, WEBHOOK_SECRET)

    answer = warm_function.invoke(
        make_v2_event(
            method="POST",
            path="/webhook",
            headers=[("content-type", "application/json"), ("stripe-signature", signature)],
            body=payload,
            base64=True,
            function_url=True,
        )
    )

    assert answer["statusCode"] == 200, answer
    assert json.loads(answer["body"])["result"] == "ignored"
    assert dynamodb_tripwire.calls == []


def test_webhook_with_a_wrong_signature_is_refused(warm_function, dynamodb_tripwire):
    payload = customer_created()
    signature = sign_payload(payload, "whsec_someone_elses_secret")

    answer = warm_function.invoke(
        make_v2_event(
            method="POST",
            path="/webhook",
            headers=[("content-type", "application/json"), ("stripe-signature", signature)],
            body=payload,
            base64=True,
            function_url=True,
        )
    )

    assert answer["statusCode"] == 400
    assert json.loads(answer["body"])["code"] == "invalid_signature"
    assert dynamodb_tripwire.calls == []


def test_a_body_flagged_base64_that_is_not_is_a_400_with_no_error_line(warm_function):
    """GIVEN an event whose body is flagged base64 but is not (a hand-made invoke, a trigger
    misconfigured) WHEN the runtime invokes the function THEN a 400 in the event's shape and
    no [ERROR] line or trace (the invocation failed with binascii.Error: API Gateway's 502)."""
    event = make_v2_event(method="POST", path="/webhook", body=b"{}", function_url=True)
    event.update(body="{not base64}", isBase64Encoded=True)

    answer = warm_function.invoke(event)

    assert answer["statusCode"] == 400, answer
    assert json.loads(answer["body"])["code"] == "bad_request"
    output = warm_function.output()
    assert "Traceback" not in output
    assert "[ERROR]" not in output


def test_function_logs_carry_no_trace(warm_function):
    warm_function.invoke(make_v1_event(method="GET", path="/status"))

    output = warm_function.output()
    assert "Traceback" not in output
    assert "[ERROR]" not in output


def test_sqlite_store_is_refused_in_lambda(start_function):
    function = start_function(DATABASE_URL="sqlite:///tmp/x.db")

    answer = function.invoke(make_v1_event(method="GET", path="/status"))

    assert answer["statusCode"] == 200
    problems = json.loads(answer["body"])["problems"]
    assert any("refused in Lambda" in problem for problem in problems), problems
    refusals = [line for line in function.log_events() if line.get("event") == "store_refused"]
    assert len(refusals) == 1, function.output()
    assert refusals[0]["level"] == "error"


# --- the SAM template ----------------------------------------------------------------------------
class _CloudFormationLoader(yaml.SafeLoader):
    """Read a template's short-form intrinsics (!Ref, !Sub, !GetAtt …) as plain values."""


_CloudFormationLoader.add_multi_constructor(
    "!",
    lambda loader, tag, node: {
        tag: (
            loader.construct_scalar(node)
            if isinstance(node, yaml.ScalarNode)
            else loader.construct_sequence(node)
            if isinstance(node, yaml.SequenceNode)
            else loader.construct_mapping(node)
        )
    },
)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    """Load template.yaml."""
    return yaml.load(TEMPLATE.read_text(), Loader=_CloudFormationLoader)  # noqa: S506


def resources_of_type(template: dict[str, Any], kind: str) -> dict[str, Any]:
    return {name: r for name, r in template["Resources"].items() if r["Type"] == kind}


class _RecordingDynamoClient:
    """Stand in for boto3's client to catch the table DynamoStore.create_table asks for."""

    def __init__(self) -> None:
        self.created: dict[str, Any] = {}

    def create_table(self, **params: Any) -> dict[str, Any]:
        self.created = params
        return {}

    def describe_table(self, **params: Any) -> dict[str, Any]:
        return {"Table": {"TableStatus": "ACTIVE", "GlobalSecondaryIndexes": []}}

    def describe_time_to_live(self, **params: Any) -> dict[str, Any]:
        return {"TimeToLiveDescription": {"TimeToLiveStatus": "DISABLED"}}

    def update_time_to_live(self, **params: Any) -> dict[str, Any]:
        self.time_to_live = params["TimeToLiveSpecification"]
        return {}


def test_cfn_lint_finds_nothing_in_the_template():
    done = subprocess.run(
        [str(VENV_BIN / "cfn-lint"), str(TEMPLATE)], capture_output=True, text=True, check=False
    )

    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_template_table_is_the_one_the_store_creates(template):
    client = _RecordingDynamoClient()
    DynamoStore(TABLE, client=client).create_table()
    (table,) = resources_of_type(template, "AWS::DynamoDB::Table").values()

    properties = table["Properties"]
    wanted = client.created
    assert properties["BillingMode"] == wanted["BillingMode"]
    assert sorted(properties["AttributeDefinitions"], key=str) == sorted(
        wanted["AttributeDefinitions"], key=str
    )
    assert properties["KeySchema"] == wanted["KeySchema"]
    assert properties["GlobalSecondaryIndexes"] == wanted["GlobalSecondaryIndexes"]
    assert properties["TimeToLiveSpecification"] == client.time_to_live
    assert properties["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert properties["SSESpecification"] == {"SSEEnabled": True}
    assert (table["DeletionPolicy"], table["UpdateReplacePolicy"]) == ("Retain", "Retain")


def test_template_grants_only_the_item_actions_the_store_calls(template):
    source = (ROOT / "arcade" / "store" / "dynamodb.py").read_text()
    # `flask store init` alone makes the table and turns on Time to Live, with its own rights.
    store_init = {
        "create_table",
        "describe_table",
        "update_table",
        "describe_time_to_live",
        "update_time_to_live",
    }
    operations = set(re.findall(r'_call\(\s*"(\w+)"', source)) - store_init
    # A transaction is authorised item by item, by the action each of its parts performs.
    parts = set(re.findall(r'"(Put|Update|Delete|ConditionCheck)":\s*\{', source))
    per_part = {"Put": "PutItem", "Update": "UpdateItem", "Delete": "DeleteItem"}
    per_part["ConditionCheck"] = "ConditionCheckItem"
    assert "transact_write_items" in operations and parts
    needed = {
        "dynamodb:" + "".join(word.title() for word in op.split("_"))
        for op in operations - {"transact_write_items"}
    } | {f"dynamodb:{per_part[part]}" for part in parts}
    (function,) = resources_of_type(template, "AWS::Serverless::Function").values()

    statements = [s for policy in function["Properties"]["Policies"] for s in policy["Statement"]]
    granted = {action for s in statements for action in s["Action"]}
    assert granted == needed
    assert all(s["Effect"] == "Allow" for s in statements)
    assert all("*" not in str(s["Resource"]) for s in statements)


def test_an_event_that_is_not_http_fails_the_invocation_by_name(start_function):
    function = start_function(DATABASE_URL=f"dynamodb://{TABLE}")

    outcome = function.invoke_expecting_error({"detail-type": "Scheduled Event"})

    assert outcome["errorType"] == "ValueError"
    assert "not an API Gateway, function URL or ALB event" in outcome["errorMessage"]


# Values for each parameter and the variable it becomes, each with whether the app's settings,
# read in Lambda, take it as given (a value the settings refuse must not deploy either).
PARAMETER_VALUES = {
    "StripeApiKey": (
        "STRIPE_API_KEY",
        [
            ("sk_live_51Habc", True),
            ("rk_test_51Habc", True),
            ("pk_live_51Habc", False),
            ("sk_51Habc", False),
            ("whsec_51Habc", False),
        ],
    ),
    "StripeWebhookSecret": (
        "STRIPE_WEBHOOK_SECRET",
        [("whsec_0123abc", True), ("whsec_", False), ("sk_live_x", False)],
    ),
    "EmqxBrokerUrl": (
        "EMQX_BROKER_URL",
        [
            ("mqtts://abc.emqxsl.com:8883", True),
            ("abc.emqxsl.com", True),
            ("mqtt://abc.emqxsl.com:1883", False),
            ("MQTT://abc.emqxsl.com", False),
            ("mqtt://localhost:1883", False),
            ("mqtts://user:secret@abc.emqxsl.com:8883", False),
            ("ws://abc.emqxsl.com", False),
        ],
    ),
    "AdminApiKey": (
        "ADMIN_API_KEY",
        [
            ("k" * 32, True),
            ("k" * 31, False),
            (" " + "k" * 31, False),
            ("k" * 31 + " ", False),
            (" " * 32, False),
            ("é" * 32, False),
            ("k" * 31 + "\t", False),
            ("k" * 16 + " " + "k" * 16, True),
        ],
    ),
}


@pytest.mark.parametrize("parameter", PARAMETER_VALUES)
def test_each_secret_parameter_allows_exactly_what_the_settings_take(template, parameter):
    """GIVEN template.yaml's parameters WHEN a value is tried against its AllowedPattern (which
    CloudFormation matches against the whole value) THEN it deploys exactly when the settings
    in Lambda take it: a key the app would refuse, or plain-text MQTT, fails the deploy."""
    spec = template["Parameters"][parameter]
    variable, values = PARAMETER_VALUES[parameter]
    lambda_env = {"AWS_LAMBDA_FUNCTION_NAME": "arcade-pay", "DATABASE_URL": "dynamodb://t"}

    assert spec.get("NoEcho") is True or parameter == "EmqxBrokerUrl"
    for value, taken in values:
        settings = Settings.from_env({**lambda_env, variable: value})
        used = settings.problems == () and settings.missing(variable) == []
        assert used is taken, (value, settings.problems)
        deploys = re.fullmatch(spec["AllowedPattern"], value) is not None
        deploys = deploys and len(value) >= spec.get("MinLength", 0)
        assert deploys is taken, (parameter, value)


def test_the_admin_key_is_asked_for_at_deploy_and_is_32_characters_or_more(template):
    """GIVEN template.yaml WHEN its AdminApiKey parameter is read THEN it has no default (a
    deploy asks for it) and CloudFormation's MinLength refuses a key shorter than the 32
    characters the settings require, before any deploy."""
    spec = template["Parameters"]["AdminApiKey"]

    assert "Default" not in spec
    assert spec["MinLength"] == 32
    assert spec["NoEcho"] is True
