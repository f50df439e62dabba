"""Downloads that hang: every full-profile download fails fast with the clear "no network" error.

A local TCP server that accepts connections and never answers (a "black hole" on 127.0.0.1)
stands in for a network that accepts connections but never replies. Each scenario runs in a
child Python process with ``IU_DOWNLOAD_TIMEOUT=2``, a temporary ``IU_DATA_DIR`` and Hugging Face
cache, and the download pointed at the black hole; the child reports the error it got and how
long the call took. The parent kills the child after ``DEADLINE`` seconds (pytest-timeout is not
installed), so code without download timeouts fails these tests instead of hanging the suite.
A child process also gives each scenario fresh ``huggingface_hub`` / ``datasets`` settings,
which are read from the environment at import time.

Nothing here touches the real network or the user's caches.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from influence_utils import data as D

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 2  # IU_DOWNLOAD_TIMEOUT in the child
MAX_FAIL_S = 30  # the call must fail within this (measured in the child, imports excluded)
DEADLINE = 90  # the parent kills a child that has not finished by then (imports included)
MARK = "@@RESULT@@"


# --------------------------------------------------------------------------- local servers


class _Server:
    """TCP server on 127.0.0.1 that accepts connections, optionally sends ``greeting``, then
    never sends anything else (and never closes the connection while it runs)."""

    def __init__(self, greeting: bytes = b""):
        self.greeting = greeting
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.1)  # so that close() can stop the accept loop promptly
        self.accepted = 0
        self.conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            self.conns.append(conn)
            if self.greeting:
                try:
                    conn.sendall(self.greeting)
                except OSError:
                    pass

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
        for conn in self.conns:
            conn.close()


@pytest.fixture
def black_hole():
    server = _Server()
    yield server
    server.close()


@pytest.fixture
def stalling_server():
    """Answers with the headers of a large 200 response and a few bytes, then stalls."""
    server = _Server(b"HTTP/1.1 200 OK\r\nContent-Length: 170498071\r\n"
                     b"Content-Type: application/octet-stream\r\n\r\n" + b"\x1f\x8b" * 512)
    yield server
    server.close()


@pytest.fixture
def closed_port():
    """A port on 127.0.0.1 with nothing listening: connection refused, i.e. no network."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------- child runner

_PRELUDE = """
import json, socket, sys, time, traceback
def _report(fn):
    t0 = time.perf_counter()
    try:
        fn()
        out = {"type": None, "message": None}
    except BaseException as exc:
        out = {"type": type(exc).__name__, "message": str(exc),
               "cause": type(exc.__cause__).__name__ if exc.__cause__ else None}
    out["elapsed"] = time.perf_counter() - t0
    out["default_timeout"] = socket.getdefaulttimeout()
    try:
        from huggingface_hub.utils import get_session
        out["hub_hooks"] = len(get_session().event_hooks["request"])
    except Exception:
        out["hub_hooks"] = None
    print(%r + json.dumps(out), flush=True)
""" % MARK


def _run_child(code: str, tmp_path: Path, endpoint: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.upper().endswith("_PROXY") and k not in (
               "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN")}
    env.update(
        IU_PROFILE="full",
        IU_DOWNLOAD_TIMEOUT=str(TIMEOUT_S),
        IU_DATA_DIR=str(tmp_path / "data"),
        HF_HOME=str(tmp_path / "hf"),
        HF_HUB_CACHE=str(tmp_path / "hf" / "hub"),
        HF_DATASETS_CACHE=str(tmp_path / "hf" / "datasets"),
        HF_HUB_DISABLE_TELEMETRY="1",
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    )
    if endpoint is not None:
        env["HF_ENDPOINT"] = endpoint
    script = _PRELUDE + textwrap.dedent(code)
    tmp_path.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), env=env,
                              capture_output=True, text=True, timeout=DEADLINE)
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stderr or b"")[-2000:]
        pytest.fail(f"the download did not fail within {DEADLINE} s (it hangs); "
                    f"stderr tail: {tail!r}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MARK)]
    assert lines, (f"child crashed (rc={proc.returncode}, {time.perf_counter() - t0:.1f} s):\n"
                   f"{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(lines[-1][len(MARK):])


def _assert_fast_clear_failure(result: dict, error_type: str) -> None:
    assert result["type"] == error_type, result
    assert result["elapsed"] < MAX_FAIL_S, result
    assert f"no answer within {TIMEOUT_S} s (IU_DOWNLOAD_TIMEOUT)" in result["message"], result
    # Globals changed for the download are restored afterwards.
    assert result["default_timeout"] is None, result


# --------------------------------------------------------------------------- CIFAR-10 (torchvision)

_CIFAR = """
import torchvision.datasets
torchvision.datasets.CIFAR10.url = %r + "/cifar-10-python.tar.gz"
from influence_utils.data import load_dataset
_report(lambda: load_dataset("cifar10"))
"""


def _cifar_tail(message: str) -> str:
    return message[message.index("Is the network available?"):]


def test_cifar10_black_hole_fails_fast_like_no_network(black_hole, closed_port, tmp_path):
    hung = _run_child(_CIFAR % black_hole.url, tmp_path / "hang")
    _assert_fast_clear_failure(hung, "DatasetUnavailableError")
    assert black_hole.accepted >= 1  # the download really went to the black hole
    print(f"cifar10 black hole: failed after {hung['elapsed']:.2f} s: {hung['message']}")

    offline = _run_child(_CIFAR % closed_port, tmp_path / "offline")
    assert offline["type"] == "DatasetUnavailableError"
    assert "no answer within" not in offline["message"]
    # Same error, same advice as without network (only the parenthesised cause differs).
    assert _cifar_tail(hung["message"]) == _cifar_tail(offline["message"])
    assert hung["message"].startswith("Dataset 'cifar10' could not be downloaded into ")
    assert "IU_PROFILE=full" in hung["message"]


def test_cifar10_stalled_read_fails_fast(stalling_server, tmp_path):
    result = _run_child(_CIFAR % stalling_server.url, tmp_path)
    _assert_fast_clear_failure(result, "DatasetUnavailableError")
    assert stalling_server.accepted >= 1
    print(f"cifar10 stalled read: failed after {result['elapsed']:.2f} s")


# --------------------------------------------------------------------------- BERT (transformers)

_BERT = """
from influence_utils import models as M
_report(M.{fn})
"""


@pytest.mark.parametrize("fn", ["load_bert_base_tokenizer", "load_bert_base_classifier"])
def test_bert_black_hole_fails_fast_like_no_network(fn, black_hole, tmp_path):
    pytest.importorskip("transformers")
    result = _run_child(_BERT.format(fn=fn), tmp_path, endpoint=black_hole.url)
    _assert_fast_clear_failure(result, "RuntimeError")
    assert black_hole.accepted >= 1
    # Same wording as the no-network error (models._hub_error), and the request hook is gone.
    from influence_utils import models as M

    no_network = str(M._hub_error("bert-base-uncased", OSError("no network")))
    tail = no_network[no_network.index("). This model belongs"):]
    assert result["message"].startswith("could not load 'bert-base-uncased' from the Hugging Face hub (")
    assert result["message"].endswith(tail)
    assert result["cause"] == "OSError"
    assert result["hub_hooks"] == 1  # only huggingface_hub's own hook is left
    print(f"{fn} black hole: failed after {result['elapsed']:.2f} s: {result['message']}")


# --------------------------------------------------------------------------- SST-2 (datasets)

# The 'datasets' package may be missing (it is in the [full] extra). Then a stand-in module
# makes the calls datasets makes first for a hub dataset: HfApi.dataset_info (which datasets
# calls with an explicit timeout of its own) and hf_hub_download, through the real
# huggingface_hub, against the black hole. With datasets installed, the real package is used.
_SST2_STANDIN = """
import types
from huggingface_hub import HfApi, hf_hub_download
def load_dataset(path, name=None, cache_dir=None, **kwargs):
    HfApi().dataset_info(path, timeout=100.0)
    hf_hub_download(path, "README.md", repo_type="dataset", cache_dir=cache_dir)
    raise AssertionError("the black hole answered")
sys.modules["datasets"] = types.SimpleNamespace(load_dataset=load_dataset)
from influence_utils.data import load_dataset as iu_load
_report(lambda: iu_load("sst2"))
"""

_SST2_REAL = """
from influence_utils.data import load_dataset as iu_load
_report(lambda: iu_load("sst2"))
"""


def _check_sst2(result: dict, server: _Server) -> None:
    _assert_fast_clear_failure(result, "DatasetUnavailableError")
    assert server.accepted >= 1
    msg = result["message"]
    assert msg.startswith("Dataset 'sst2' could not be downloaded from the Hugging Face hub "
                          "(tried 'stanfordnlp/sst2'; no answer within")
    hint = D._FULL_HINT.format(alternative="'rotten_tomatoes', the source data behind SST")
    assert msg.endswith("). Is the network available? " + hint)
    assert result["hub_hooks"] == 1


def test_sst2_black_hole_fails_fast_like_no_network(black_hole, tmp_path):
    pytest.importorskip("huggingface_hub")
    result = _run_child(_SST2_STANDIN, tmp_path, endpoint=black_hole.url)
    _check_sst2(result, black_hole)
    print(f"sst2 (stand-in for datasets) black hole: failed after {result['elapsed']:.2f} s: "
          f"{result['message']}")


def test_sst2_black_hole_with_real_datasets(black_hole, tmp_path):
    pytest.importorskip("datasets", reason="the [full] extra 'datasets' is not installed")
    result = _run_child(_SST2_REAL, tmp_path, endpoint=black_hole.url)
    _check_sst2(result, black_hole)
    print(f"sst2 (datasets) black hole: failed after {result['elapsed']:.2f} s")


# --------------------------------------------------------------------------- the setting itself


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf"])
def test_bad_download_timeout_is_rejected(monkeypatch, value):
    monkeypatch.setenv("IU_DOWNLOAD_TIMEOUT", value)
    with pytest.raises(ValueError, match="IU_DOWNLOAD_TIMEOUT must be a positive number"):
        D.download_timeout()


def test_download_timeout_default_and_value(monkeypatch):
    monkeypatch.delenv("IU_DOWNLOAD_TIMEOUT", raising=False)
    assert D.download_timeout() == D.DEFAULT_DOWNLOAD_TIMEOUT == 60
    monkeypatch.setenv("IU_DOWNLOAD_TIMEOUT", " 2.5 ")
    assert D.download_timeout() == 2.5


def test_guard_restores_globals_even_on_error():
    before = socket.getdefaulttimeout()
    hooks = None
    try:
        from huggingface_hub.utils import get_session

        hooks = get_session().event_hooks["request"]
    except ImportError:
        pass
    n_hooks = None if hooks is None else len(hooks)
    with pytest.raises(KeyError):
        with D.DownloadGuard(3.0) as guard:
            assert socket.getdefaulttimeout() == 3.0
            if hooks is not None:
                assert len(hooks) == n_hooks + 1
            raise KeyError("boom")
    assert socket.getdefaulttimeout() == before
    assert hooks is None or len(hooks) == n_hooks
    assert guard.note() == ""
    assert guard.note(TimeoutError("timed out")) == "no answer within 3 s (IU_DOWNLOAD_TIMEOUT); "
