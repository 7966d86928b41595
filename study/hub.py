"""Is the Hugging Face hub reachable? Answered in seconds, so an offline run fails fast with one clear line
instead of ~25 s of retries and a multi-line traceback from ``from_pretrained`` / ``load_dataset``."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse


def hub_unreachable_reason() -> str | None:
    """None when the hub answers; otherwise why not, in a few words."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    endpoint = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((endpoint.hostname, endpoint.port or 443), timeout=5).close()
    except OSError as err:
        return f"{endpoint.hostname} is unreachable ({err.__class__.__name__})"
    return None


def hf_home() -> str:
    """The Hugging Face cache directory: $HF_HOME, else huggingface_hub's default."""
    from huggingface_hub import constants

    return os.environ.get("HF_HOME", constants.HF_HOME)
