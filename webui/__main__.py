"""`python -m webui [--host H] [--port P] [--dev]`: Flask's server; its debugger only with --dev, on loopback only."""

from __future__ import annotations

import argparse
import os
import sys

from worker.settings import is_loopback


def main(argv: list[str] | None = None) -> None:
    """Serve the UI with Flask's server; development mode (debugger, random keys) only when asked for on loopback."""
    from worker.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m webui", description=__doc__)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.webui_port)
    parser.add_argument(
        "--dev",
        action="store_true",
        help="development mode: Flask's debugger, a random SECRET_KEY and admin password (loopback only)",
    )
    args = parser.parse_args(argv)
    dev = args.dev or os.environ.get("DATASLAYER_DEV") == "1"
    if dev and not is_loopback(args.host):
        # The debugger runs any Python a visitor types: never on an address others can reach.
        sys.exit(f"error: development mode (the debugger) serves loopback only, not {args.host}; drop --dev")
    if dev:
        os.environ["DATASLAYER_DEV"] = "1"
    from webui import create_app

    create_app().run(host=args.host, port=args.port, debug=dev, use_reloader=False)


if __name__ == "__main__":
    main()
