"""`python -m mlops.console`: serve the console (local mode's `up` starts it; Docker runs it in a container).

By default it listens where CONSOLE_URL says, on 127.0.0.1 (not the network: it holds the admin login).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from urllib.parse import urlparse

from mlops.settings import get_settings


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the console until stopped; the flags override where it binds and the UI links it shows."""
    import uvicorn

    from mlops.console.app import Links, create_app

    settings = get_settings()
    url = urlparse(settings.console_url)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=url.hostname or "127.0.0.1", help="address to bind (default: CONSOLE_URL's)")
    parser.add_argument("--port", type=int, default=url.port or 8501, help="port (default: CONSOLE_URL's)")
    parser.add_argument("--consumers-host", help="Docker: the consumers' service name (each address it resolves to)")
    parser.add_argument("--airflow-link", default=settings.airflow_url, help="the Airflow UI as the browser sees it")
    parser.add_argument("--mlflow-link", default=settings.mlflow_tracking_uri, help="the MLflow UI (browser view)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings, Links(args.airflow_link, args.mlflow_link), consumers_host=args.consumers_host)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", access_log=False)


if __name__ == "__main__":
    main()
