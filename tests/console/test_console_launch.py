"""Local mode's launch of the console: the process `up` starts binds CONSOLE_URL on 127.0.0.1 and asks for
the login; `up` and `status` list it with the other services."""

from __future__ import annotations

import requests

from mlops.services import process, specs
from mlops.services.local import LocalBackend


def test_the_console_launch_serves_its_login_on_console_url(base_settings, free_port, tmp_path):
    settings = base_settings.replace(console_url=f"http://127.0.0.1:{free_port()}")
    launch = specs.console(settings)
    assert launch.host == "127.0.0.1" and launch.port == settings.port_of("console_url")
    proc = process.start(launch, tmp_path / "console.log", die_with_parent=True)
    try:
        process.wait_ready(launch, proc, tmp_path / "console.log")
        page = requests.get(settings.console_url + "/stream", timeout=10)
        assert page.url.startswith(settings.console_url + "/login?next=") and 'id="password"' in page.text
    finally:
        process.stop(proc.pid)


def test_local_mode_lists_the_console_and_prints_its_url(base_settings):
    backend = LocalBackend(base_settings)
    assert "console" in [launch.name for launch in backend._known_launches()]
    assert backend.urls()["Console"].startswith(base_settings.console_url)
    row = next(r for r in backend.rows() if r.name == "console")
    assert (row.state, row.url) == ("down", base_settings.console_url)
