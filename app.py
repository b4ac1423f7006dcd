"""The risk service for development: the JSON API and the client managers' page on one port.

Production serves the same app with gunicorn through wsgi.py (see README.md).
"""

from __future__ import annotations

import logging

from drs.cli import build_parser, configure_logging, run_cli
from drs.config import load_config
from drs.web import factory

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (8000)")
    args = parser.parse_args(argv)

    def action() -> None:
        app = factory.create_app(load_config(args.config))
        logger.info("development server on http://%s:%d (debug off)", args.host, args.port)
        app.run(host=args.host, port=args.port, debug=False, use_reloader=False)

    return run_cli(action)


if __name__ == "__main__":
    configure_logging()
    raise SystemExit(main())
