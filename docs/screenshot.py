"""Refresh the README's pictures of the client managers' pages: docs/clients-page.png,
docs/client-page.png, docs/model-health.png (desktop, 1366 pixels wide) and
docs/phone-page.png (a phone, 390 pixels wide).

On the shipped sample data in a temporary copy: fullprocess.py on practicedata, then
on sourcedata (the model finds drift and retrains), the app on a loopback port, the
page in the system's Chromium. Usage: .venv/bin/python docs/screenshot.py
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(PROJECT), str(PROJECT / "bench")]

import browser  # noqa: E402
import fullprocess  # noqa: E402
from drs.cli import configure_logging  # noqa: E402
from drs.config import load_config  # noqa: E402
from drs.web import factory  # noqa: E402

DOCS = PROJECT / "docs"
SAMPLE = ("practicedata", "sourcedata", "testdata")
PICTURES = ("clients-page.png", "client-page.png", "model-health.png", "phone-page.png")


def main() -> int:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="screenshot-") as tmp:
        root = Path(tmp)
        for folder in SAMPLE:
            shutil.copytree(PROJECT / folder, root / folder)
        config_path = root / "config.json"
        raw = json.loads((PROJECT / "config.json").read_text())
        config_path.write_text(json.dumps({**raw, "api_url": "http://127.0.0.1:9"}))
        configure_logging()
        fullprocess.run(load_config(config_path))
        raw.update(input_folder_path="sourcedata", output_model_path="models")
        config_path.write_text(json.dumps({**raw, "api_url": "http://127.0.0.1:9"}))
        config = load_config(config_path)
        fullprocess.run(config)
        with (
            factory.serve_on_loopback(factory.create_app(config)) as url,
            sync_playwright() as driver,
        ):
            chromium = browser.launch(driver)
            desktop = chromium.new_page(viewport={"width": 1366, "height": 768})
            desktop.goto(url)
            desktop.screenshot(path=DOCS / "clients-page.png", full_page=True)
            desktop.click("#risers li:first-child a")  # a client with a risk that moved
            desktop.screenshot(path=DOCS / "client-page.png", full_page=True)
            desktop.goto(f"{url}/model-health")
            desktop.screenshot(path=DOCS / "model-health.png", full_page=True)
            phone = chromium.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            phone.goto(url)
            phone.screenshot(path=DOCS / "phone-page.png", full_page=False)
            chromium.close()
    for name in PICTURES:
        print(DOCS / name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
