"""Screenshots of the Airflow UI after ``make run``: the DAG list and the latest successful run of each DAG.

    python -m sessionrec.screenshots [--out var/screenshots] [--port PORT]

Needs headless Chromium (Debian: ``apt-get install chromium``). Starts a private ``airflow standalone``
on 127.0.0.1 (on a free port chosen at run time unless ``--port`` names one; its log servers on free
ports too) with the login switched off (``SIMPLE_AUTH_MANAGER_ALL_ADMINS``, for this instance only),
asks the REST API for the runs, captures each page with ``chromium --headless --screenshot`` and stops
Airflow again. Refuses to run while ``make ui`` uses the same Airflow home.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

from sessionrec import airflow_env
from sessionrec.config import Settings, load_settings
from sessionrec.ui import Services

log = logging.getLogger(__name__)

DAG_IDS = ("clickstream_sessionize", "gru4rec_train", "gru4rec_score")
WINDOW = "1600,1000"
# Milliseconds of page time Chromium lets the single-page UI load and render before the capture.
RENDER_BUDGET_MS = 15000


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    raise FileNotFoundError("headless Chromium not found: install it (Debian: apt-get install chromium)")


def capture(browser: str, url: str, path: Path) -> Path:
    """One page as a PNG, rendered by headless Chromium."""
    command = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--window-size={WINDOW}", f"--virtual-time-budget={RENDER_BUDGET_MS}",
               f"--screenshot={path}", url]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0 or not path.is_file():
        raise RuntimeError(f"chromium could not capture {url}: {result.stderr[-1000:]}")
    log.info("%s -> %s", url, path)
    return path


def latest_successful_run(base: str, dag_id: str) -> str | None:
    url = f"{base}/api/v2/dags/{dag_id}/dagRuns?state=success&order_by=-end_date&limit=1"
    with urllib.request.urlopen(url, timeout=30) as response:
        runs = json.loads(response.read())["dag_runs"]
    return runs[0]["dag_run_id"] if runs else None


def take_screenshots(settings: Settings, out: Path, port: int | None = None) -> list[Path]:
    if (pid := airflow_env.services_running(settings)) is not None:
        raise RuntimeError(f"`make ui` runs on this Airflow home (pid {pid}); stop it first")
    browser = chromium_binary()
    out.mkdir(parents=True, exist_ok=True)
    no_login = {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"}
    with Services(settings, airflow_port=port, mlflow=False, extra_env=no_login) as services:
        base = f"http://127.0.0.1:{services.airflow_port}"
        shots = [capture(browser, f"{base}/dags", out / "airflow-dags.png")]
        for dag_id in DAG_IDS:
            run_id = latest_successful_run(base, dag_id)
            if run_id is None:
                log.warning("%s has no successful run yet (run `make run` first)", dag_id)
                continue
            quoted = urllib.parse.quote(run_id, safe="")
            shots.append(capture(browser, f"{base}/dags/{dag_id}/runs/{quoted}", out / f"{dag_id}-run.png"))
    return shots


def main(argv: list[str] | None = None) -> int:
    settings = load_settings()
    parser = argparse.ArgumentParser(prog="sessionrec.screenshots", description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, default=settings.home / "screenshots")
    parser.add_argument("--port", type=int, default=None,
                        help="port of the private Airflow API server (default: a free port)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for path in take_screenshots(settings, args.out, args.port):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
