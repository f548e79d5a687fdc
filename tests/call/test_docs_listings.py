"""Docs that run: every listing in docs/ marked `<!-- runnable: KIND -->` (docs/scenarios.md,
"Listings that run") and every file in docs/examples/ is really executed.

A scenario is loaded with `load_scenario` and driven on a call bridged to the real local
provider: the caller hears the scenario's first audio, speaks, presses a key, and hangs up; no
handler may raise and the call must end `completed`. A script is run as a process.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog

from gateway.call.events import DtmfReceived
from gateway.call.manager import CallManager
from gateway.call.scenario import load_scenario
from gateway.realtime.local.server import LocalProvider
from tests.support.audio import speech_like
from tests.support.memory_call import open_call
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
EXAMPLES = DOCS / "examples"
MARKER = re.compile(
    r"^<!-- runnable: (?P<kind>scenario|python)(?:, same as (?P<same>\S+))? -->\n"
    r"```python\n(?P<code>.*?)^```$",
    re.S | re.M,
)


@dataclass(frozen=True)
class Listing:
    where: str  # docs/FILE.md:LINE
    kind: str
    code: str
    same_as: str | None

    def __str__(self) -> str:
        return self.where


def runnable_listings() -> list[Listing]:
    out = []
    for doc in sorted(DOCS.glob("*.md")):
        text = doc.read_text()
        for m in MARKER.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            out.append(Listing(f"docs/{doc.name}:{line}", m["kind"], m["code"], m["same"] or None))
    return out


LISTINGS = runnable_listings()
#: examples that are servers, run end to end by their own test (which must name the file)
RUN_ELSEWHERE = {"openai_sip_app.py": ROOT / "tests/e2e_sip/test_e2e_sip_openai_app.py"}
EXAMPLE_FILES = sorted(p for p in EXAMPLES.glob("*.py") if p.name not in RUN_ELSEWHERE)


def test_the_marked_listings_are_the_expected_ones() -> None:
    # a marker that stops matching (a typo, a changed fence) must not silently run nothing
    where = [listing.where.split(":")[0] for listing in LISTINGS]
    assert where.count("docs/scenarios.md") == 4 and where.count("docs/voxengine.md") == 1, where
    markers = sum(
        len(re.findall(r"^<!-- runnable:", p.read_text(), re.M)) for p in DOCS.glob("*.md")
    )
    assert markers == len(LISTINGS), "a runnable marker not followed by a ```python listing"


def test_no_raw_include_lines_in_the_docs() -> None:
    offenders = [
        f"{p.name}:{n}"
        for p in DOCS.glob("*.md")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if line.lstrip().startswith("--8<--")
    ]
    assert not offenders, offenders


@pytest.mark.parametrize("listing", [x for x in LISTINGS if x.same_as], ids=str)
def test_listing_equals_its_example_file(listing: Listing) -> None:
    assert listing.same_as is not None
    assert listing.code == (ROOT / listing.same_as).read_text(), (
        f"{listing.where} differs from {listing.same_as}: copy the file into the listing"
    )


async def drive_scenario(path: Path) -> None:
    """Load the scenario at `path` and drive one call through it against the local provider."""
    setup = load_scenario(path)
    provider = LocalProvider(use_espeak=False, record_frames=True)
    await provider.start()
    try:
        call, m = await open_call(provider)
        with structlog.testing.capture_logs() as logs:
            task = CallManager(5).start(call, setup)
            await wait_for(lambda: bool(provider.sessions), 8.0)
            engine = provider.sessions[0]
            m.leg.say(speech_like(1.0, seed=7))
            await asyncio.sleep(1.5)
            call.leg_event(DtmfReceived("1", "rfc4733"))
            await wait_for(lambda: engine.stats.get("responses", 0) >= 1, 8.0)
            await asyncio.sleep(0.5)
            assert not task.done(), f"the call ended early: {call.outcome}"
            await call.hangup()
            await asyncio.wait_for(task, 10)
        failures = [e for e in logs if e.get("log_level") in ("error", "critical")]
        assert not failures, failures
        assert call.outcome == "completed"
        # the VoxEngine port asks for a response on every key, as the original does, so one
        # may collide with the echo in progress: the provider's refusal, not a failure
        errors = {k for k, n in engine.stats.items() if k.startswith("error:") and n}
        assert errors <= {"error:conversation_already_has_active_response"}, engine.stats
    finally:
        await provider.stop()


@pytest.mark.parametrize("listing", LISTINGS, ids=str)
async def test_runnable_listing_runs(listing: Listing, tmp_path: Path) -> None:
    path = tmp_path / "listing.py"
    path.write_text(listing.code)
    if listing.kind == "scenario":
        await drive_scenario(path)
    else:
        run_script(path)


def run_script(path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]


def test_examples_run_elsewhere_have_their_test() -> None:
    for name, test in RUN_ELSEWHERE.items():
        assert (EXAMPLES / name).is_file(), name
        assert name in test.read_text(), f"{test} does not run {name}"


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda p: p.name)
async def test_example_file_runs(example: Path) -> None:
    if re.search(r"^(async )?def setup\(", example.read_text(), re.M):
        await drive_scenario(example)
    else:
        await asyncio.to_thread(run_script, example)
