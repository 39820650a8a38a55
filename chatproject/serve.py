"""daphne, with its access log written through logging: JSON like every other line, query tokens redacted.

daphne's own access log writes raw request lines, `?token=` included, to a stream. This launcher takes
the same arguments as the `daphne` command and hands its access events to the `daphne.access` logger:

    python -m chatproject.serve -b 127.0.0.1 -p 8000 chatproject.asgi:application

An access log is written when daphne would write one (verbosity 1, the default, or --access-log);
it goes to the log handlers of settings.LOGGING, whatever --access-log names.
"""

import logging
import os
import sys

from daphne.cli import CommandLineInterface
from daphne.server import Server

from chatproject.logs import JsonFormatter, PlainFormatter, redact_uri

access_logger = logging.getLogger("daphne.access")

_WEBSOCKET_ACTIONS = {
    "connecting": "WSCONNECTING",
    "connected": "WSCONNECT",
    "rejected": "WSREJECT",
    "disconnected": "WSDISCONNECT",
}


def log_access(protocol: str, action: str, details: dict) -> None:
    """daphne's action logger: one record per answered HTTP request and per WebSocket handshake step."""
    path = redact_uri(str(details.get("path", "")))
    fields = {"client": details.get("client"), "path": path}
    if protocol == "http" and action == "complete":
        fields.update(
            method=details.get("method"),
            status=details.get("status"),
            size=details.get("size"),
            duration_ms=round((details.get("time_taken") or 0) * 1000, 1),
        )
        access_logger.info("%s %s %s", fields["method"], path, fields["status"], extra=fields)
    elif protocol == "websocket" and action in _WEBSOCKET_ACTIONS:
        access_logger.info("%s %s", _WEBSOCKET_ACTIONS[action], path, extra=fields)


class AccessLoggingServer(Server):
    def __init__(self, *args, action_logger=None, **kwargs):
        # daphne built a stream-writing AccessLogGenerator when it wants an access log: log instead.
        super().__init__(*args, action_logger=log_access if action_logger else None, **kwargs)


class ChatServerCommand(CommandLineInterface):
    server_class = AccessLoggingServer


def _log_until_django_configures_logging() -> None:
    """Format the lines before settings are loaded (and a failure to load them) like the rest."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        PlainFormatter() if os.environ.get("LOG_FORMAT", "").strip().lower() == "plain" else JsonFormatter()
    )
    # With a handler on the root logger, daphne's own logging.basicConfig() leaves it alone.
    logging.basicConfig(handlers=[handler], level=logging.INFO)


def main() -> None:
    _log_until_django_configures_logging()
    try:
        ChatServerCommand.entrypoint()
    except Exception as exc:
        logging.getLogger("daphne.cli").critical("server failed to start: %r", exc, exc_info=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
