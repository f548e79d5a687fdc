"""A pure-Python WebRTC client (aiortc) against the gateway's routes on loopback: signalling in
both body forms, audio both ways checked by cross-correlation, DTMF and hang-up by data channel,
DELETE on the resource."""

from __future__ import annotations

import json

import aiohttp
import numpy as np
import structlog
from aiortc import RTCSessionDescription

from gateway.media.port import MediaStarted
from tests.support.audio import best_abs_correlation, chirp, find_correlation
from tests.support.waiting import wait_for
from tests.support.webrtc import Client, gateway_server


async def test_audio_both_ways_json_offer_and_datachannel() -> None:
    reference = chirp(1.0)
    # 0.3 s silence, the chirp, then silence while the echo comes back
    pcm = np.concatenate([np.zeros(14400, np.int16), reference, np.zeros(96000, np.int16)])
    async with gateway_server() as gw:
        client = Client(pcm)
        try:
            offer = await client.offer_sdp()
            async with aiohttp.ClientSession() as http:
                resp = await http.post(
                    gw.base_url + "/webrtc/offer", json={"sdp": offer, "type": "offer"}
                )
                assert resp.status == 201, await resp.text()
                body = await resp.json()
            assert body["type"] == "answer"
            assert body["call_id"] == "call-1"
            assert resp.headers["Location"] == body["resource"] == "/webrtc/calls/call-1"
            assert "opus/48000" in body["sdp"]
            assert "127.0.0.1" in body["sdp"]
            await client.pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "answer"))
            sink = gw.sinks["call-1"]
            assert gw.infos[0].credential == "loopback"
            assert gw.infos[0].codec == "opus"

            # caller → gateway: the chirp arrives in the sink, recognisably
            # (correlating a growing buffer is heavy: poll it slowly so the media keeps its pace
            # on a loaded machine)
            await wait_for(
                lambda: best_abs_correlation(sink.received_pcm(), reference) > 0.8,
                15.0,
                every=0.4,
            )
            assert any(isinstance(e, MediaStarted) for e in sink.events)
            # gateway → caller: the echo of the chirp comes back. Checked piece by piece, in
            # order: aiortc's receiver drops a frame here and there when three test workers
            # share two cores, which breaks a whole-chirp correlation (seen 0.51) but not eight
            # 125 ms pieces, each of which a chirp matches nowhere but at its own place
            pieces = np.array_split(reference, 8)

            def echo_found() -> bool:
                heard = client.heard_pcm()
                found = [find_correlation(heard, piece) for piece in pieces]
                starts = [at for at, score in found if score > 0.8]  # those found well
                return len(starts) >= 7 and starts == sorted(starts)

            try:
                await wait_for(echo_found, 20.0, every=0.4)
            except AssertionError:
                heard = client.heard_pcm()
                found = [find_correlation(heard, piece) for piece in pieces]
                raise AssertionError(f"no echo of the chirp: pieces found {found}") from None

            # the page learns its call id; DTMF goes the other way
            await wait_for(
                lambda: {"type": "call", "call_id": "call-1"} in client.page_events, 5.0, every=0.05
            )
            client.channel.send(json.dumps({"type": "dtmf", "digit": "5"}))
            client.channel.send(json.dumps({"type": "dtmf", "digit": "x"}))  # ignored
            client.channel.send(json.dumps({"type": "dtmf", "digit": "#"}))
            await sink.wait_for(lambda: sink.digits() == "5#", 5.0)
            gw.legs["call-1"].send_dtmf("12")
            await wait_for(
                lambda: {"type": "dtmf", "digits": "12"} in client.page_events, 5.0, every=0.05
            )

            # hang up from the page
            client.channel.send(json.dumps({"type": "hangup"}))
            await sink.wait_for(lambda: sink.ended() == ["remote_hangup"], 5.0)
            assert "call-1" not in gw.service.calls
        finally:
            await client.close()


async def test_silence_is_not_mistaken_for_the_signal() -> None:
    # the same measurement on a call where the caller sends nothing must stay low
    async with gateway_server() as gw:
        client = Client(np.zeros(48000, np.int16))
        try:
            offer = await client.offer_sdp()
            async with aiohttp.ClientSession() as http:
                resp = await http.post(
                    gw.base_url + "/webrtc/offer",
                    data=offer,
                    headers={"Content-Type": "application/sdp"},
                )
                assert resp.status == 201
                assert resp.headers["Content-Type"].startswith("application/sdp")
                answer = await resp.text()
            await client.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            sink = gw.sinks["call-1"]
            await wait_for(lambda: len(sink.received) >= 48000 * 2, 8.0, every=0.05)
            assert best_abs_correlation(sink.received_pcm(), chirp(1.0)) < 0.3

            # DELETE on the resource ends the call and frees the leg
            async with aiohttp.ClientSession() as http:
                resp = await http.delete(gw.base_url + "/webrtc/calls/call-1")
                assert resp.status == 200
                # idempotent: a second hang-up of the ended call is 204, not a 404
                resp = await http.delete(gw.base_url + "/webrtc/calls/call-1")
                assert resp.status == 204
            leg = gw.legs["call-1"]
            assert leg.connection_state == "closed"
            assert not leg._tasks
        finally:
            await client.close()


async def test_pcmu_only_client_gets_pcmu_and_audio_flows() -> None:
    reference = chirp(1.0, 300.0, 3000.0)
    pcm = np.concatenate([np.zeros(14400, np.int16), reference, np.zeros(48000, np.int16)])
    async with gateway_server() as gw:
        client = Client(pcm)
        try:
            for transceiver in client.pc.getTransceivers():
                from aiortc import RTCRtpSender

                caps = RTCRtpSender.getCapabilities("audio").codecs
                transceiver.setCodecPreferences([c for c in caps if c.mimeType == "audio/PCMU"])
            offer = await client.offer_sdp()
            async with aiohttp.ClientSession() as http:
                resp = await http.post(
                    gw.base_url + "/webrtc/offer", json={"sdp": offer, "type": "offer"}
                )
                body = await resp.json()
            assert resp.status == 201, body
            assert gw.infos[0].codec == "pcmu"
            await client.pc.setRemoteDescription(RTCSessionDescription(body["sdp"], "answer"))
            sink = gw.sinks["call-1"]
            # 8 kHz G.711 is resampled to the leg's 48 kHz: the chirp (below 3.4 kHz) survives
            await wait_for(
                lambda: best_abs_correlation(sink.received_pcm(), reference) > 0.7, 8.0, every=0.05
            )
        finally:
            await client.close()


async def test_client_that_never_connects_ends_as_ice_failed() -> None:
    async with gateway_server(connect_timeout=0.5) as gw:
        client = Client(np.zeros(4800, np.int16))
        try:
            offer = await client.offer_sdp()
            async with aiohttp.ClientSession() as http:
                resp = await http.post(
                    gw.base_url + "/webrtc/offer", json={"sdp": offer, "type": "offer"}
                )
                assert resp.status == 201
            # the client drops the answer: ICE never starts on its side
            sink = gw.sinks["call-1"]
            with structlog.testing.capture_logs() as logs:
                await sink.wait_for(lambda: sink.ended() == ["ice_failed"], 5.0)
            # the set-up failure is logged, with the call it belonged to
            failed = [e for e in logs if e["event"] == "webrtc_connect_failed"]
            assert [(e["call_id"], e["reason"]) for e in failed] == [("call-1", "ice_timeout")]
            await wait_for(lambda: gw.legs["call-1"].connection_state == "closed", 5.0, every=0.05)
            assert not gw.service.calls
        finally:
            await client.close()
