"""uvicorn, the production server: on the benchmark it delivers three times what daphne does (docs/performance.md).

    python -m chatproject.serve_uvicorn -b 127.0.0.1 -p 8000 [chatproject.asgi:application]

The options are daphne's names for the same things, so either launcher fits the same command line.
Logging is Django's (settings.LOGGING: JSON, tokens redacted in every line): uvicorn's own logging
setup and access log are off; chat.http logs every HTTP request and chat.ws every close the application makes.

What one client makes the server hold is bounded: a request head to 64 KiB (answered 431 beyond it,
chatproject/uvicorn_http.py; httptools has no bound of its own) and a WebSocket message to the
application's frame limit, settings.CHAT_MAX_FRAME_BYTES: uvicorn's protocol closes with 1009, the
code the application would send, as soon as a frame's header announces more, before the payload is
read (uvicorn's default, 16 MiB, would be read whole before the application refused it).

WebSocket compression (permessage-deflate) is off: chat events are small, and a deflate context
costs each socket tens of KiB and every frame CPU (`--ws-per-message-deflate` turns it on).
"""

import argparse
import logging
import os
import sys

from chatproject.logs import JsonFormatter, PlainFormatter

DEFAULT_APPLICATION = "chatproject.asgi:application"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chatproject.serve_uvicorn", description=__doc__.split("\n\n")[0])
    parser.add_argument("-b", "--bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("-p", "--port", type=int, default=8000, help="port to listen on (default 8000)")
    parser.add_argument("application", nargs="?", default=DEFAULT_APPLICATION, help=f"default {DEFAULT_APPLICATION}")
    parser.add_argument(
        "--ws-per-message-deflate", action="store_true", help="negotiate WebSocket compression (off by default)"
    )
    return parser.parse_args(argv)


def _log_until_django_configures_logging() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(
        PlainFormatter() if os.environ.get("LOG_FORMAT", "").strip().lower() == "plain" else JsonFormatter()
    )
    logging.basicConfig(handlers=[handler], level=logging.INFO)


def main(argv: list[str] | None = None) -> None:
    arguments = parse_args(argv)
    _log_until_django_configures_logging()
    try:
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "chatproject.settings")
        import uvicorn
        from django.conf import settings

        from chatproject.uvicorn_http import HeadBoundedHttpToolsProtocol

        uvicorn.run(
            arguments.application,
            host=arguments.bind,
            port=arguments.port,
            http=HeadBoundedHttpToolsProtocol,
            ws="websockets-sansio",
            ws_max_size=settings.CHAT_MAX_FRAME_BYTES,
            ws_per_message_deflate=arguments.ws_per_message_deflate,
            lifespan="off",
            log_config=None,  # settings.LOGGING decides
            access_log=False,  # chat.http logs each request, with its user and request id
            proxy_headers=False,  # the client address comes from TRUSTED_PROXIES (chatproject/ratelimit.py)
            server_header=False,
        )
    except Exception as exc:
        logging.getLogger("chatproject.serve").critical("server failed to start: %r", exc, exc_info=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
