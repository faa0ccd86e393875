"""Optional answer extraction by an OpenAI-compatible endpoint (``--judge-url``), off by default.

The paper's protocol asked an LLM for the final answer when rules could not find one. Here the
judge only extracts (it never decides correctness): its answer goes through the same
``match_answer`` rules as any other, and it is asked only about responses where the rules found
nothing. Plain ``urllib``: no client library, no key unless ``OPENAI_API_KEY`` is set (sent as a
Bearer token); a URL's ``user:password@`` is sent as HTTP basic auth instead when there is no key.
Neither is ever written anywhere (``stats`` gives the URL without them).

A bad judge never stops or stalls an evaluation: each call ends within ``timeout`` seconds (a wall
clock bound, also for a server that trickles bytes), a failure leaves the item to the rules, and
after ``max_failures`` failures in a row the judge is not asked again for the rest of the run.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import urllib.error
import urllib.request
from urllib.parse import unquote, urlsplit, urlunsplit

from mssr_cli.secrets import redact

PROMPT = (
    "Extract the final answer from a model's response to a question. Reply with the answer only "
    "(an option letter, a number, a word or a short expression), or NONE if the response gives no answer.\n\n"
    "Question:\n{question}\n\nResponse:\n{response}\n\nFinal answer:"
)
MAX_RESPONSE_CHARS = 6000  # the end of a long response holds its answer
MAX_REPLY_BYTES = 1 << 20  # a chat completion of 64 tokens is a few kB; more is not a reply
DEFAULT_TIMEOUT = 30.0
DEFAULT_MAX_FAILURES = 3


class JudgeFailure(Exception):
    """One call that gave no usable reply (no connection, an HTTP error, a timeout, not a completion)."""


class Judge:
    """``Judge(url)(question, response) -> str | None``; a failed call counts as no answer.

    Counts ``calls`` (items asked about), ``failures`` (calls without a usable reply) and ``skipped``
    (items not asked because the judge was given up on); ``outcome`` is the last item's: answered,
    none (the judge found no answer), failed or skipped."""

    def __init__(self, url: str, model: str | None = None, timeout: float = DEFAULT_TIMEOUT,
                 max_failures: int = DEFAULT_MAX_FAILURES, warn=None) -> None:
        if not timeout > 0:
            raise ValueError(f"--judge-timeout must be > 0 seconds, got {timeout}")
        parts = urlsplit(url)
        # urllib cannot send a URL's user:password@ (it takes them for the host name): move them to a header
        self.basic_auth, netloc = None, parts.netloc
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            self.basic_auth = "Basic " + base64.b64encode(credentials).decode()
            netloc = netloc.rpartition("@")[2]
        path = parts.path.rstrip("/").removesuffix("/chat/completions")
        self.base = urlunsplit((parts.scheme, netloc, path, "", ""))
        self.query = f"?{parts.query}" if parts.query else ""  # e.g. a gateway's ?api-version=
        self.endpoint = f"{self.base}/chat/completions{self.query}"
        self.model = model or os.environ.get("MSSR_JUDGE_MODEL")  # None: the server's first model
        self.timeout = timeout
        self.max_failures = max_failures
        self.warn = warn  # warn(message): told once, when the judge is given up on
        self.calls = self.failures = self.skipped = 0
        self.consecutive_failures = 0
        self.gave_up = False
        self.last_error: str | None = None
        self.outcome: str | None = None

    def stats(self) -> dict:
        """What summary.json records about the judge (its URL without credentials)."""
        return {"url": redact(self.base + self.query), "timeout": self.timeout, "calls": self.calls, "failures": self.failures,
                "skipped": self.skipped, "gave_up": self.gave_up, "last_error": self.last_error}

    def _headers(self) -> dict:
        if key := os.environ.get("OPENAI_API_KEY"):
            return {"Authorization": f"Bearer {key}"}
        return {"Authorization": self.basic_auth} if self.basic_auth else {}

    def _served_model(self) -> str:
        """The first model the server lists (``GET /models``): vLLM refuses names it does not serve."""
        try:
            request = urllib.request.Request(f"{self.base}/models{self.query}", headers=self._headers())
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                return json.loads(reply.read(MAX_REPLY_BYTES))["data"][0]["id"]
        except Exception:
            return "default"

    def _ask(self, question: str, response: str) -> str:
        """The reply's text; JudgeFailure when there is none."""
        if self.model is None:
            self.model = self._served_model()
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": PROMPT.format(question=question, response=response[-MAX_RESPONSE_CHARS:])}],
            "temperature": 0,
            "max_tokens": 64,
        }
        headers = {"Content-Type": "application/json", **self._headers()}
        request = urllib.request.Request(self.endpoint, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                content = json.loads(reply.read(MAX_REPLY_BYTES))["choices"][0]["message"]["content"]
        except urllib.error.HTTPError as err:
            raise JudgeFailure(f"HTTP {err.code}") from None
        except (ValueError, LookupError, TypeError) as err:  # not JSON, or JSON without a completion
            raise JudgeFailure(f"not a chat completion ({type(err).__name__})") from None
        except Exception as err:  # no connection, a socket timeout
            reason = getattr(err, "reason", None) or err
            if isinstance(reason, TimeoutError):  # the socket's own timeout, a moment before the thread's
                raise JudgeFailure(f"no reply within {self.timeout:g} s") from None
            raise JudgeFailure(redact(f"{type(reason).__name__}: {reason}")) from None
        if content is not None and not isinstance(content, str):
            raise JudgeFailure(f"not a chat completion (content is {type(content).__name__})")
        return content or ""

    def _ask_within_timeout(self, question: str, response: str) -> str:
        # urllib's timeout bounds each socket operation, not the call: a server sending a byte every few
        # seconds would hold it forever. A daemon thread bounds the whole call; a late reply is dropped.
        result: dict = {}

        def call():
            try:
                result["content"] = self._ask(question, response)
            except JudgeFailure as err:
                result["error"] = str(err)

        thread = threading.Thread(target=call, name="mssr-judge", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            raise JudgeFailure(f"no reply within {self.timeout:g} s")
        if "error" in result:
            raise JudgeFailure(result["error"])
        return result["content"]

    def __call__(self, question: str, response: str) -> str | None:
        if self.gave_up:
            self.skipped += 1
            self.outcome = "skipped"
            return None
        self.calls += 1
        try:
            content = self._ask_within_timeout(question, response)
        except JudgeFailure as err:  # a judge outage must not stop an evaluation: the rules grade the item
            self.failures += 1
            self.consecutive_failures += 1
            self.last_error = str(err)
            self.outcome = "failed"
            if self.max_failures and self.consecutive_failures >= self.max_failures:
                self.gave_up = True
                if self.warn is not None:
                    self.warn(f"judge {redact(self.base)}: {self.consecutive_failures} failures in a row (last: "
                              f"{self.last_error}); not asking it again in this run, the rules grade the rest")
            return None
        self.consecutive_failures = 0
        answer = content.strip().splitlines()[0].strip() if content.strip() else ""
        self.outcome = "answered" if answer and answer.upper() != "NONE" else "none"
        return answer if self.outcome == "answered" else None
