"""Drives the operator console in headless Chromium (Debian's chromium and chromium-driver, selenium from PyPI).

    python3 console_browser.py SCENARIO CONTEXT.json

The Swift test (ConsoleBrowserTests) starts the real `lightning` and `runtime-worker`, prepares the data and
writes CONTEXT.json: {"base", "admin", "viewer", "dir", "screenshots", ...scenario fields}. Exit status 0 when
every check passed; otherwise the first failed check is printed. Every wait is on a condition (generous
timeouts for a loaded machine), never a fixed sleep.
"""
import json
import os
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.common.exceptions import JavascriptException, StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import Select, WebDriverWait

WAIT = 60  # seconds: a condition, not a deadline the machine must meet


class CheckFailed(Exception):
    pass


def check(condition, message):
    if not condition:
        raise CheckFailed(message)


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = next(p for p in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.path.exists(p))
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1400,1000",
              "--disable-extensions", "--no-first-run", "--disable-background-networking"):
        options.add_argument(a)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    return driver


def wait(driver, what, condition, timeout=WAIT):
    def probe(d):
        try:
            return condition(d)
        except (StaleElementReferenceException, JavascriptException):
            return False
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(probe)
    except TimeoutException:
        raise CheckFailed("timed out waiting for " + what + "\n" + page_state(driver))


def page_state(driver):
    try:
        body = driver.find_element(By.TAG_NAME, "body").text[:3000]
    except Exception as e:  # noqa: BLE001 - a diagnostic only
        body = "(no body: %s)" % e
    logs = ""
    try:
        logs = "\n".join(str(entry) for entry in driver.get_log("browser")[-20:])
    except Exception:  # noqa: BLE001
        pass
    return "url: %s\npage text:\n%s\nconsole:\n%s" % (driver.current_url, body, logs)


def shot(driver, ctx, name):
    os.makedirs(ctx["screenshots"], exist_ok=True)
    driver.save_screenshot(os.path.join(ctx["screenshots"], name + ".png"))


def page(driver, name):
    wait(driver, "the %s page" % name, lambda d: d.execute_script("return document.body.dataset.page") == name)


def sign_in(driver, ctx, token, then="/attempts"):
    driver.get(ctx["base"] + then)
    page(driver, "login")
    box = driver.find_element(By.ID, "login-token")
    box.clear()
    box.send_keys(token)
    driver.find_element(By.ID, "login-submit").click()


def api(ctx, method, path, body=None, token=None):
    request = urllib.request.Request(ctx["base"] + path, method=method,
                                     data=None if body is None else json.dumps(body).encode())
    request.add_header("Authorization", "Bearer " + (token or ctx["admin"]))
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=WAIT) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def clear(driver, element_id):
    """Empties a text field the way a user does (select all, delete), so the page sees the input events."""
    box = driver.find_element(By.ID, element_id)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)


def log_state(driver):
    return driver.execute_script("""
        const l = window.consoleLog;
        if (!l) return null;
        return {count: l.count(), last: l.lastSeq(), visible: l.visibleCount(), filtered: l.filteredCount()};
    """)


def seqs(driver):
    return driver.execute_script("return window.consoleLog.seqs()")


def wait_final(ctx, attempt_id):
    deadline = time.monotonic() + WAIT * 2
    while time.monotonic() < deadline:
        _, a = api(ctx, "GET", "/api/attempts/" + attempt_id)
        if a and a.get("final"):
            return a
        time.sleep(0.2)
    raise CheckFailed("attempt %s did not finish" % attempt_id)


# Scenarios ---------------------------------------------------------------------------------------------------

def scenario_signin(driver, ctx):
    driver.get(ctx["base"] + "/attempts")
    page(driver, "login")
    check("next=" in driver.current_url, "the login page keeps where to go back to: " + driver.current_url)
    driver.find_element(By.ID, "login-token").send_keys("lro_" + "A" * 43)
    driver.find_element(By.ID, "login-submit").click()
    wait(driver, "the refusal", lambda d: d.find_element(By.ID, "login-error").text.strip() != "")
    check("invalid" in driver.find_element(By.ID, "login-error").text, "the refusal says why")
    shot(driver, ctx, "login-refused")
    box = driver.find_element(By.ID, "login-token")
    box.clear()
    box.send_keys(ctx["admin"])
    driver.find_element(By.ID, "login-submit").click()
    page(driver, "attempts")
    wait(driver, "the user in the header", lambda d: "admin" in d.find_element(By.ID, "nav-user").text)
    # The cookie is HttpOnly: the page's script cannot read it, and no token is in any URL.
    check("lightning_session" not in driver.execute_script("return document.cookie"), "the session cookie is HttpOnly")
    check(ctx["admin"] not in driver.current_url, "no token in the URL")
    cookie = driver.get_cookie("lightning_session")
    check(cookie and cookie.get("httpOnly") and cookie.get("sameSite") == "Strict", "cookie attributes: %s" % cookie)
    shot(driver, ctx, "attempts-signed-in")
    driver.find_element(By.ID, "sign-out").click()
    page(driver, "login")
    driver.get(ctx["base"] + "/workers")
    page(driver, "login")


def scenario_live_log(driver, ctx):
    sign_in(driver, ctx, ctx["viewer"], then="/attempts/" + ctx["attempt"])
    page(driver, "attempt")
    wait(driver, "the log's first lines", lambda d: (log_state(d) or {}).get("count", 0) > 0)
    final = wait_final(ctx, ctx["attempt"])
    wait(driver, "the whole log (%d lines)" % final["last_seq"],
         lambda d: (log_state(d) or {}).get("count") == final["last_seq"])
    wait(driver, "the final state", lambda d: d.find_element(By.ID, "attempt-state").text.strip() == "success")
    got = seqs(driver)
    check(got == list(range(1, final["last_seq"] + 1)), "every line once, in order: %s..." % got[:20])
    # The top of the log shows the job's first lines (only lines in view are in the page).
    driver.execute_script("document.getElementById('log').scrollTop = 0")
    wait(driver, "the first lines in view", lambda d: d.execute_script(
        "const e = document.querySelector('#log .line[data-seq=\"1\"] .msg'); return e && e.textContent.trim() === 'line 1'"))
    # Search narrows the lines and highlights the matches.
    search = driver.find_element(By.ID, "log-search")
    search.send_keys("line 17")
    wait(driver, "the search to apply", lambda d: (log_state(d) or {}).get("filtered") == ctx["matches"])
    marks = driver.execute_script("return document.querySelectorAll('#log mark').length")
    check(marks >= 1, "matches are highlighted")
    shot(driver, ctx, "attempt-log-search")
    clear(driver, "log-search")
    wait(driver, "the search cleared", lambda d: (log_state(d) or {}).get("filtered") == final["last_seq"])
    # Level filter: only error lines (the job wrote one line to stderr).
    Select(driver.find_element(By.ID, "log-level")).select_by_value("error")
    wait(driver, "the level filter", lambda d: (log_state(d) or {}).get("filtered") == ctx["errors"])
    Select(driver.find_element(By.ID, "log-level")).select_by_value("debug")
    wait(driver, "the level filter cleared", lambda d: (log_state(d) or {}).get("filtered") == final["last_seq"])
    # A line link: #L5 on load scrolls to and marks line 5.
    driver.get(ctx["base"] + "/attempts/" + ctx["attempt"] + "#L5")
    page(driver, "attempt")
    wait(driver, "line 5 marked", lambda d: d.execute_script(
        "const e = document.querySelector('#log .line.target'); return e && e.dataset.seq === '5'"))
    # The steps timeline shows the step and its output.
    steps = driver.find_elements(By.CSS_SELECTOR, "#steps li[data-step-id]")
    check(len(steps) == 1 and steps[0].get_attribute("data-state") == "success", "one successful step")
    shot(driver, ctx, "attempt-live-log")


def scenario_restart(driver, ctx):
    sign_in(driver, ctx, ctx["viewer"], then="/attempts/" + ctx["attempt"])
    page(driver, "attempt")
    wait(driver, "some lines before the restart", lambda d: (log_state(d) or {}).get("count", 0) >= 5)
    before = log_state(driver)["count"]
    open(os.path.join(ctx["dir"], "restart-now"), "w").close()
    # The page sees the socket go, and comes back by itself.
    wait(driver, "the page to notice the restart",
         lambda d: os.path.exists(os.path.join(ctx["dir"], "restarted"))
         and d.find_element(By.ID, "conn-status").text.strip() != "")
    final = wait_final(ctx, ctx["attempt"])
    wait(driver, "the whole log after the restart (%d lines)" % final["last_seq"],
         lambda d: (log_state(d) or {}).get("count") == final["last_seq"], timeout=WAIT * 2)
    got = seqs(driver)
    check(got == list(range(1, final["last_seq"] + 1)), "no gap and no duplicate across the restart: %s" % got)
    check(final["last_seq"] > before, "lines arrived after the restart")
    wait(driver, "live again", lambda d: d.find_element(By.ID, "conn-status").text.strip() == "live")
    wait(driver, "the final state", lambda d: d.find_element(By.ID, "attempt-state").text.strip() == "success")
    shot(driver, ctx, "attempt-after-restart")


def rows(driver):
    return driver.execute_script("""
        return Array.from(document.querySelectorAll('#attempts tr[data-attempt-id]'))
            .map(r => [r.dataset.attemptId, r.dataset.state]);
    """)


def scenario_filters(driver, ctx):
    sign_in(driver, ctx, ctx["viewer"])
    page(driver, "attempts")
    wait(driver, "every attempt listed", lambda d: len(rows(d)) == len(ctx["all"]))
    check([r[0] for r in rows(driver)] == list(reversed(ctx["all"])), "newest first")
    Select(driver.find_element(By.ID, "filter-state")).select_by_value("failed")
    driver.find_element(By.ID, "filter-apply").click()
    wait(driver, "only failed", lambda d: sorted(r[0] for r in rows(d)) == sorted(ctx["failed"]))
    check("state=failed" in driver.current_url, "filters live in the URL")
    shot(driver, ctx, "attempts-failed")
    driver.refresh()
    page(driver, "attempts")
    wait(driver, "the filter survives a reload", lambda d: sorted(r[0] for r in rows(d)) == sorted(ctx["failed"]))
    Select(driver.find_element(By.ID, "filter-state")).select_by_value("")
    Select(driver.find_element(By.ID, "filter-workflow")).select_by_value("other")
    driver.find_element(By.ID, "filter-apply").click()
    wait(driver, "only the other workflow", lambda d: sorted(r[0] for r in rows(d)) == sorted(ctx["other"]))
    Select(driver.find_element(By.ID, "filter-workflow")).select_by_value("")
    q = driver.find_element(By.ID, "filter-q")
    q.send_keys(ctx["needle"])
    q.send_keys(Keys.ENTER)
    wait(driver, "the log text filter", lambda d: [r[0] for r in rows(d)] == [ctx["needle_attempt"]])
    clear(driver, "filter-q")
    driver.find_element(By.ID, "filter-q").send_keys(Keys.ENTER)
    wait(driver, "all again", lambda d: len(rows(d)) == len(ctx["all"]))
    # A new attempt appears at the top without a reload, and its state changes arrive live.
    status, created = api(ctx, "POST", "/api/attempts", {"workflow": "free", "input": {}})
    check(status == 201, "start an attempt: %s %s" % (status, created))
    new_id = created["attempt_id"]
    wait(driver, "the new attempt at the top", lambda d: rows(d) and rows(d)[0][0] == new_id)
    wait(driver, "its state to reach success live", lambda d: rows(d)[0] == [new_id, "success"])
    shot(driver, ctx, "attempts-live")


def scenario_cancel_roles(driver, ctx):
    sign_in(driver, ctx, ctx["viewer"], then="/attempts/" + ctx["attempt"])
    page(driver, "attempt")
    wait(driver, "the attempt running", lambda d: d.find_element(By.ID, "attempt-state").text.strip() == "started")
    check(not driver.find_elements(By.ID, "cancel"), "a viewer sees no cancel button")
    check(not driver.find_elements(By.ID, "rerun"), "a viewer sees no rerun button")
    # The server refuses it too, whatever the page shows.
    status = driver.execute_async_script("""
        const done = arguments[arguments.length - 1];
        fetch('/api/attempts/' + arguments[0] + '/cancel', {method: 'POST', headers: {'Content-Type': 'application/json'}, body: '{}'})
            .then(r => done(r.status), e => done(String(e)));
    """, ctx["attempt"])
    check(status == 403, "a viewer's cancel is refused with 403, got %s" % status)
    shot(driver, ctx, "attempt-viewer")
    driver.find_element(By.ID, "sign-out").click()
    page(driver, "login")
    sign_in(driver, ctx, ctx["admin"], then="/attempts/" + ctx["attempt"])
    page(driver, "attempt")
    wait(driver, "the cancel button", lambda d: d.find_elements(By.ID, "cancel"))
    driver.find_element(By.ID, "cancel").click()
    wait(driver, "cancelled", lambda d: d.find_element(By.ID, "attempt-state").text.strip() in ("cancelled", "killed"))
    check(not driver.find_elements(By.ID, "cancel") or not driver.find_element(By.ID, "cancel").is_displayed(),
          "no cancel button once final")
    shot(driver, ctx, "attempt-cancelled")


def scenario_xss(driver, ctx):
    sign_in(driver, ctx, ctx["admin"], then="/attempts/" + ctx["attempt"])
    page(driver, "attempt")
    final = wait_final(ctx, ctx["attempt"])
    wait(driver, "the whole log", lambda d: (log_state(d) or {}).get("count") == final["last_seq"])
    text = driver.find_element(By.ID, "log").text
    check("<script>" in text and "onerror" in text, "the markup shows as text: %r" % text[:400])
    # ANSI colours are drawn, not shown as codes.
    red = driver.execute_script("""
        return Array.from(document.querySelectorAll('#log .msg span')).filter(e => e.textContent === 'red')
            .map(e => e.className).join(' ');""")
    check("fg-1" in red and "[31m" not in text, "the red text is coloured: %r, %r" % (red, text[:400]))
    # Open every step's input and output.
    for button in driver.find_elements(By.CSS_SELECTOR, "#steps button"):
        button.click()
    wait(driver, "the dataclips", lambda d: any("<img" in p.text for p in d.find_elements(By.CSS_SELECTOR, "pre.dataclip")))
    injected = driver.execute_script("""
        return {xss: window.__xss === undefined ? null : window.__xss,
                imgs: document.querySelectorAll('#log img, pre.dataclip img, #steps img').length,
                scripts: Array.from(document.scripts).filter(s => !s.src).length};
    """)
    check(injected == {"xss": None, "imgs": 0, "scripts": 0}, "nothing ran or was parsed as markup: %s" % injected)
    # The workflow page draws the same names as text too.
    driver.get(ctx["base"] + "/workflows/" + ctx["workflow"])
    page(driver, "workflow")
    wait(driver, "the graph", lambda d: d.find_elements(By.CSS_SELECTOR, "#workflow-graph [data-node-id]"))
    check(driver.execute_script("return window.__xss === undefined"), "nothing ran on the workflow page")
    shot(driver, ctx, "attempt-inert-markup")


def scenario_big_log(driver, ctx):
    sign_in(driver, ctx, ctx["viewer"], then="/attempts/" + ctx["attempt"])
    page(driver, "attempt")
    final = wait_final(ctx, ctx["attempt"])
    wait(driver, "all %d lines" % final["last_seq"], lambda d: (log_state(d) or {}).get("count") == final["last_seq"],
         timeout=WAIT * 3)
    state = log_state(driver)
    check(state["visible"] < 1000, "only the visible lines are in the DOM: %s" % state)
    got = seqs(driver)
    check(got == list(range(1, final["last_seq"] + 1)), "every line once, in order")
    # Scroll through it: each position shows the lines that belong there.
    for fraction in (0.5, 0.9, 0.1, 1.0):
        driver.execute_script("const l = document.getElementById('log'); l.scrollTop = (l.scrollHeight - l.clientHeight) * arguments[0];",
                              fraction)
        expected = int(final["last_seq"] * fraction)
        wait(driver, "lines near %d rendered" % expected, lambda d: d.execute_script("""
            const shown = Array.from(document.querySelectorAll('#log .line')).map(e => Number(e.dataset.seq));
            return shown.length > 0 && Math.min(...shown) <= arguments[0] + 200 && Math.max(...shown) >= arguments[0] - 200;
        """, expected))
        check(log_state(driver)["visible"] < 1000, "still virtual after scrolling")
    shot(driver, ctx, "attempt-100k-lines")


def scenario_rerun(driver, ctx):
    sign_in(driver, ctx, ctx["admin"], then="/attempts/" + ctx["attempt"])
    page(driver, "attempt")
    wait(driver, "the failed attempt", lambda d: d.find_element(By.ID, "attempt-state").text.strip() == "failed")
    wait(driver, "the rerun control with the steps", lambda d: d.find_elements(
        By.CSS_SELECTOR, "#rerun-from option[value='%s']" % ctx["step"]))
    Select(driver.find_element(By.ID, "rerun-from")).select_by_value(ctx["step"])
    driver.find_element(By.ID, "rerun").click()
    wait(driver, "the new attempt's page", lambda d: ctx["attempt"] not in d.current_url and "/attempts/" in d.current_url)
    new_id = driver.current_url.split("/attempts/")[1].split("#")[0].split("?")[0]
    final = wait_final(ctx, new_id)
    check(final["state"] == "failed" and final["starting_job_name"] == "second", "the rerun started at the second job: %s" % final)
    steps = final["steps"]
    check(len(steps) == 1 and steps[0]["job_name"] == "second", "only the second step ran: %s" % steps)
    check(steps[0]["input_dataclip_id"] == ctx["input"], "with the recorded input")
    wait(driver, "the page shows it", lambda d: d.find_element(By.ID, "attempt-state").text.strip() == "failed")
    # Said in the header at the moment the end is shown (the attempt:complete event carries the name too).
    said = driver.find_elements(By.ID, "attempt-rerun-from")
    check(said and said[0].text.strip() == "rerun from second", "rerun from second is said in the header")
    shot(driver, ctx, "attempt-rerun")


def scenario_workflows(driver, ctx):
    sign_in(driver, ctx, ctx["viewer"], then="/workflows")
    page(driver, "workflows")
    wait(driver, "the workflow listed", lambda d: ctx["workflow"] in d.find_element(By.ID, "workflows").text)
    driver.find_element(By.LINK_TEXT, ctx["workflow"]).click()
    page(driver, "workflow")
    nodes = wait(driver, "the graph's nodes", lambda d: d.find_elements(By.CSS_SELECTOR, "#workflow-graph [data-node-id]"))
    edges = driver.find_elements(By.CSS_SELECTOR, "#workflow-graph [data-edge-id]")
    check(len(nodes) == ctx["nodes"] and len(edges) == ctx["edges"], "%d nodes, %d edges" % (len(nodes), len(edges)))
    body = driver.find_element(By.TAG_NAME, "body").text
    url = ctx["base"] + "/i/" + ctx["webhook"]
    check(driver.find_element(By.ID, "workflow-webhooks").text.strip() == url, "the webhook URL is shown")
    check(url in driver.find_element(By.ID, "workflow-triggers").text, "the trigger's URL is shown: %s"
          % driver.find_element(By.ID, "workflow-triggers").text)
    conditions = sorted(e.get_attribute("data-condition") for e in edges)
    check(conditions == ["always", "on_job_failure", "on_job_success"], "the edges' conditions: %s" % conditions)
    labels = driver.find_element(By.ID, "workflow-graph").text
    check("on failure" in labels and "on success" in labels, "edge conditions are labelled: %r" % labels)
    shot(driver, ctx, "workflow-graph")
    driver.get(ctx["base"] + "/workers")
    page(driver, "workers")
    wait(driver, "the worker listed", lambda d: ctx["worker"] in d.find_element(By.ID, "workers").text)
    row = lambda d: d.find_element(By.CSS_SELECTOR, "#workers tr[data-worker-name='%s']" % ctx["worker"])
    wait(driver, "connected", lambda d: row(d).get_attribute("data-connected") == "true")
    check(row(driver).get_attribute("data-status") in ("idle", "busy"), "the worker's status: %s" % row(driver).get_attribute("data-status"))
    check("shared secret" in row(driver).text, "how it authenticates: %r" % row(driver).text)
    shot(driver, ctx, "workers")


SCENARIOS = {name[len("scenario_"):].replace("_", "-"): f for name, f in globals().items() if name.startswith("scenario_")}


def main():
    name, context_file = sys.argv[1], sys.argv[2]
    ctx = json.load(open(context_file))
    driver = browser()
    try:
        SCENARIOS[name](driver, ctx)
        # No page error on the way (a CSP refusal or an exception shows up here).
        expected = ["favicon", " 401 ", " 403 ", "status of 401", "status of 403"]
        if name == "restart":
            # While Lightning is down, by design: the socket's reconnects and the page's session checks fail, and a
            # request on a connection that was open when Lightning was killed (kill -9) is reset (Chromium says
            # ERR_SOCKET_NOT_CONNECTED when it took a kept-alive connection whose server had gone).
            expected += ["WebSocket connection to", "ERR_CONNECTION_REFUSED", "ERR_CONNECTION_RESET", "ERR_SOCKET_NOT_CONNECTED"]
        errors = [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"
                  and not any(x in e.get("message", "") for x in expected)]
        check(not errors, "the browser console reported errors: %s" % errors)
    except Exception as e:  # noqa: BLE001 - every failure is reported the same way, with the page's state
        try:
            shot(driver, ctx, name + "-FAILED")
        except Exception:  # noqa: BLE001
            pass
        detail = "" if isinstance(e, CheckFailed) else "%s: %s\n%s" % (type(e).__name__, str(e).split("Stacktrace")[0], page_state(driver))
        print("FAILED: %s" % (e if isinstance(e, CheckFailed) else detail))
        sys.exit(1)
    finally:
        driver.quit()
    print("ok: " + name)


if __name__ == "__main__":
    main()
