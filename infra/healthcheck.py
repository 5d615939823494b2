"""Container health check: exit 0 when URL answers HTTP 200 within TIMEOUT seconds (default 5).

Used by the compose health checks of the MLflow server, the web UI and Flower; the images carry
Python but no curl. Usage: python /opt/dataslayer/healthcheck.py URL [TIMEOUT]
"""

import sys
import urllib.request


def main(argv: list[str]) -> int:
    """Probe the URL; print why it is unhealthy."""
    if len(argv) not in (2, 3):
        print("usage: healthcheck.py URL [TIMEOUT]", file=sys.stderr)
        return 2
    timeout = float(argv[2]) if len(argv) == 3 else 5.0
    try:
        with urllib.request.urlopen(argv[1], timeout=timeout) as response:
            if response.status == 200:
                return 0
            print(f"{argv[1]} answered {response.status}", file=sys.stderr)
    except OSError as exc:  # URLError, HTTPError, timeouts, refused connections
        print(f"{argv[1]}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
