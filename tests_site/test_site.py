"""The docs site (build/site, from `mkdocs build`) in headless Chromium, as a reader uses it.

A whole error message pasted into the search box finds its recipe's page; every recipe page
shows one column per pinned stack and its test links resolve; no page logs a console error.
Screenshots go to build/screenshots/ for a person to look at. Run by `tox -e browser`, which
builds the site first; Debian's chromium and chromium-driver must be installed (.ci/run
installs them). Nothing here is skipped: without Chromium the tests fail.
"""

import functools
import http.server
import os
import pathlib
import re
import shutil
import threading
import time
import urllib.parse
import urllib.request

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from tools.behavior_matrix import STACKS

ROOT = pathlib.Path(__file__).resolve().parents[1]
SITE = ROOT / "build" / "site"
SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# Characters a pasted message brings along that a search box could trip over.
PUNCTUATION = set("`'\":.()=[]{}/,<>")


def error_index_messages(text):
    """(message, recipes) per `### ` section of docs/errors.md: its first fenced block and
    the recipes its `recipes/<name>.md` links below name."""
    found = []
    for section in re.split(r"^### .*$", text, flags=re.M)[1:]:
        block = re.search(r"^```[^\n]*\n(.*?)\n```", section, flags=re.M | re.S)
        recipes = set(re.findall(r"\]\((?:\.\./)*recipes/(\w+)\.md", section))
        if block and recipes:
            found.append((block[1], recipes))
    return found


def pick_messages(messages, count=3):
    """(message, recipe) for `count` messages that each one recipe saw, of different recipes,
    each unlike the other recipes' messages (no more than half its words in one of them:
    either page would be a right answer), those with the most kinds of punctuation first."""

    def words(message):
        return set(re.findall(r"\w+", message.lower()))

    def distinct(message, recipe):
        own = words(message)
        return all(
            len(own & words(other)) <= len(own) / 2
            for other, recipes in messages
            if recipes != {recipe}
        )

    ranked = sorted(messages, key=lambda m: (-len(PUNCTUATION & set(m[0])), -len(m[0])))
    picked = {}
    for message, recipes in ranked:
        recipe = min(recipes)
        if len(recipes) == 1 and recipe not in picked and distinct(message, recipe):
            picked[recipe] = message
    return [(message, recipe) for recipe, message in picked.items()][:count]


@pytest.fixture(scope="module")
def site():
    """build/site served on a free port of 127.0.0.1; yields its base URL."""
    assert (SITE / "index.html").is_file(), f"no site at {SITE}: run `tox -e docs` first"

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(SITE))
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by Debian's chromedriver; both paths given, so Selenium
    Manager never looks for (or downloads) a browser."""
    for path, package in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")]:
        if not os.access(path, os.X_OK):
            pytest.fail(
                f"{path} is missing: install Debian's {package} "
                "(apt-get install -y chromium chromium-driver; .ci/run does)",
                pytrace=False,
            )
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in [
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1440,1000",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ]:
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    yield driver
    driver.quit()


def console_errors(driver):
    """What the browser console logged since the last call as errors (SEVERE), and the search
    worker's "Invalid query" warnings: lunr could not parse a query, and found nothing."""
    return [
        entry
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" or "Invalid query" in entry["message"]
    ]


def search(driver, base, query):
    """Pastes `query` into Material's search box; returns the result links once they settle."""
    driver.get(base)
    box = driver.find_element(By.CSS_SELECTOR, "input.md-search__input")
    if not box.is_displayed():  # a narrow window shows a search button instead
        driver.find_element(By.CSS_SELECTOR, "label.md-header__button[for=__search]").click()
        WebDriverWait(driver, 30).until(lambda d: box.is_displayed())
    box.click()
    # As a paste does: the whole text at once, on one line (a one-line input drops the line
    # breaks), then the key released (Material searches on keyup). Typing it key by key
    # would run a search per character, minutes for a long message on a busy machine.
    driver.execute_cdp_cmd("Input.insertText", {"text": " ".join(query.split())})
    box.send_keys(Keys.CONTROL)
    meta = driver.find_element(By.CSS_SELECTOR, ".md-search-result__meta")
    # "Initializing search", "Type to start searching", then "<n> matching documents".
    WebDriverWait(driver, 30).until(lambda d: "matching" in meta.text)
    links, previous, deadline = [], None, time.monotonic() + 30
    while time.monotonic() < deadline:  # until the query's results are drawn
        links = driver.find_elements(By.CSS_SELECTOR, "a.md-search-result__link")
        current = (meta.text, [link.get_attribute("href") for link in links[:3]])
        if current == previous:
            break
        previous = current
        time.sleep(0.5)
    return links


def test_a_pasted_error_message_finds_its_recipe_page(site, browser):
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    picked = pick_messages(error_index_messages(text))
    assert len(picked) == 3, f"docs/errors.md has messages of {len(picked)} recipes, want 3"
    for message, recipe in picked:
        links = search(browser, site, message)
        browser.save_screenshot(str(SCREENSHOTS / f"search-{recipe}.png"))
        assert console_errors(browser) == [], f"searching {message!r}"
        assert links, f"searching the whole message found nothing: {message!r}"
        first = links[0].get_attribute("href")
        assert f"/recipes/{recipe}/" in first, (
            f"first hit for the message {recipe} saw is {first}, not recipes/{recipe}/: {message!r}"
        )
        links[0].click()
        page = f"/recipes/{recipe}/"
        WebDriverWait(browser, 30).until(lambda d, page=page: page in d.current_url)
        assert urllib.parse.urlsplit(browser.current_url).path.endswith(page)
        browser.save_screenshot(str(SCREENSHOTS / f"search-{recipe}-opened.png"))
    assert console_errors(browser) == []


def recipe_page_problems(driver, page, lines_of):
    """What is wrong with a recipe page: its behaviour table's stack columns, its test links
    (each must be served, its `#L<n>` within the file). Screenshots the table."""
    driver.get(page)
    headings = driver.find_elements(By.ID, "what-the-tests-saw")
    if not headings:
        return [f"{page}: no 'What the tests saw' section"]
    driver.execute_script("arguments[0].scrollIntoView(); window.scrollBy(0, -80)", headings[0])
    problems = []
    # Each stack's header cell reads "tf216<br>TF 2.16.2<br>Keras 3.0.5": its first line.
    headers = driver.execute_script(
        "return [...arguments[0].querySelectorAll('th')]"
        ".map(th => th.innerText.split('\\n')[0].trim())",
        headings[0].find_element(By.XPATH, "following::table[1]"),
    )
    if [header for header in headers if header in STACKS] != STACKS:
        problems.append(f"{page}: behaviour table columns {headers}, want one per {STACKS}")
    links = driver.execute_script(
        "return [...document.querySelectorAll('article a[href]')].map(a => a.href)"
    )
    tests = sorted({link for link in links if re.search(r"/tests(_torch)?/.*\.py(#|$)", link)})
    if not tests:
        problems.append(f"{page}: links no test")
    for link in tests:
        url, _, anchor = link.partition("#")
        if url not in lines_of:
            with urllib.request.urlopen(url) as response:  # raises unless 2xx
                lines_of[url] = response.read().decode("utf-8").count("\n") + 1
        if anchor and not (re.fullmatch(r"L\d+", anchor) and int(anchor[1:]) <= lines_of[url]):
            problems.append(f"{link}: no such line, the file has {lines_of[url]} lines")
    name = urllib.parse.urlsplit(page).path.strip("/").replace("/", "-")
    driver.save_screenshot(str(SCREENSHOTS / f"{name}-table.png"))
    return problems


def test_every_recipe_page_shows_each_stack_and_its_test_links_resolve(site, browser):
    recipes = sorted(path.stem for path in (ROOT / "docs" / "recipes").glob("*.md"))
    assert recipes, "no docs/recipes/*.md"
    lines_of, problems = {}, []
    for recipe in recipes:
        problems += recipe_page_problems(browser, f"{site}recipes/{recipe}/", lines_of)
    assert problems == []
    assert console_errors(browser) == []


@pytest.mark.parametrize(
    "page", ["", "errors/", "versions/", "behavior-matrix/", "version-boundaries/"]
)
def test_a_page_loads_without_console_errors(site, browser, page):
    browser.get(site + page)
    assert browser.find_element(By.CSS_SELECTOR, "article h1").text
    name = page.strip("/") or "home"
    browser.save_screenshot(str(SCREENSHOTS / f"page-{name}.png"))
    assert console_errors(browser) == []
