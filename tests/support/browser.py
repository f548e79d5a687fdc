"""Headless Chromium (Debian's `chromium`) driven by Playwright, set up for WebRTC tests.

Playwright cannot download its own browser here, so it launches /usr/bin/chromium with fake
media devices and loopback ICE. A missing peer fails the test, naming what to install.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def chromium_args(fake_audio: Path | None = None) -> list[str]:
    """Flags for headless Chromium: fake microphone (from `fake_audio`, a WAV, when given),
    no permission prompt, loopback ICE candidates with real addresses (no mDNS), no
    background traffic."""
    args = [
        "--no-sandbox",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
    ]
    if fake_audio is not None:
        args.append(f"--use-file-for-fake-audio-capture={fake_audio}")
    return args


def require_chromium() -> None:
    """Fail (never skip) when Debian's Chromium is not installed."""
    if not os.path.exists(CHROMIUM):
        pytest.fail("Chromium is missing: apt-get install chromium (Debian package `chromium`)")


@asynccontextmanager
async def launch_chromium(
    fake_audio: Path | None = None, extra_args: Sequence[str] = ()
) -> AsyncIterator[Any]:
    """A Playwright `Browser` on Debian's Chromium; closed (process gone) on exit."""
    require_chromium()
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail("Playwright is missing: pip install playwright (PyPI package `playwright`)")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[*chromium_args(fake_audio), *extra_args],
        )
        try:
            yield browser
        finally:
            await browser.close()


def speech_wav(path: Path, text: str, rate: int = 48000, pad_s: float = 1.0) -> Path:
    """Speak `text` with espeak-ng into a mono `rate` Hz 16-bit WAV at `path`, with `pad_s`
    seconds of silence before and after. Fails naming the Debian package when a tool is
    missing."""
    for tool, package in (("espeak-ng", "espeak-ng"), ("sox", "sox")):
        if shutil.which(tool) is None:
            pytest.fail(
                f"{tool} is missing: apt-get install {package} (Debian package `{package}`)"
            )
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(
        [
            "sox",
            str(raw),
            "-r",
            str(rate),
            "-c",
            "1",
            "-b",
            "16",
            str(path),
            "pad",
            str(pad_s),
            str(pad_s),
        ],
        check=True,
        capture_output=True,
    )
    raw.unlink()
    return path


def artifact_path(name: str) -> Path:
    """A path under tests/artifacts/ (not committed), creating the directory."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
