"""Optional answer extraction by an OpenAI-compatible endpoint (``--judge-url``), off by default.

The paper's protocol asked an LLM for the final answer when rules could not find one. Here the
judge only extracts (it never decides correctness): its answer goes through the same
``match_answer`` rules as any other, and it is asked only about responses where the rules found
nothing. Plain ``urllib``: no client library, no key unless ``OPENAI_API_KEY`` is set.
"""

from __future__ import annotations

import json
import os
import urllib.request

PROMPT = (
    "Extract the final answer from a model's response to a question. Reply with the answer only "
    "(an option letter, a number, a word or a short expression), or NONE if the response gives no answer.\n\n"
    "Question:\n{question}\n\nResponse:\n{response}\n\nFinal answer:"
)
MAX_RESPONSE_CHARS = 6000  # the end of a long response holds its answer


class Judge:
    """``Judge(url)(question, response) -> str | None``; network errors count as no answer."""

    def __init__(self, url: str, model: str | None = None, timeout: float = 60.0) -> None:
        base = url.rstrip("/").removesuffix("/chat/completions")
        self.base, self.endpoint = base, f"{base}/chat/completions"
        self.model = model or os.environ.get("MSSR_JUDGE_MODEL")  # None: the server's first model
        self.timeout = timeout
        self.calls = 0
        self.failures = 0

    def _served_model(self) -> str:
        """The first model the server lists (``GET /models``): vLLM refuses names it does not serve."""
        try:
            with urllib.request.urlopen(f"{self.base}/models", timeout=self.timeout) as reply:
                return json.loads(reply.read())["data"][0]["id"]
        except Exception:
            return "default"

    def __call__(self, question: str, response: str) -> str | None:
        self.calls += 1
        if self.model is None:
            self.model = self._served_model()
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": PROMPT.format(question=question, response=response[-MAX_RESPONSE_CHARS:])}],
            "temperature": 0,
            "max_tokens": 64,
        }
        headers = {"Content-Type": "application/json"}
        if key := os.environ.get("OPENAI_API_KEY"):
            headers["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(self.endpoint, data=json.dumps(body).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                content = json.loads(reply.read())["choices"][0]["message"]["content"]
        except Exception:  # a judge outage must not stop an evaluation: the item stays unanswered
            self.failures += 1
            return None
        answer = (content or "").strip().splitlines()[0].strip() if (content or "").strip() else ""
        return None if not answer or answer.upper() == "NONE" else answer
