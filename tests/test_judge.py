"""A bad judge (garbage, HTTP 500, no reply, a reply trickled byte by byte) costs at most its timeout per
call, leaves the item to the rules, is given up on after a few failures in a row, and is counted."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mssr_cli.evaluation.benchmarks import BENCHMARKS
from mssr_cli.evaluation.judge import DEFAULT_TIMEOUT, Judge
from test_eval_data import write_local_copy

TIMEOUT = 1.0
SLACK = 0.5  # thread start and join overhead, on a loaded 2-core machine
DOC = {"question_type": "multi-choice", "answer": "B", "question": "Choices:\nA:2\nB:4", "query_cot": "Q"}
NO_ANSWER = "I believe the second one, four."  # the rules find no answer here: the judge is asked


class _Bad(BaseHTTPRequestHandler):
    """mode: garbage | error | hang | trickle | good. Counts the completions asked for."""

    mode = "good"
    requests = 0
    release = threading.Event()  # set at teardown: hanging handlers end

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers["Content-Length"]))
        _Bad.requests += 1
        if _Bad.mode == "hang":
            _Bad.release.wait(60)
            return
        if _Bad.mode == "error":
            self.send_error(500, "judge crashed")
            return
        body = b"<html>not json{" if _Bad.mode == "garbage" else json.dumps(
            {"choices": [{"message": {"role": "assistant", "content": "B"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if _Bad.mode == "trickle":  # each byte well within the socket timeout, the whole far beyond it
            for byte in body:
                if _Bad.release.wait(0.4):
                    return
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
            return
        self.wfile.write(body)

    def do_GET(self):  # noqa: N802
        self.send_error(404)

    def log_message(self, *args):
        pass


@pytest.fixture()
def bad_judge_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Bad)
    server.daemon_threads = True
    _Bad.release.clear()
    _Bad.requests = 0
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    _Bad.release.set()
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(("mode", "error"), [
    ("garbage", "not a chat completion"),
    ("error", "HTTP 500"),
    ("hang", f"no reply within {TIMEOUT:g} s"),
    ("trickle", f"no reply within {TIMEOUT:g} s"),
])
def test_a_bad_judge_is_bounded_in_time_and_falls_back_to_the_rules(bad_judge_url, mode, error):
    _Bad.mode = mode
    mathverse = BENCHMARKS["mathverse"]
    judge = Judge(bad_judge_url, model="stub", timeout=TIMEOUT)
    started = time.monotonic()
    graded = mathverse.grade(DOC, NO_ANSWER, judge)
    took = time.monotonic() - started
    assert took < TIMEOUT + SLACK, f"{mode}: {took:.2f} s"
    assert graded == mathverse.grade(DOC, NO_ANSWER)  # what the rules alone give
    assert (judge.calls, judge.failures, judge.outcome) == (1, 1, "failed")
    assert error in judge.last_error


def test_after_failures_in_a_row_the_judge_is_not_asked_again(bad_judge_url):
    warnings = []
    judge = Judge(bad_judge_url, model="stub", timeout=TIMEOUT, max_failures=3, warn=warnings.append)
    _Bad.mode = "good"
    assert judge("q", NO_ANSWER) == "B"
    _Bad.mode = "error"
    assert [judge("q", NO_ANSWER) for _ in range(2)] == [None, None]
    _Bad.mode = "good"
    assert judge("q", NO_ANSWER) == "B"  # a success resets the count
    _Bad.mode = "error"
    assert [judge("q", NO_ANSWER) for _ in range(3)] == [None] * 3
    assert judge.gave_up and len(warnings) == 1 and "3 failures in a row (last: HTTP 500)" in warnings[0]
    asked = _Bad.requests
    _Bad.mode = "good"
    assert judge("q", NO_ANSWER) is None and _Bad.requests == asked  # not even asked
    assert (judge.calls, judge.failures, judge.skipped, judge.outcome) == (7, 5, 1, "skipped")
    assert len(warnings) == 1


def test_the_default_timeout_is_bounded():
    assert 0 < DEFAULT_TIMEOUT <= 60 and Judge("http://127.0.0.1:9/v1").timeout == DEFAULT_TIMEOUT
    with pytest.raises(ValueError, match="--judge-timeout"):
        Judge("http://127.0.0.1:9/v1", timeout=0)


@pytest.mark.timeout(600)
def test_eval_with_a_hanging_judge_counts_it_and_grades_as_the_rules(tmp_path, bad_judge_url, tiny_policy_path):
    """Through the command line: a judge that never answers costs one timeout per item until it is given
    up on; every item is graded as without a judge, and summary.json and the samples say so."""
    from rich.console import Console

    from mssr_cli.evaluation import run_eval

    _Bad.mode = "hang"
    names = ["hallusionbench", "mathvista", "mathverse"]  # 7 items: 3 failures, then the rest not asked
    for name in names:
        write_local_copy(name, tmp_path / "data")
    common = ["--benchmarks", ",".join(names), "--data-dir", str(tmp_path / "data"), "--model", tiny_policy_path,
              "--max-new-tokens", "1"]  # one token: no answer the rules can find, so items go to the judge
    code = "import sys; from mssr_cli.cli import app; sys.argv = ['mssr', *sys.argv[1:]]; app()"
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", code, "eval", *common, "--out", str(tmp_path / "judged"),
                          "--judge-url", bad_judge_url, "--judge-timeout", str(TIMEOUT)],
                         capture_output=True, text=True, timeout=300)
    took = time.monotonic() - started
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    summary = json.loads((tmp_path / "judged" / "summary.json").read_text())
    judged = {name: _samples(tmp_path / "judged" / f"samples_{name}.jsonl") for name in names}
    asked = [s["judge"] for name in names for s in judged[name] if "judge" in s]
    assert len(asked) >= 4 and asked == ["failed"] * 3 + ["skipped"] * (len(asked) - 3)
    judge = summary["judge"]
    assert judge["gave_up"] and (judge["calls"], judge["failures"], judge["skipped"]) == (3, 3, len(asked) - 3)
    assert f"no reply within {TIMEOUT:g} s" in judge["last_error"] and judge["timeout"] == TIMEOUT
    for key, total in (("judge_calls", 3), ("judge_failures", 3), ("judge_skipped", len(asked) - 3)):
        assert sum(summary["benchmarks"][name][key] for name in names) == total, key
    assert "not asking it again" in out.stdout
    print(f"eval with a hanging judge: {took:.1f} s, judge {judge}")

    plain = run_eval(names, tiny_policy_path, data_dir=tmp_path / "data", max_new_tokens=1, out=tmp_path / "plain",
                     console=Console(file=io.StringIO()))
    keys = ("id", "response", "extracted", "correct")
    for name in names:  # graded exactly as without a judge
        rules = _samples(tmp_path / "plain" / f"samples_{name}.jsonl")
        assert [{k: s[k] for k in keys} for s in judged[name]] == [{k: s[k] for k in keys} for s in rules], name
        assert summary["benchmarks"][name]["accuracy"] == plain["benchmarks"][name]["accuracy"]


def _samples(path):
    return [json.loads(line) for line in path.read_text().splitlines()]
