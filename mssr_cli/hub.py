"""Is the Hugging Face Hub reachable from here? One short probe, shared by model, data and benchmark loading.

Without it, transformers retries every file for minutes (7.5 min for a cached model with no network,
measured) and datasets ~25 s per dataset before failing; with it, a missing model or dataset is one
line in seconds. It lives outside models/, data/ and evaluation/ so that each may use it.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

PROXY_VARS = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
HUB_PROBE_SECONDS = 3.0


@functools.cache
def hub_connection_error() -> str | None:
    """Why the Hub's host cannot be reached directly now; None when it can or a proxy decides.

    One TCP connect of at most ``HUB_PROBE_SECONDS``, once per process."""
    from huggingface_hub import constants

    if any(os.environ.get(v) for v in PROXY_VARS):
        return None
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_SECONDS).close()
    except OSError as err:
        return f"cannot connect to {host}:{port}: {err.strerror or type(err).__name__}"
    return None


@functools.cache
def hub_worth_trying() -> bool:
    """False only when the Hub's host can't be reached directly: ``datasets`` would spend ~25 s
    retrying each dataset before failing. Offline mode (``HF_HUB_OFFLINE=1``: the ``datasets``
    cache) and proxies are left to ``datasets``."""
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE or hub_connection_error() is None
