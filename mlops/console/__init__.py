"""The platform console: one web page to see the whole platform, inspect Kafka and try a recommendation.

Built on FastAPI with pages rendered on the server by Jinja2, and charts drawn on the server as inline SVG
(`charts.py`). Why this and not Streamlit: FastAPI, uvicorn and Jinja2 are already installed (Airflow 3's
API server runs on them), so the console adds no dependency tree of its own; a page is plain HTML that
works without any JavaScript, CDN or npm build (the machine may be offline), that a browser test can read
element by element, and that any data source failing turns into a sentence on the page, not a crashed
script. Streamlit would bring a dependency tree of its own (tornado, altair, pydeck, ...), re-run a whole
script per click and serve its own JavaScript bundle.

Modules: `auth` (the admin login, a signed session cookie), `charts` (SVG), `samples` (the stream's
metrics over the last minutes), one data module per page (`overview`, `stream`, `topics`, `model`,
`tryit`), `app` (routes and templates), `__main__` (the entry point local mode's `up` starts).
"""
