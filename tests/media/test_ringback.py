"""The ringback cadence the SIP leg plays as early media (gateway/legs/sip/ringback.py)."""

from __future__ import annotations

import numpy as np
import pytest
import telcodecs

from gateway.legs.sip.ringback import RINGBACK_OFF_MS, RINGBACK_ON_MS, ringback_frames
from gateway.media.convert import decode
from gateway.media.format import PCMA_8K, PCMU_8K
from tests.support.audio import tone_share


@pytest.mark.parametrize("codec", ["pcmu", "pcma"])
@pytest.mark.parametrize("frame_ms", [20, 30])
def test_two_seconds_of_440_and_480_hz_then_four_of_silence(codec: str, frame_ms: int) -> None:
    frames = ringback_frames(codec, frame_ms)
    assert {len(f) for f in frames} == {8 * frame_ms}
    pcm = decode(b"".join(frames), PCMA_8K if codec == "pcma" else PCMU_8K)
    assert len(pcm) == 8 * (RINGBACK_ON_MS + RINGBACK_OFF_MS) // frame_ms * frame_ms
    on, off = pcm[100 : 8 * RINGBACK_ON_MS - 100], pcm[8 * RINGBACK_ON_MS + 100 :]
    assert tone_share(on, (440.0, 480.0)) > 0.99
    assert -22 < telcodecs.rms_dbfs(on) < -12
    assert np.max(np.abs(off.astype(np.int32))) < 16  # G.711 silence
