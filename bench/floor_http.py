"""The HTTP floor of SPEC 'Budgets': a Flask app whose POST route only reads its body.

    python bench/floor_http.py PORT

It is served the way ``python app.py`` serves the product: ``arcade.serve.PooledWSGIServer``
(a pool of threads) on 127.0.0.1:PORT, werkzeug's access log off, until SIGTERM or SIGINT.
``bench/bench.py`` starts it as its own process and drives it with the product's client code.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from flask import Flask, request  # noqa: E402

from arcade.serve import PooledWSGIServer  # noqa: E402

app = Flask(__name__)


@app.post("/webhook")
def webhook() -> tuple[str, int]:
    request.get_data()
    return "", 200


def main() -> None:
    port = int(sys.argv[1])
    # As arcade.serve.serve does: no werkzeug access line per request.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = PooledWSGIServer("127.0.0.1", port, app)

    def stop(_signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
