"""`python -m webui [--host H] [--port P]`: a development server (random SECRET_KEY when none is set)."""

from __future__ import annotations

import argparse
import os


def main() -> None:
    """Start Flask's development server in development mode."""
    parser = argparse.ArgumentParser(prog="python -m webui", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("DATASLAYER_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("DATASLAYER_WEBUI_PORT", 5000)))
    args = parser.parse_args()
    os.environ.setdefault("DATASLAYER_DEV", "1")
    from webui import create_app

    create_app().run(host=args.host, port=args.port, debug=True, use_reloader=False)


if __name__ == "__main__":
    main()
