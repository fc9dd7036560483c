"""A WSGI application instrumented with mmstats, for gunicorn's pre-forked
workers.

    MMSTATS_DIR=/tmp/web-stats gunicorn --preload -w 4 -b 127.0.0.1:8000 \\
        --chdir python/examples gunicorn_app:app
    MMSTATS_DIR=/tmp/web-stats mmash      # Prometheus /metrics on 127.0.0.1:8787

With ``--preload`` the master imports this module and opens the stats
before it forks; each worker gets a file of its own at fork (format-spec.md
§6.7), so no worker ever counts into another's file. Without it, each
worker opens its own when it imports the module. Either way, mmash sums
every worker's file, live or dead, so ``web_requests_total`` equals the
requests served, across worker restarts; ``mmash retire`` (or mmash's
``--retire-after``) folds the files of dead workers into one archive.
"""

from __future__ import annotations

import os
from typing import Callable, Iterable, List, Tuple

import mmstats


class WebStats(mmstats.MmStats):
    requests = mmstats.CounterField(label="requests", help="Requests served.")
    not_found = mmstats.CounterField(label="status.404", help="Requests for unknown paths.")
    in_flight = mmstats.IntField(label="in_flight", help="Requests being served by this thread.")
    request = mmstats.TimerField(label="request", help="Time spent serving a request.")
    last_path = mmstats.StringField(label="last_path", size=64, help="Path of the last request.")


stats = WebStats(label_prefix="web.")


def app(environ: dict, start_response: Callable[[str, List[Tuple[str, str]]], object]) -> Iterable[bytes]:
    """Answers every path with the serving worker's pid."""
    stats.in_flight += 1
    try:
        with stats.request:
            path = environ.get("PATH_INFO", "/")
            stats.last_path = path
            if path == "/missing":
                stats.not_found.inc()
                status = "404 Not Found"
            else:
                status = "200 OK"
            body = f"{os.getpid()}\n".encode()
        stats.requests.inc()
    finally:
        stats.in_flight -= 1
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
