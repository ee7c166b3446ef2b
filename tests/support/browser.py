"""Chromium for the browser tests: Debian's ``chromium`` package, installed with apt-get when missing.

Playwright drives it (``executable_path``); Playwright's own browser download is not used.
Standard library only: ``python3 dev.py setup`` calls :func:`ensure_chromium` before any venv exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable

APT_PACKAGE = "chromium"


def chromium_bin() -> str | None:
    """The system's Chromium, if installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def ensure_chromium(say: Callable[[str], None] = print) -> str:
    """Chromium's path, installing Debian's package first when it is missing.

    :raises RuntimeError: if it is missing and this process cannot install it (not root, no apt-get).
    """
    found = chromium_bin()
    if found:
        return found
    command = f"apt-get update && apt-get install -y {APT_PACKAGE}"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(
            f"Chromium is needed for the browser tests; install it with: sudo sh -c '{command}'"
        )
    say(f"installing {APT_PACKAGE} with apt-get")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", APT_PACKAGE], check=True, env=env)
    found = chromium_bin()
    if not found:
        raise RuntimeError("apt-get installed chromium, but no chromium executable is on the PATH")
    return found
