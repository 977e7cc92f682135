"""The Rate tab driven by a real browser (as ``test_browser.py``: Debian's chromium + chromedriver through
selenium, skipped where any is missing): a click on an answer is one record in the workspace's file."""

import os

from app.helpers import start_app
from app.test_browser import _wait, browser  # noqa: F401 -- browser is a fixture
from flowtts.app import engine
from flowtts.prefs.store import read_pairs

TEXT = "Glue the sheet to the dark blue background."


def test_a_click_on_b_is_better_stores_one_answer_and_a_second_click_is_refused(tmp_path, browser):  # noqa: F811
    from selenium.webdriver.common.by import By

    from flowtts.app.ui import shutdown

    app, url = start_app(tmp_path / "workspace")
    path = os.path.join(app.flowtts_workspace.root, engine.PREFERENCES_FOLDER, engine.PREFERENCES_FILE)
    try:
        browser.get(url)
        tab = _wait(lambda: browser.find_elements(By.XPATH, "//button[@role='tab'][contains(., 'Rate')]"), 60, "tabs")
        tab[0].click()
        box = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#rate-text textarea"), 30, "the Rate tab")[0]
        box.send_keys(TEXT)
        browser.find_element(By.ID, "rate-go").click()
        both = "#rate-audio-a audio, #rate-audio-b audio"
        _wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, both)) == 2, 180, "the two samples")
        assert not os.path.exists(path)  # generating stores nothing

        def status():
            return browser.find_element(By.CSS_SELECTOR, "#rate-status textarea").get_attribute("value")

        browser.find_element(By.ID, "rate-b").click()
        _wait(lambda: "1 answers stored" in status(), 60, "the answer's count")
        (answer,) = read_pairs(path)
        assert answer.choice == "b" and answer.text == TEXT and answer.human and answer.judge == "listener"
        assert answer.settings_b["seed"] == answer.settings_a["seed"] + 1

        browser.find_element(By.ID, "rate-a").click()  # the pair has its answer
        _wait(lambda: "generate two samples first" in browser.page_source, 60, "the refusal in the page")
        assert len(read_pairs(path)) == 1
    finally:
        shutdown(app)
