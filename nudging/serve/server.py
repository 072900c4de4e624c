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
    service = Service(nudger, args.mode, replicas=args.max_concurrency, queue=args.max_queue)
    settings = ServerSettings(model_name=args.model_name, api_key=args.api_key, max_tokens=args.max_tokens,
                              max_tokens_limit=args.max_tokens_limit)
    app = create_app(service, settings)
    print(f"nudging: serving {args.model_name!r} ({args.mode}) on http://{args.host}:{args.port} "
          f"(OpenAI API under /v1, chat page at /)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=5)
    return 0
