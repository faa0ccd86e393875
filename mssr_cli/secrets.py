"""Keep API keys and tokens out of what runs write (meta.json, the W&B config, eval's summary.json).

Keys come from the environment (``WANDB_API_KEY``, ``OPENAI_API_KEY``, ``HF_TOKEN``, ...) and are read
by the libraries that need them; nothing here stores them. ``redact`` masks what could still carry one
into a file: the value of any secret environment variable, the password in a URL
(``http://user:KEY@host``) and key-like URL query parameters (``?api_key=KEY``).
"""

from __future__ import annotations

import os
import re

MASK = "***"
SECRET_ENV_VARS = ("WANDB_API_KEY", "OPENAI_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
# Any other variable named like a credential (GITHUB_TOKEN, ANTHROPIC_API_KEY, ...) is masked too.
_SECRET_NAME = re.compile(r"(?:^|_)(?:API_KEY|TOKEN|SECRET|SECRET_KEY|PASSWORD|ACCESS_KEY)$")
# Shorter values ("1", "true") are settings, not keys: masking them would garble ordinary text.
MIN_SECRET_CHARS = 8
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")
_QUERY_KEY = re.compile(
    r"(?P<name>[?&;](?:api[_-]?key|key|token|access[_-]?token|auth|secret|password|passwd|sig|signature)=)[^&;#\s]*",
    re.IGNORECASE,
)


def secret_values() -> list[str]:
    """Values of the secret environment variables set now, longest first (a key never half-masked)."""
    values = {
        value for name, value in os.environ.items()
        if (name in SECRET_ENV_VARS or _SECRET_NAME.search(name)) and len(value) >= MIN_SECRET_CHARS
    }
    return sorted(values, key=len, reverse=True)


def redact(text: str) -> str:
    """``text`` with secret env values, URL passwords and key-like query values replaced by ``***``."""
    for value in secret_values():
        text = text.replace(value, MASK)
    text = _USERINFO.sub(rf"\g<scheme>{MASK}@", text)
    return _QUERY_KEY.sub(rf"\g<name>{MASK}", text)


def redact_data(data):
    """``redact`` applied to every string in nested dicts, lists and tuples (keys included)."""
    if isinstance(data, str):
        return redact(data)
    if isinstance(data, dict):
        return {redact_data(k): redact_data(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(redact_data(v) for v in data)
    return data
