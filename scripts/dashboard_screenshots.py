"""Serve the dashboard on an artifacts folder, open every page in headless Chromium, save screenshots.

Also times, in the real browser, how long each page takes from navigation until its main element
is drawn, and how long a layer change on the Attention page takes to redraw the heatmaps.

    .venv/bin/python scripts/dashboard_screenshots.py --artifacts artifacts --exp smollm2-135m/gptq3 \\
        --out docs/screenshots
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from dashboards.app import make_server

CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
                "--window-size=1400,1700")
# page → (query, CSS selector whose text must appear, text it must contain)
PAGES = {
    "overview": ("/", "#page h2", "Overview"),
    "layers": ("/layers", "#layers-divergence .gtitle", ""),
    "attention": ("/attention", "#attention-heatmaps .gtitle", "layer"),
    "probes": ("/probes", "#probes-lens .gtitle", "logit lens"),
    "verdict": ("/verdict", "#verdict-text", "Verdict"),
}


def wait_text(driver, selector: str, text: str, timeout: float = 60) -> None:
    def ready(_) -> bool:
        found = driver.find_elements(By.CSS_SELECTOR, selector)
        return bool(found) and text in found[0].text
    WebDriverWait(driver, timeout, poll_frequency=0.05).until(ready)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--artifacts", required=True)
    parser.add_argument("--exp", default="smollm2-135m/gptq3")
    parser.add_argument("--variant", default="idp")
    parser.add_argument("--probe", type=int, default=3, help="probe shown on the Attention page")
    parser.add_argument("--out", default="docs/screenshots")
    parser.add_argument("--port", type=int, default=8057)
    parser.add_argument("--layers", default="5,20", help="two layers: the Attention page's layer change is timed "
                                                          "from the first to the second")
    args = parser.parse_args()

    server = make_server(args.artifacts, port=args.port)  # waitress, as `probe dashboard` serves
    threading.Thread(target=server.run, daemon=True).start()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = f"http://127.0.0.1:{args.port}"
    query = f"?exp={args.exp}&variant={args.variant}&probe={args.probe}"
    times: dict[str, float] = {}
    try:
        for name, (path, selector, text) in PAGES.items():
            t0 = time.perf_counter()
            driver.get(f"{base}{path}{query}")
            wait_text(driver, selector, text)
            time.sleep(1.5)  # let plotly finish every figure on the page before the screenshot
            times[f"open {name}"] = round(time.perf_counter() - t0 - 1.5, 3)
            driver.save_screenshot(str(out / f"{name}.png"))
            print(f"{name:<10} drawn in {times[f'open {name}']:.2f} s -> {out / f'{name}.png'}")
        first, second = args.layers.split(",")
        driver.get(f"{base}/attention{query}&layer={first}")
        wait_text(driver, "#attention-heatmaps .gtitle", f"layer {first}")
        t0 = time.perf_counter()
        driver.get(f"{base}/attention{query}&layer={second}")
        wait_text(driver, "#attention-heatmaps .gtitle", f"layer {second}")
        times[f"attention: change layer (reload with layer={second})"] = round(time.perf_counter() - t0, 3)
        logs = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]
    finally:
        driver.quit()
        server.close()
    (out / "timings.json").write_text(json.dumps({"exp": args.exp, "seconds": times,
                                                  "severe_console_errors": logs}, indent=2))
    print(json.dumps(times, indent=2))
    if logs:
        raise SystemExit(f"browser console errors: {logs}")


if __name__ == "__main__":
    main()
