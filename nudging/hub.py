"""Whether the Hugging Face hub can be reached, so that an offline machine fails fast instead of retrying."""

from __future__ import annotations

import os
import socket

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def hub_reachable(timeout: float = 3.0) -> bool:
    if any(os.environ.get(name, "").lower() in ("1", "true", "yes") for name in OFFLINE_VARIABLES):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0].split(":")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def go_offline_unless_reachable() -> bool:
    """Put huggingface_hub in offline mode when the hub cannot be reached: models already in its cache still
    load, unknown ids fail at once (instead of about 45 s of retries). Returns whether the hub is reachable."""
    if hub_reachable():
        return True
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True  # read at call time by the download functions
    return False
