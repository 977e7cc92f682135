"""Screenshots of every tab of ``flowtts app`` into ``docs/app_*.png`` (Debian's chromium through selenium).

Usage: python docs/app_screenshots.py

The Speak tab is shown after a synthesis with the built-in student, the Compare tab after a comparison.
"""

from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "app"))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))


def main() -> None:
    import tempfile

    from selenium.webdriver.common.by import By
    from test_browser import _browser, _wait

    from flowtts.app.ui import build_app, launch, shutdown

    app = build_app("builtin:student", workspace=tempfile.mkdtemp(prefix="flowtts-workspace-"))
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch(app, port=port, prevent_thread_lock=True, quiet=True)
    browser = _browser()
    try:
        browser.get(f"http://127.0.0.1:{port}/")
        text = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#speak-text textarea"), 60, "the page")[0]
        text.send_keys("My mother lost the black umbrella in the garden.")
        browser.find_element(By.ID, "speak-go").click()
        _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#speak-mel img"), 120, "the mel picture")
        time.sleep(2)
        browser.save_screenshot(os.path.join(HERE, "app_speak.png"))
        for tab in ("Multi-voice", "Edit", "Compare", "Train"):
            button = [b for b in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text == tab][0]
            button.click()
            time.sleep(1.5)
            if tab == "Compare":
                [b for b in browser.find_elements(By.TAG_NAME, "button") if b.text == "Compare"][-1].click()

                def compared():
                    boxes = browser.find_elements(
                        By.CSS_SELECTOR, "[id^=compare-info-] textarea, [id^=compare-info-] input"
                    )
                    return len(boxes) == 3 and all("network calls" in (b.get_attribute("value") or "") for b in boxes)

                _wait(compared, 600, "the comparison")
                time.sleep(2)
            browser.save_screenshot(os.path.join(HERE, f"app_{tab.lower().replace('-', '_')}.png"))
            print(f"docs/app_{tab.lower().replace('-', '_')}.png")
    finally:
        browser.quit()
        shutdown(app)


if __name__ == "__main__":
    main()
