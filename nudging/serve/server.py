"""Start the HTTP server for `nudging serve`."""

from __future__ import annotations

import argparse
import socket
import sys

from nudging.errors import NudgingError
from nudging.nudger import Nudger
from nudging.serve.app import create_app
from nudging.serve.serving import ServerSettings, Service


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            raise NudgingError(f"cannot listen on {host}:{port} ({error.strerror}); choose another --port") from None


def serve(nudger: Nudger, args: argparse.Namespace) -> int:
    import uvicorn

    check_port_free(args.host, args.port)
    given = {name: getattr(args, name) for name in ("model_name", "api_key", "max_concurrency", "max_queue",
                                                    "max_tokens", "max_tokens_limit")}
    settings = ServerSettings(**{name: value for name, value in given.items() if value is not None})
    service = Service(nudger, args.mode, replicas=settings.max_concurrency, queue=settings.max_queue)
    app = create_app(service, settings)
    print(f"nudging: serving {settings.model_name!r} ({args.mode}) on http://{args.host}:{args.port} "
          f"(OpenAI API under /v1, chat page at /)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=5)
    return 0
