"""Screenshots of pages at a desktop and a phone width, kept in ``test-artifacts/``.

``save_screens`` also checks what a phone-width screenshot would show badly: a page wider
than the window (a table should scroll inside its own container, not the page).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.live import ROOT

ARTIFACTS = ROOT / "test-artifacts"
WIDTHS = (1400, 420)
HEIGHT = 900
MAX_HEIGHT = 6000  # a full-page shot, cut off beyond this


def save_screens(driver: Any, name: str) -> list[Path]:
    """Screenshot the current page, whole, at each width in ``WIDTHS``; return the files.

    Fails when the page scrolls sideways at any width. The window is left at 1400 px wide.
    """
    ARTIFACTS.mkdir(exist_ok=True)
    paths = []
    for width in WIDTHS:
        driver.set_window_size(width, HEIGHT)
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width, min(max(height + 140, HEIGHT), MAX_HEIGHT))
        path = ARTIFACTS / f"{name}-{width}.png"
        path.unlink(missing_ok=True)
        assert driver.save_screenshot(str(path)), f"could not save {path}"
        paths.append(path)
        assert overflow <= 1, f"{name} is {overflow}px wider than a {width}px window ({path})"
    driver.set_window_size(WIDTHS[0], HEIGHT)
    return paths
