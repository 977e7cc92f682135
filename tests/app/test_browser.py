"""The app driven by a real browser: Debian's chromium + chromedriver through selenium (no download at run
time). Skipped, with the reason, where any of them is missing; a failing test leaves a screenshot in
``test-artifacts/``."""

import io
import os
import shutil
import time
import urllib.request

import pytest
import soundfile as sf

TEXT = "My mother lost the black umbrella in the garden."
ARTIFACTS = os.path.join(os.path.dirname(__file__), "..", "..", "test-artifacts")


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if not chromium or not driver_path:
        pytest.skip(
            "Debian's chromium and chromium-driver are not installed (apt-get install chromium chromium-driver)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2200"):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))


@pytest.fixture
def browser(request):
    driver = _browser()
    yield driver
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        os.makedirs(ARTIFACTS, exist_ok=True)
        driver.save_screenshot(os.path.join(ARTIFACTS, f"{request.node.name}.png"))
    driver.quit()


def _wait(condition, seconds: float, what: str):
    deadline = time.time() + seconds
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {seconds} s waiting for {what}")


def _expected_seconds(text: str) -> float:
    """What the model is asked for: F5-TTS's duration rule on the built-in reference clip at the model's speed."""
    import flowtts
    from flowtts.synthesis import load_reference, recommended_options

    model = flowtts.load("builtin:student")
    options = recommended_options(model)
    reference = load_reference(model, None, None, options)
    frames = reference.mel.shape[1] / len(reference.text.encode()) * len(text.encode()) / options.speed
    return int(frames) * model.mel_spec.hop_length / model.mel_spec.target_sample_rate


def test_speak_in_a_browser_serves_24khz_speech_of_the_asked_length_its_mel_and_error_messages(app_url, browser):
    from selenium.webdriver.common.by import By

    from flowtts.checkpoints.loader import builtin_reference

    browser.get(app_url)
    text_box = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#speak-text textarea"), 60, "the page")[0]
    uploads = browser.find_elements(By.CSS_SELECTOR, "input[type=file]")
    uploads[0].send_keys(builtin_reference()[0])  # the Speak tab's reference audio
    text_box.send_keys(TEXT)
    browser.find_element(By.ID, "speak-go").click()

    def audio_src():  # the player is filled: the wav it plays, as its download link serves it
        if not browser.find_elements(By.CSS_SELECTOR, "#speak-audio audio"):
            return None
        for link in browser.find_elements(By.CSS_SELECTOR, "#speak-audio a[download]"):
            href = link.get_attribute("href")
            if href and href.startswith("http") and href.endswith(".wav"):
                return href
        return None

    src = _wait(audio_src, 180, "the audio element")
    wave, rate = sf.read(io.BytesIO(urllib.request.urlopen(src, timeout=30).read()))
    assert rate == 24_000
    assert abs(len(wave) / rate - _expected_seconds(TEXT)) <= 0.1 * _expected_seconds(TEXT)

    def mel_shown():
        images = browser.find_elements(By.CSS_SELECTOR, "#speak-mel img")
        return any(browser.execute_script("return arguments[0].naturalWidth", img) > 0 for img in images)

    _wait(mel_shown, 30, "the mel picture")

    from selenium.webdriver.common.keys import Keys

    text_box.send_keys(Keys.CONTROL, "a")  # as a user clears it (clear() bypasses the page's input events)
    text_box.send_keys(Keys.BACKSPACE)
    browser.find_element(By.ID, "speak-go").click()
    _wait(lambda: "the text to say is empty" in browser.page_source, 60, "the error message in the page")


def test_a_folder_outside_the_workspace_is_refused_in_the_page_and_nothing_is_written(
    app_url, browser, tmp_path_factory
):
    from selenium.webdriver.common.by import By

    browser.get(app_url)
    tab = _wait(lambda: browser.find_elements(By.XPATH, "//button[@role='tab'][contains(., 'Train')]"), 60, "the tabs")
    tab[0].click()
    boxes = "#prepare-out textarea, #prepare-out input"
    out = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, boxes), 30, "the Train tab")
    out[0].send_keys("../victim")
    browser.find_element(By.CSS_SELECTOR, "#prepare-source textarea, #prepare-source input").send_keys("../..")
    browser.find_element(By.ID, "prepare-go").click()
    _wait(lambda: "is outside the workspace" in browser.page_source, 60, "the refusal in the page")
    assert not os.path.exists(os.path.join(tmp_path_factory.getbasetemp(), "victim"))


def test_opening_advanced_and_speaking_uses_the_models_own_settings(app_url, browser):
    """A shown number field sends 0 when empty (Gradio 6): opening Advanced (for the seed, say) and speaking
    must neither be refused for 0 steps nor turn guidance and sway to 0."""
    from selenium.webdriver.common.by import By

    browser.get(app_url)
    text_box = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#speak-text textarea"), 60, "the page")[0]
    text_box.send_keys("The red bird sang.")
    advanced = [b for b in browser.find_elements(By.CSS_SELECTOR, "button") if b.text.strip().startswith("Advanced")]
    advanced[0].click()
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#speak-cfg textarea, #speak-cfg input"), 30, "Advanced")
    browser.find_element(By.ID, "speak-go").click()

    def timing():
        return browser.find_element(By.CSS_SELECTOR, "#speak-info textarea").get_attribute("value")

    info = _wait(timing, 120, "the timing (or an error)")
    assert "4 network calls per chunk" in info, info  # the student's own 4 steps, no guidance: one call each
    assert "steps must be" not in browser.page_source
