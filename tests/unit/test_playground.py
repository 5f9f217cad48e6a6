"""The playground page in a real headless browser (Debian's chromium + chromedriver, driven by
selenium): it types a question and finds the streamed, cited answer with its passage, source,
timings, cache result and generator backend; then adds a document and finds it answered."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import httpx
import pytest

from tests.live_app import live_fake_app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(not (CHROMIUM and DRIVER),
                                reason="needs chromium and chromedriver (scripts/bootstrap.sh)")

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,900"]


def browser(profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(DRIVER), options=options)


def ask(driver, question: str, wait) -> None:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "question")
    box.clear()
    box.send_keys(question)
    driver.find_element(By.ID, "ask").click()
    wait.until(lambda d: d.find_element(By.ID, "status").text.startswith("done"))


def test_playground_streams_a_cited_answer(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with live_fake_app() as (url, _), tempfile.TemporaryDirectory() as profile:
        page = httpx.get(f"{url}/playground")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        driver = browser(profile)
        try:
            wait = WebDriverWait(driver, 20)
            driver.get(f"{url}/playground")
            ask(driver, "How often does the espresso machine need descaling?", wait)
            assert driver.find_element(By.ID, "answer").text == "answer [1]"
            marks = driver.find_elements(By.CSS_SELECTOR, "#answer .mark")
            assert [m.text for m in marks] == ["[1]"]
            first = driver.find_element(By.ID, "citation-1")
            assert "cited" in first.get_attribute("class").split()
            assert "descaling" in first.find_element(By.CLASS_NAME, "passage").text
            assert first.find_element(By.CLASS_NAME, "source").text == "notes"
            assert "notes/coffee.txt" in first.text
            assert driver.find_element(By.ID, "backend").text == "fake-gen"
            assert driver.find_element(By.ID, "cache").text == "bypass"  # streams skip it
            timings = driver.find_element(By.ID, "timings").text
            assert "embed" in timings and "generate" in timings and "total" in timings
            if os.environ.get("RAGSERVE_SCREENSHOT"):
                driver.save_screenshot(os.environ["RAGSERVE_SCREENSHOT"])

            # Add a document from a file, then ask about it.
            doc = tmp_path / "tea.txt"
            doc.write_text("The green tea kettle is set to eighty degrees for sencha.")
            driver.find_element(By.ID, "doc_file").send_keys(str(doc))
            driver.find_element(By.ID, "add").click()
            wait.until(lambda d: "created" in d.find_element(By.ID, "add_status").text)
            ask(driver, "What temperature is the green tea kettle for sencha?", wait)
            assert "tea.txt" in driver.find_element(By.ID, "citation-1").text
        finally:
            driver.quit()


def test_playground_page_is_plain_static_html():
    page = Path(__file__).resolve().parents[2] / "ragserve/edge/playground/index.html"
    text = page.read_text()
    assert "<script src" not in text and "import " not in text  # no bundle, no build step
    assert "innerHTML" not in text  # passages are shown as text, never as markup
