"""The HTTP floor of README.md's "Performance": a Flask app whose POST route only reads its body.

    python bench/floor_http.py PORT

It is served the way ``python app.py`` serves the product: ``arcade.serve.make_server``
(waitress, the same threads and timeouts) on 127.0.0.1:PORT, until SIGTERM or SIGINT.
``bench/bench.py`` starts it as its own process and drives it with the product's client code.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask import Flask, request  # noqa: E402

from arcade.serve import make_server, run_until_signalled  # noqa: E402

app = Flask(__name__)


@app.post("/webhook")
def webhook() -> tuple[str, int]:
    request.get_data()
    return "", 200


def main() -> None:
    port = int(sys.argv[1])
    logging.getLogger("waitress").setLevel(logging.WARNING)  # as arcade.serve.serve does
    run_until_signalled(make_server(app, "127.0.0.1", port))


if __name__ == "__main__":
    main()
