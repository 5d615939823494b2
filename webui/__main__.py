"""`python -m webui [--host H] [--port P]`: a development server (random SECRET_KEY when none is set)."""

from __future__ import annotations

import argparse
import os


def main() -> None:
    """Start Flask's development server in development mode."""
    from worker.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m webui", description=__doc__)
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.webui_port)
    args = parser.parse_args()
    os.environ.setdefault("DATASLAYER_DEV", "1")
    from webui import create_app

    create_app().run(host=args.host, port=args.port, debug=True, use_reloader=False)


if __name__ == "__main__":
    main()
