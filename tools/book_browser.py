"""Open the built book in headless Chromium and check what a reader would see.

Every HTML page of the built book (``_build/html``) is served from a local HTTP server on the
loopback interface and opened in Debian's ``chromium``, driven over the Chrome DevTools
Protocol through a pipe (``--remote-debugging-pipe``: no debugging port, no extra package).
The browser resolves no host name (``--host-resolver-rules``), so a page that needs anything
from the network shows it, as it would to a reader offline. On each page the check reports:

* a figure (``img``) that fails to load or decode;
* an error or a traceback in a notebook output cell, or a docutils error left in the page;
* an internal link to a page or an anchor that does not exist;
* mathematics that MathJax did not render: MathJax missing or failing to load, a math element
  without MathJax output, a TeX error, or TeX delimiters left visible in the text;
* a request for a file of the book that fails, a request to the network, a JavaScript error.

It also saves a screenshot of each page's first screen (``_build/screenshots``) for a human to
look at. Used by ``tests/test_book_html.py`` (``make test-browser``) and by
``make screenshot``; also a command::

    python tools/book_browser.py check _build/html            # report, exit 1 on problems
    python tools/book_browser.py screenshot _build/html book/01_influence_from_scratch.html \\
        out.png --selector "#fig-ch1-if-vs-loo"
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import functools
import http.server
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

VIEWPORT = (1280, 800)


class BrowserError(RuntimeError):
    """Chromium could not be started or stopped answering."""


def find_chromium() -> str | None:
    """The Chromium executable: ``$CHROMIUM``, else the first of chromium, chromium-browser,
    google-chrome on ``PATH``."""
    env = os.environ.get("CHROMIUM")
    if env:
        return env if shutil.which(env) else None
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


# ---------------------------------------------------------------------------- the browser


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (fds 3 and 4).

    One tab, reused for every page. Use as a context manager.
    """

    def __init__(self, executable: str | None = None, viewport: tuple[int, int] = VIEWPORT,
                 timeout: float = 60.0):
        self.executable = executable or find_chromium()
        if not self.executable:
            raise BrowserError(
                "Chromium not found. Install Debian's package (`apt-get install chromium`) or set "
                "$CHROMIUM to a Chromium or Chrome executable."
            )
        self.viewport = viewport
        self.timeout = timeout
        self._next_id = 0
        self._responses: dict[int, dict] = {}
        self._events: queue.Queue = queue.Queue()
        self._cond = threading.Condition()
        self._closed = False
        self.session: str | None = None

    # -- process and pipe

    def __enter__(self) -> "Chromium":
        self._profile = tempfile.mkdtemp(prefix="book-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # The child's ends move to fds >= 10 first, so that placing them on 3 and 4 cannot
        # overwrite one with the other.
        child_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_browser_r)
        os.close(from_browser_w)
        args = [
            self.executable,
            "--headless=new",
            "--remote-debugging-pipe",
            f"--user-data-dir={self._profile}",
            f"--window-size={self.viewport[0]},{self.viewport[1]}",
            # No network: no host resolves, except the loopback address the book is served on.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            "--no-first-run", "--no-default-browser-check", "--disable-extensions",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-default-apps", "--disable-features=Translate,MediaRouter,OptimizationHints",
            "--disable-dev-shm-usage", "--disable-gpu", "--hide-scrollbars", "--mute-audio",
            "--force-color-profile=srgb", "--font-render-hinting=none",
            "about:blank",
        ]
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox

        def child_fds() -> None:  # runs in the child: the protocol's fds 3 (in) and 4 (out)
            os.dup2(child_r, 3)  # dup2 leaves 3 and 4 inheritable; everything else closes on exec
            os.dup2(child_w, 4)

        self._log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            preexec_fn=child_fds, close_fds=False,
        )
        os.close(child_r)
        os.close(child_w)
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()
        try:
            self.call("Browser.getVersion", timeout=30)
            target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            self.session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Network"):
                self.call(f"{domain}.enable", session=True)
            self.call("Emulation.setDeviceMetricsOverride", {
                "width": self.viewport[0], "height": self.viewport[1], "deviceScaleFactor": 1, "mobile": False,
            }, session=True)
            self.call("Network.setCacheDisabled", {"cacheDisabled": True}, session=True)
        except Exception:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._closed = True
        try:
            if self.proc.poll() is None:
                try:
                    self._send("Browser.close", {})
                    self.proc.wait(timeout=5)
                except Exception:
                    pass
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait(timeout=5)
        finally:
            for fd in (self._to_browser, self._from_browser):
                try:
                    os.close(fd)
                except OSError:
                    pass
            shutil.rmtree(self._profile, ignore_errors=True)

    def browser_log(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-3000:]

    def _read_loop(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._responses[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    self._events.put(msg)

    def _send(self, method: str, params: dict | None, session: bool = False) -> int:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = self.session
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self._to_browser, data):]
        return self._next_id

    def call(self, method: str, params: dict | None = None, *, session: bool = False,
             timeout: float | None = None) -> dict:
        """Send one protocol command and wait for its result."""
        mid = self._send(method, params, session)
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cond:
            while mid not in self._responses:
                left = deadline - time.monotonic()
                if self._closed and mid not in self._responses:
                    raise BrowserError(f"Chromium exited during {method}:\n{self.browser_log()}")
                if left <= 0:
                    raise BrowserError(f"no answer to {method} within {timeout or self.timeout:.0f} s")
                self._cond.wait(left)
            msg = self._responses.pop(mid)
        if "error" in msg:
            raise BrowserError(f"{method} failed: {msg['error'].get('message')}")
        return msg.get("result", {})

    def events(self) -> list[dict]:
        """Every event received since the last call."""
        out = []
        while True:
            try:
                out.append(self._events.get_nowait())
            except queue.Empty:
                return out

    def wait_event(self, method: str, timeout: float) -> list[dict]:
        """Wait for an event of this method; return all events seen (including it)."""
        seen, deadline = [], time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BrowserError(f"timed out after {timeout:.0f} s waiting for {method}")
            try:
                ev = self._events.get(timeout=min(left, 0.5))
            except queue.Empty:
                if self._closed:
                    raise BrowserError(f"Chromium exited:\n{self.browser_log()}")
                continue
            seen.append(ev)
            if ev.get("method") == method:
                return seen

    # -- page actions

    def open(self, url: str, timeout: float = 60.0) -> list[dict]:
        """Navigate the tab to ``url`` and wait for its load event; returns the events seen."""
        self.events()
        result = self.call("Page.navigate", {"url": url}, session=True)
        if result.get("errorText"):
            raise BrowserError(f"could not open {url}: {result['errorText']}")
        return self.wait_event("Page.loadEventFired", timeout)

    def evaluate(self, expression: str, timeout: float = 60.0):
        """Evaluate JavaScript in the page (awaiting a promise) and return its JSON value."""
        result = self.call("Runtime.evaluate", {
            "expression": expression, "awaitPromise": True, "returnByValue": True,
        }, session=True, timeout=timeout)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise BrowserError(f"script failed: {details.get('exception', {}).get('description') or details.get('text')}")
        return result.get("result", {}).get("value")

    def screenshot(self, path: Path, clip: dict | None = None) -> Path:
        params: dict = {"format": "png"}
        if clip:
            params["clip"] = {**clip, "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.call("Page.captureScreenshot", params, session=True)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path


# ---------------------------------------------------------------------------- the server


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # no request log on stderr
        pass


class BookServer:
    """Serves a folder over HTTP on 127.0.0.1 (a free port), in a background thread."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()

    def __enter__(self) -> "BookServer":
        handler = functools.partial(_QuietHandler, directory=str(self.root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------------------- the checks

# Runs in the page after its load event. Resolves to a JSON report.
_PAGE_SCRIPT = r"""
(async () => {
  const out = {};
  const text = (e) => (e.innerText || e.textContent || '').trim().replace(/\s+/g, ' ').slice(0, 160);

  // Figures: every image must load and decode (lazy ones are asked to load now).
  const imgs = Array.from(document.images);
  imgs.forEach((i) => { if (i.loading === 'lazy') i.loading = 'eager'; });
  out.images = imgs.length;
  out.figures = document.querySelectorAll('article img').length;  // in the text, not the theme's icons
  out.brokenImages = [];
  await Promise.all(imgs.map(async (i) => {
    try { await i.decode(); } catch (e) { }
    if (!(i.complete && i.naturalWidth > 0)) out.brokenImages.push(i.getAttribute('src') || '(no src)');
  }));

  // Mathematics: wait for MathJax's first typesetting pass, then look at every math element.
  const math = Array.from(document.querySelectorAll('.math'));
  out.math = math.length;
  out.mathjax = null;
  if (window.MathJax && window.MathJax.startup && window.MathJax.startup.promise) {
    const timeout = new Promise((resolve) => setTimeout(() => resolve('timeout'), 20000));
    const done = await Promise.race([window.MathJax.startup.promise.then(() => 'done'), timeout]);
    out.mathjax = done === 'done' ? (window.MathJax.version || 'unknown') : 'timeout';
  }
  out.mathjaxScripts = Array.from(document.scripts).map((s) => s.src).filter((s) => /mathjax/i.test(s));
  out.unrenderedMath = math.filter((e) => !e.querySelector('mjx-container')).map(text);
  out.mathErrors = Array.from(document.querySelectorAll('mjx-merror'))
    .map((e) => e.getAttribute('data-mjx-error') || text(e));
  out.rendered = document.querySelectorAll('mjx-container').length;

  // TeX left visible in the text (outside code, scripts and MathJax's own output).
  const skip = new Set(['PRE', 'CODE', 'SCRIPT', 'STYLE', 'TEXTAREA', 'MJX-CONTAINER', 'KBD', 'SAMP']);
  const tex = /\$\$|\$[^\s$][^$]*\$|\\\(|\\\)|\\\[|\\\]|\\begin\{|\\end\{|\\frac\{/;
  out.visibleTex = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    let p = n.parentElement, inside = false;
    while (p) {
      if (skip.has(p.tagName) || p.classList.contains('highlight')) { inside = true; break; }
      p = p.parentElement;
    }
    if (!inside && tex.test(n.nodeValue)) out.visibleTex.push(n.nodeValue.trim().slice(0, 160));
  }

  // Errors in output cells, and docutils errors left in the page.
  const bad = document.querySelectorAll('.cell_output .traceback, .cell_output .output.error, div.output.traceback');
  out.outputErrors = Array.from(bad).map(text);
  out.markupErrors = Array.from(document.querySelectorAll('.system-message, .problematic')).map(text);
  document.querySelectorAll('.cell_output').forEach((e) => {
    const t = e.textContent || '';
    if (t.includes('Traceback (most recent call last)') && !out.outputErrors.length) out.outputErrors.push(text(e));
  });

  // Links (resolved by the browser) and the anchors this page offers.
  out.links = Array.from(document.querySelectorAll('a[href]')).map((a) => a.href);
  out.colab = out.links.filter((h) => h.includes('colab.research.google.com'));
  out.title = document.title;
  return out;
})()
"""

_ID = re.compile(rb"""\b(?:id|name)\s*=\s*["']([^"']+)["']""")


@dataclass
class PageReport:
    """What the browser saw on one page; ``problems`` is empty for a good page."""

    page: str
    problems: list[str] = field(default_factory=list)
    images: int = 0
    figures: int = 0
    math: int = 0
    rendered_math: int = 0
    mathjax: str | None = None
    links: list[str] = field(default_factory=list)
    colab: list[str] = field(default_factory=list)
    remote_requests: list[str] = field(default_factory=list)
    screenshot: Path | None = None
    seconds: float = 0.0


class BookChecker:
    """Checks pages of one built book (``html_dir``) in one browser session."""

    def __init__(self, html_dir: Path, screenshot_dir: Path | None = None, browser: Chromium | None = None):
        self.html_dir = Path(html_dir).resolve()
        self.screenshot_dir = screenshot_dir
        self.browser = browser
        self._ids: dict[Path, set[str]] = {}

    def pages(self) -> list[str]:
        """Every HTML page of the book, relative to ``html_dir`` (static assets excluded)."""
        out = []
        for path in sorted(self.html_dir.rglob("*.html")):
            rel = path.relative_to(self.html_dir)
            if rel.parts[0] in ("_static", "_sources", "_images") or rel.parts[0].startswith("."):
                continue
            out.append(rel.as_posix())
        return out

    def _target_ids(self, path: Path) -> set[str]:
        if path not in self._ids:
            self._ids[path] = {m.decode(errors="replace") for m in _ID.findall(path.read_bytes())}
        return self._ids[path]

    def check_link(self, url: str, base: str) -> str | None:
        """None if an internal link resolves to an existing file (and anchor), else the problem."""
        if not url.startswith(base):
            return None
        target, fragment = urldefrag(url)
        rel = unquote(urlparse(target).path)[len(urlparse(base).path):]
        path = self.html_dir / rel
        if rel == "" or rel.endswith("/"):
            path = path / "index.html"
        if not path.is_file():
            return f"broken link: {url[len(base):]} (no such file)"
        if fragment and path.suffix == ".html" and unquote(fragment) not in self._target_ids(path):
            return f"broken link: {url[len(base):]} (no anchor #{fragment} in {rel})"
        return None

    @staticmethod
    def redirect_target(path: Path) -> str | None:
        m = re.search(rb"""http-equiv=["']refresh["'][^>]*url=([^"'>\s]+)""", path.read_bytes(), re.I)
        return m.group(1).decode() if m else None

    def check(self, page: str, base: str) -> PageReport:
        """Open ``base + page`` and report what is wrong with it."""
        t0 = time.monotonic()
        report = PageReport(page)
        path = self.html_dir / page
        redirect = self.redirect_target(path)
        if redirect is not None:  # a redirect stub (the book's index.html): check where it points
            problem = self.check_link(base + str(Path(page).parent / redirect).lstrip("./"), base)
            report.problems += [problem] if problem else []
            report.seconds = time.monotonic() - t0
            return report

        browser = self.browser
        url = base + page
        events = browser.open(url)
        info = browser.evaluate(_PAGE_SCRIPT)
        events += browser.events()
        report.images, report.figures, report.math = info["images"], info["figures"], info["math"]
        report.rendered_math, report.mathjax = info["rendered"], info["mathjax"]
        report.links, report.colab = info["links"], info["colab"]
        problems = report.problems

        problems += [f"figure did not load: {src}" for src in info["brokenImages"]]
        problems += [f"error in an output cell: {t}" for t in info["outputErrors"]]
        problems += [f"markup error left in the page (see the build's warnings): {t}" for t in info["markupErrors"]]
        if info["math"]:
            if info["mathjax"] is None:
                problems.append(f"{info['math']} math elements but MathJax did not load "
                                f"(scripts: {info['mathjaxScripts'] or 'none'})")
            elif info["mathjax"] == "timeout":
                problems.append("MathJax did not finish typesetting within 20 s")
            problems += [f"math not rendered: {t}" for t in info["unrenderedMath"][:5]]
            if len(info["unrenderedMath"]) > 5:
                problems.append(f"... and {len(info['unrenderedMath']) - 5} more math elements not rendered")
        problems += [f"TeX error in math: {t}" for t in info["mathErrors"]]
        problems += [f"TeX left visible in the text: {t!r}" for t in info["visibleTex"][:5]]
        for link in sorted(set(info["links"])):
            problem = self.check_link(link, base)
            if problem:
                problems.append(problem)

        requests: dict[str, str] = {}
        for ev in events:
            method, params = ev.get("method"), ev.get("params", {})
            if method == "Network.requestWillBeSent":
                req = params.get("request", {}).get("url", "")
                requests[params.get("requestId", "")] = req
                if urlparse(req).scheme in ("http", "https", "ws", "wss") and not req.startswith(base):
                    report.remote_requests.append(req)
            elif method == "Network.responseReceived":
                resp = params.get("response", {})
                # Browsers ask for /favicon.ico on their own; the book declares no icon.
                if (resp.get("url", "").startswith(base) and resp.get("status", 200) >= 400
                        and resp["url"] != base + "favicon.ico"):
                    problems.append(f"file of the book not found: {resp['url'][len(base):]} (HTTP {resp['status']})")
            elif method == "Network.loadingFailed" and not params.get("canceled"):
                req = requests.get(params.get("requestId", ""), "")
                # A missing file answers 404 (above); this is a file that failed in another way.
                if req.startswith(base) and params.get("errorText") not in (None, "", "net::ERR_ABORTED"):
                    problems.append(f"file of the book failed to load: {req[len(base):]} ({params['errorText']})")
            elif method == "Runtime.exceptionThrown":
                d = params.get("exceptionDetails", {})
                problems.append(f"JavaScript error: {(d.get('exception') or {}).get('description') or d.get('text')}"[:300])
        problems += [f"page requests the network: {u}" for u in sorted(set(report.remote_requests))]

        if self.screenshot_dir is not None:
            report.screenshot = browser.screenshot(self.screenshot_dir / Path(page).with_suffix(".png"))
        report.seconds = time.monotonic() - t0
        return report

    def check_all(self, pages: list[str] | None = None) -> list[PageReport]:
        with BookServer(self.html_dir) as server:
            return [self.check(page, server.base) for page in (pages or self.pages())]


def write_gallery(reports: list[PageReport], screenshot_dir: Path) -> Path:
    """An ``index.html`` in ``screenshot_dir`` showing every page's screenshot, with its problems."""
    import html

    cards = []
    for r in reports:
        if r.screenshot is None:
            continue
        src = r.screenshot.relative_to(screenshot_dir).as_posix()
        status = "ok" if not r.problems else "<br>".join(html.escape(p) for p in r.problems)
        cards.append(
            f'<figure><a href="{src}"><img src="{src}" width="640" loading="lazy"></a>'
            f"<figcaption><b>{html.escape(r.page)}</b>: {status}</figcaption></figure>"
        )
    out = screenshot_dir / "index.html"
    out.write_text(
        "<!doctype html><meta charset='utf-8'><title>Screenshots of the book</title>"
        "<style>body{font-family:sans-serif;display:flex;flex-wrap:wrap;gap:16px}"
        "figure{margin:0;width:640px}img{border:1px solid #ccc}</style>" + "".join(cards),
        encoding="utf-8",
    )
    return out


def check_book(html_dir: Path, screenshot_dir: Path | None = None) -> list[PageReport]:
    """Open every page of the book at ``html_dir`` in a fresh headless Chromium."""
    with Chromium() as browser:
        return BookChecker(html_dir, screenshot_dir, browser).check_all()


def screenshot(html_dir: Path, page: str, out: Path, selector: str | None = None,
               height: int = 720, width: int = 1280) -> Path:
    """A PNG of one screen of a page of the book (``width`` x ``height``): the first screen, or
    the screen that starts just above the element ``selector`` (e.g. a figure), after MathJax
    has typeset the page."""
    with Chromium(viewport=(width, height)) as browser, BookServer(html_dir) as server:
        browser.open(server.base + page)
        browser.evaluate(_PAGE_SCRIPT)
        if selector:
            found = browser.evaluate(
                f"(async () => {{ const e = document.querySelector({json.dumps(selector)}); "
                "if (!e) return false; "
                "window.scrollTo(0, e.getBoundingClientRect().top + window.scrollY - 90); "
                "await new Promise((r) => setTimeout(r, 300)); return true; })()")
            if not found:
                raise BrowserError(f"no element {selector!r} on {page}")
        return browser.screenshot(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Check the built book in headless Chromium.")
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="open every page; exit 1 if any page has a problem")
    c.add_argument("html_dir", type=Path)
    c.add_argument("--screenshots", type=Path, default=None)
    s = sub.add_parser("screenshot", help="a PNG of one page")
    s.add_argument("html_dir", type=Path)
    s.add_argument("page")
    s.add_argument("out", type=Path)
    s.add_argument("--selector", default=None)
    s.add_argument("--height", type=int, default=720)
    s.add_argument("--width", type=int, default=1280)
    args = parser.parse_args(argv)
    if args.cmd == "screenshot":
        print(screenshot(args.html_dir, args.page, args.out, args.selector, args.height, args.width))
        return 0
    t0 = time.monotonic()
    reports = check_book(args.html_dir, args.screenshots)
    if args.screenshots is not None:
        print(f"screenshots: {write_gallery(reports, args.screenshots)}")
    bad = 0
    for r in reports:
        status = "ok" if not r.problems else f"{len(r.problems)} problem(s)"
        print(f"{r.page:40s} {r.seconds:5.1f} s  figures {r.figures:3d}  math {r.rendered_math:4d}/{r.math:<4d} {status}")
        for p in r.problems:
            print(f"    - {p}")
        bad += bool(r.problems)
    print(f"{len(reports)} pages, {bad} with problems, {time.monotonic() - t0:.1f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
