"""G.711: bit-exact with the reference codec (audioop), batching, transcoding, bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import telcodecs
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from telcodecs import (
    ALAW_SILENCE,
    ULAW_SILENCE,
    alaw_decode,
    alaw_encode,
    alaw_encode_array,
    alaw_to_ulaw,
    g711_gain_table,
    g711_silence,
    g711_silence_code,
    ulaw_decode,
    ulaw_encode,
    ulaw_encode_array,
    ulaw_to_alaw,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # the reference codec; audioop-lts provides it on Python >= 3.13

ALL_SAMPLES = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))


def test_ulaw_encode_is_bit_exact_for_every_int16() -> None:
    expected = audioop.lin2ulaw(ALL_SAMPLES.tobytes(), 2)
    assert ulaw_encode(ALL_SAMPLES) == expected
    assert ulaw_encode(ALL_SAMPLES.tobytes()) == expected  # PCM16 bytes in


def test_alaw_encode_is_bit_exact_for_every_int16() -> None:
    expected = audioop.lin2alaw(ALL_SAMPLES.tobytes(), 2)
    assert alaw_encode(ALL_SAMPLES) == expected
    assert alaw_encode(bytearray(ALL_SAMPLES.tobytes())) == expected


def test_ulaw_decode_is_bit_exact_for_every_code() -> None:
    out = ulaw_decode(ALL_CODES)
    assert out.dtype == np.int16 and out.shape == (256,)
    assert out.tobytes() == audioop.ulaw2lin(ALL_CODES, 2)


def test_alaw_decode_is_bit_exact_for_every_code() -> None:
    out = alaw_decode(ALL_CODES)
    assert out.dtype == np.int16 and out.shape == (256,)
    assert out.tobytes() == audioop.alaw2lin(ALL_CODES, 2)


def test_decode_accepts_every_bytes_like_form() -> None:
    expected = ulaw_decode(ALL_CODES)
    for form in (
        bytearray(ALL_CODES),
        memoryview(ALL_CODES),
        np.frombuffer(ALL_CODES, dtype=np.uint8),
    ):
        np.testing.assert_array_equal(ulaw_decode(form), expected)
    np.testing.assert_array_equal(alaw_decode(memoryview(ALL_CODES)), alaw_decode(ALL_CODES))


def test_encode_handles_non_contiguous_arrays() -> None:
    strided = ALL_SAMPLES[::3]
    assert not strided.flags.c_contiguous
    assert ulaw_encode(strided) == audioop.lin2ulaw(strided.tobytes(), 2)
    assert alaw_encode(strided) == audioop.lin2alaw(strided.tobytes(), 2)


def test_transcoding_tables_match_decode_then_encode() -> None:
    assert ulaw_to_alaw(ALL_CODES) == audioop.lin2alaw(audioop.ulaw2lin(ALL_CODES, 2), 2)
    assert alaw_to_ulaw(ALL_CODES) == audioop.lin2ulaw(audioop.alaw2lin(ALL_CODES, 2), 2)
    assert ulaw_to_alaw(ALL_CODES) == alaw_encode(ulaw_decode(ALL_CODES))
    # The array and memoryview forms give the same bytes as the bytes.translate fast path.
    arr = np.frombuffer(ALL_CODES, dtype=np.uint8)
    assert ulaw_to_alaw(arr) == ulaw_to_alaw(memoryview(ALL_CODES)) == ulaw_to_alaw(ALL_CODES)
    assert alaw_to_ulaw(arr) == alaw_to_ulaw(ALL_CODES)


def test_transcoding_round_trip_stays_close() -> None:
    # µ-law -> A-law -> µ-law changes a code by at most one quantisation step.
    back = ulaw_decode(alaw_to_ulaw(ulaw_to_alaw(ALL_CODES))).astype(np.int64)
    orig = ulaw_decode(ALL_CODES).astype(np.int64)
    assert np.all(np.abs(back - orig) <= np.abs(orig) // 16 + 16)


def test_silence_constants() -> None:
    assert ULAW_SILENCE == 0xFF and ALAW_SILENCE == 0xD5
    assert ulaw_decode(bytes([ULAW_SILENCE]))[0] == 0
    assert alaw_decode(bytes([ALAW_SILENCE]))[0] == 8
    zeros = np.zeros(160, dtype=np.int16)
    assert ulaw_encode(zeros) == g711_silence("ulaw", 160) == b"\xff" * 160
    assert alaw_encode(zeros) == g711_silence("alaw", 160) == b"\xd5" * 160
    assert g711_silence("pcmu", 3) == b"\xff\xff\xff"
    assert g711_silence("pcma", 0) == b""
    assert g711_silence_code("pcmu") == g711_silence_code("ulaw") == ULAW_SILENCE
    assert g711_silence_code("pcma") == g711_silence_code("alaw") == ALAW_SILENCE


@pytest.mark.parametrize("bad", ["opus", "ULAW", "", None, 0])
def test_silence_rejects_unknown_codec(bad: object) -> None:
    with pytest.raises(ValueError, match="codec"):
        g711_silence(bad, 160)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="codec"):
        g711_silence_code(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="codec"):
        g711_gain_table(bad, 0.5)  # type: ignore[arg-type]


def test_gain_table_scales_decoded_values() -> None:
    for codec, decode in (("pcmu", ulaw_decode), ("pcma", alaw_decode)):
        table = g711_gain_table(codec, 0.5)
        codes = bytes(range(256))
        before = decode(codes).astype(np.float64)
        after = decode(codes.translate(table)).astype(np.float64)
        loud = np.abs(before) > 1000
        assert np.allclose(after[loud] / before[loud], 0.5, atol=0.07)


def test_gain_table_picks_the_nearest_code() -> None:
    for codec, decode in (("ulaw", ulaw_decode), ("alaw", alaw_decode)):
        values = decode(bytes(range(256))).astype(np.float64)
        for gain in (0.8, 0.25, 1.0):
            table = g711_gain_table(codec, gain)
            got = decode(bytes(range(256)).translate(table)).astype(np.float64)
            error = np.abs(got - values * gain)
            nearest = np.min(np.abs(values[None, :] - (values * gain)[:, None]), axis=1)
            assert np.array_equal(error, nearest)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_silence_rejects_bad_count(bad: object) -> None:
    with pytest.raises(ValueError, match="nsamples"):
        g711_silence("ulaw", bad)  # type: ignore[arg-type]


def test_batched_2d_encode_and_decode_match_per_call() -> None:
    rng = np.random.default_rng(7)
    batch = rng.integers(-32768, 32768, size=(50, 160)).astype(np.int16)
    for enc_arr, enc, dec in (
        (ulaw_encode_array, ulaw_encode, ulaw_decode),
        (alaw_encode_array, alaw_encode, alaw_decode),
    ):
        codes = enc_arr(batch)
        assert codes.shape == (50, 160) and codes.dtype == np.uint8
        for i in (0, 17, 49):
            assert codes[i].tobytes() == enc(batch[i])
        # The bytes form of a batch is the rows back to back.
        assert enc(batch) == b"".join(enc(row) for row in batch)
        pcm = dec(codes)
        assert pcm.shape == (50, 160) and pcm.dtype == np.int16
        for i in (0, 17, 49):
            np.testing.assert_array_equal(pcm[i], dec(codes[i].tobytes()))


def test_empty_input() -> None:
    empty = np.zeros(0, dtype=np.int16)
    assert ulaw_encode(empty) == b"" and alaw_encode(b"") == b""
    assert ulaw_decode(b"").shape == (0,) and alaw_decode(b"").dtype == np.int16
    assert ulaw_to_alaw(b"") == b""


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(160, dtype=np.float32),
        np.zeros(160, dtype=np.float64),
        np.zeros(160, dtype=np.int32),
        np.zeros(160, dtype=np.uint16),
        np.zeros(160, dtype=">i2"),
        np.zeros((2, 3, 4), dtype=np.int16),
        np.int16(5),
        [0, 1, 2],
        "abc",
    ],
    ids=["float32", "float64", "int32", "uint16", "big-endian", "3-D", "0-D", "list", "str"],
)
def test_encoders_reject_bad_pcm(bad: object) -> None:
    for enc in (ulaw_encode, alaw_encode, ulaw_encode_array, alaw_encode_array):
        with pytest.raises(ValueError, match=r"int16|array|dtype|-D"):
            enc(bad)  # type: ignore[arg-type]


def test_encoders_reject_odd_byte_count() -> None:
    with pytest.raises(ValueError, match="even byte count"):
        ulaw_encode(b"\x00\x01\x02")
    with pytest.raises(ValueError, match="even byte count"):
        alaw_encode(bytearray(161))


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros(160, dtype=np.int8),
        np.zeros(160, dtype=np.int16),
        np.zeros((2, 3, 4), dtype=np.uint8),
        [255, 255],
        "\xff\xff",
    ],
    ids=["int8", "int16", "3-D", "list", "str"],
)
def test_decoders_reject_bad_codes(bad: object) -> None:
    for dec in (ulaw_decode, alaw_decode):
        with pytest.raises(ValueError, match=r"uint8|bytes|-D"):
            dec(bad)  # type: ignore[arg-type]


def test_transcoders_reject_2d_and_wrong_dtype() -> None:
    with pytest.raises(ValueError, match="1-D"):
        ulaw_to_alaw(np.zeros((2, 80), dtype=np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        alaw_to_ulaw(np.zeros(80, dtype=np.int16))


def test_pcm16_from_bytes() -> None:
    pcm = telcodecs.pcm16_from_bytes(b"\x01\x00\xff\xff")
    assert pcm.dtype == np.int16
    assert pcm.tolist() == [1, -1]
    with pytest.raises(ValueError, match="even byte count"):
        telcodecs.pcm16_from_bytes(b"\x01")


@settings(max_examples=60, deadline=None)
@given(
    pcm=arrays(
        np.int16,
        st.tuples(st.integers(1, 4), st.integers(0, 400)),
        elements=st.integers(-32768, 32767),
    )
)
def test_round_trip_error_is_within_g711_quantisation(pcm: np.ndarray) -> None:
    x = pcm.astype(np.int64)
    for enc, dec in ((ulaw_encode_array, ulaw_decode), (alaw_encode_array, alaw_decode)):
        y = dec(enc(pcm)).astype(np.int64)
        assert y.shape == x.shape
        # Five significant bits: the error is at most 1/32 of the magnitude plus the
        # smallest step.
        assert np.all(np.abs(y - x) <= np.abs(x) / 32 + 8)


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=600))
def test_decode_encode_is_idempotent_on_codes(data: bytes) -> None:
    # Re-encoding decoded values reproduces the same sample values (codes may only differ
    # where two codes decode to the same value, as µ-law 0x7F/0xFF do).
    for enc, dec in ((ulaw_encode, ulaw_decode), (alaw_encode, alaw_decode)):
        once = dec(data)
        np.testing.assert_array_equal(dec(enc(once)), once)
