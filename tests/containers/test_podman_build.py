"""The containers harness's own logic, no Podman needed: a build failure names its Dockerfile line."""

from __future__ import annotations

from pathlib import Path

from podman_build import debian_mirror, failing_line, instruction_lines

DOCKERFILE = """\
# comment
FROM python:3.11.13-slim-bookworm

ENV A=1
# a comment inside
RUN apt-get update \\
    && apt-get install -y libgomp1 \\
    && false
COPY x ./
"""

BUILDAH_LOG = """\
STEP 1/4: FROM python:3.11.13-slim-bookworm
STEP 2/4: ENV A=1
--> Using cache 1234
STEP 3/4: RUN apt-get update     && apt-get install -y libgomp1     && false
Reading package lists...
Error: building at STEP "RUN apt-get update ...": while running runtime: exit status 1
"""


def test_instructions_keep_their_first_line_and_join_continuations(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(DOCKERFILE)
    assert instruction_lines(path) == [
        (2, "FROM python:3.11.13-slim-bookworm"),
        (4, "ENV A=1"),
        (6, "RUN apt-get update && apt-get install -y libgomp1 && false"),
        (9, "COPY x ./"),
    ]


def test_the_failing_step_is_named_by_its_dockerfile_line(tmp_path: Path) -> None:
    path = tmp_path / "Dockerfile"
    path.write_text(DOCKERFILE)
    assert failing_line(path, BUILDAH_LOG) == (6, "RUN apt-get update && apt-get install -y libgomp1 && false")
    assert failing_line(path, "Error: no such image") is None


def test_debian_mirror_is_a_debian_archive_url() -> None:
    mirror = debian_mirror()
    assert mirror.startswith(("http://", "https://")) and mirror.endswith("/debian")
