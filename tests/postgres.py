"""PostgreSQL fixtures: a real server for the warehouse tests (pytest plugin, ``-p tests.postgres``).

``postgres_url`` is the server for the whole test session: ``SESSIONREC_TEST_POSTGRES_URL`` when set (CI
with a service container), otherwise a throwaway server started here with the local ``initdb`` and
``pg_ctl`` on a free port of 127.0.0.1 and a socket folder in /tmp. PostgreSQL refuses to run as root,
so as root the data folder belongs to the ``postgres`` user and the binaries run through ``runuser``.
``postgres_schema_url`` gives each test a fresh schema (via ``search_path``) so tests never see each
other's tables.
"""

from __future__ import annotations

import glob
import os
import shlex
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from tests.net import free_port

URL_ENV = "SESSIONREC_TEST_POSTGRES_URL"
SERVER_USER = "postgres"
DATABASE = "sessionrec_test"
INSTALL_HINT = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under /usr/lib/postgresql/*/bin; "
    f"install them with `apt-get install -y postgresql`, or set {URL_ENV} to a server's URL"
)


def find_server_binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: PATH first, then the newest Debian install."""
    initdb = shutil.which("initdb")
    if initdb and shutil.which("pg_ctl"):
        return Path(initdb).resolve().parent
    for bindir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name),
                         reverse=True):
        if (Path(bindir) / "initdb").exists() and (Path(bindir) / "pg_ctl").exists():
            return Path(bindir)
    return None


def _as_server_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run the command as the ``postgres`` user."""
    if os.geteuid() != 0:
        return command
    if shutil.which("runuser"):
        return ["runuser", "-u", SERVER_USER, "--", *command]
    return ["su", SERVER_USER, "-s", "/bin/sh", "-c", shlex.join(command)]


def _run(command: list[str]) -> None:
    result = subprocess.run(_as_server_user(command), capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}{result.stderr}")


def _create_database(server_url: str) -> None:
    import psycopg

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {DATABASE}")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a PostgreSQL database that lives for the whole test session."""
    external = os.environ.get(URL_ENV)
    if external:
        yield external
        return
    bindir = find_server_binaries()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    # Outside pytest's tmp folders: those sit under a root-only (0700) parent the server user cannot enter.
    root = Path(tempfile.mkdtemp(prefix="sessionrec-pg-"))
    data, sockets = root / "data", root / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, SERVER_USER)
        shutil.chown(sockets, SERVER_USER)
    port = free_port()
    pg_ctl = str(bindir / "pg_ctl")
    try:
        _run([str(bindir / "initdb"), "-D", str(data), "-U", SERVER_USER, "-A", "trust", "-E", "UTF8",
              "--no-locale", "--no-sync"])
        _run([pg_ctl, "-D", str(data), "-l", str(root / "server.log"), "-w", "start", "-o",
              f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"])
    except RuntimeError:
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        _create_database(f"postgresql://{SERVER_USER}@127.0.0.1:{port}/postgres")
        yield f"postgresql://{SERVER_USER}@127.0.0.1:{port}/{DATABASE}"
    finally:
        _run([pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"])
        shutil.rmtree(root, ignore_errors=True)


def with_search_path(url: str, schema: str) -> str:
    """``url`` with the connection option that makes ``schema`` the session's default schema."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.fixture
def postgres_schema_url(postgres_url: str) -> Iterator[str]:
    """URL whose connections work in a fresh, empty schema (dropped after the test)."""
    import psycopg

    schema = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield with_search_path(postgres_url, schema)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
