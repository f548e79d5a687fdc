// The gateway's call page: one RTCPeerConnection, non-trickle offer/answer over
// POST webrtc/offer, and an "events" data channel for DTMF, hang-up, transcript and agent state.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  status: $("status"), error: $("error"), call: $("call"), level: $("level"),
  agent: $("agent-state"), duration: $("duration"), rtt: $("rtt"), loss: $("loss"),
  transcript: $("transcript"), keypad: $("keypad"), remote: $("remote"),
};

// A token from the link (#token=... or ?token=...), then removed from the address bar.
const token = (() => {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  const fromQuery = new URLSearchParams(location.search).get("token");
  if (fromHash || fromQuery) history.replaceState(null, "", location.pathname);
  return fromHash || fromQuery || "";
})();

const GATHER_TIMEOUT_MS = 5000;
const DTMF_DIGITS = "0123456789*#";
const state = { pc: null, channel: null, stream: null, resource: null, callId: null, hangupSecret: "",
  startedAt: 0, timers: [], audioCtx: null, ending: false, events: [] };
window.gatewayCall = state; // for tests and for the curious

function setStatus(text) { ui.status.textContent = text; }
function showError(text) { ui.error.textContent = text; ui.error.hidden = !text; }

function setAgentState(value) {
  ui.agent.textContent = value;
  ui.agent.className = "badge " + value;
}

function setInCall(inCall) {
  ui.call.textContent = inCall ? "Hang up" : "Call";
  ui.call.classList.toggle("hangup", inCall);
  for (const b of ui.keypad.querySelectorAll("button")) b.disabled = !inCall;
}

function microphoneProblem(err) {
  switch (err && err.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "Microphone access was denied. Allow the microphone for this site in your browser's settings, then press Call again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No microphone was found. Connect a microphone, then press Call again.";
    case "NotReadableError":
    case "AbortError":
      return "The microphone could not be started. It may be in use by another application.";
    default:
      return "The microphone could not be opened.";
  }
}

async function serverProblem(resp) {
  let message = "", reason = "";
  try {
    const error = (await resp.json()).error || {};
    message = error.message || "";
    reason = error.reason || "";
  } catch (_) { /* not JSON */ }
  if (resp.status === 401) {
    return token
      ? "Your access link has expired or is not valid. Ask for a new link."
      : "This gateway needs an access token. Open the link you were given (it ends in #token=…).";
  }
  if (resp.status === 403) return "This page is not allowed to call the gateway from here.";
  if (reason === "provider_unavailable") return "The AI provider cannot be reached right now, so the agent cannot take calls. Please try again later.";
  if (resp.status === 503 || resp.status === 429) return "The agent is busy right now. Please try again in a minute.";
  if (resp.status === 400) return "Your browser's call setup was not accepted" + (message ? ": " + message + "." : ".");
  return "The call could not be set up (the server answered " + resp.status + ").";
}

function authHeaders() {
  return token ? { Authorization: "Bearer " + token } : {};
}

function waitForGathering(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => { clearTimeout(timer); pc.removeEventListener("icegatheringstatechange", check); resolve(); };
    const check = () => { if (pc.iceGatheringState === "complete") done(); };
    const timer = setTimeout(done, GATHER_TIMEOUT_MS); // send what we have
    pc.addEventListener("icegatheringstatechange", check);
  });
}

function startMeter(stream) {
  const Ctx = window.AudioContext || window.webkitAudioContext;
  if (!Ctx) return;
  const ctx = new Ctx();
  state.audioCtx = ctx;
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  ctx.createMediaStreamSource(stream).connect(analyser);
  const data = new Float32Array(analyser.fftSize);
  const tick = () => {
    if (state.audioCtx !== ctx) { ui.level.style.width = "0"; return; }
    analyser.getFloatTimeDomainData(data);
    let sum = 0;
    for (const v of data) sum += v * v;
    const dbfs = 10 * Math.log10(sum / data.length + 1e-12);
    const pct = Math.max(0, Math.min(100, (dbfs + 60) * (100 / 60)));
    ui.level.style.width = pct.toFixed(0) + "%";
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}

function playTones(digits) {
  const rows = { "1": 697, "2": 697, "3": 697, "4": 770, "5": 770, "6": 770, "7": 852, "8": 852,
    "9": 852, "*": 941, "0": 941, "#": 941 };
  const cols = { "1": 1209, "2": 1336, "3": 1477, "4": 1209, "5": 1336, "6": 1477, "7": 1209,
    "8": 1336, "9": 1477, "*": 1209, "0": 1336, "#": 1477 };
  const ctx = state.audioCtx;
  if (!ctx) return;
  let t = ctx.currentTime;
  for (const d of String(digits)) {
    if (!(d in rows)) continue;
    const gain = ctx.createGain();
    gain.gain.value = 0.08;
    gain.connect(ctx.destination);
    for (const f of [rows[d], cols[d]]) {
      const osc = ctx.createOscillator();
      osc.frequency.value = f;
      osc.connect(gain);
      osc.start(t);
      osc.stop(t + 0.1);
    }
    t += 0.15;
  }
}

// --- transcript: one line per conversation item, deltas appended
const lines = new Map();
function transcriptLine(role, itemId) {
  const key = role + ":" + (itemId || "");
  let li = itemId ? lines.get(key) : null;
  if (!li) {
    li = document.createElement("li");
    li.className = role === "user" ? "user" : "assistant";
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = role === "user" ? "You:" : "Agent:";
    const text = document.createElement("span");
    text.className = "text";
    li.append(who, " ", text);
    ui.transcript.append(li);
    if (itemId) lines.set(key, li);
  }
  return li.querySelector(".text");
}

function onEvent(msg) {
  state.events.push(msg);
  switch (msg.type) {
    case "call":
      state.callId = msg.call_id;
      break;
    case "state":
      if (typeof msg.state === "string") setAgentState(msg.state);
      break;
    case "transcript": {
      const span = transcriptLine(msg.role, msg.item_id);
      if (typeof msg.text === "string") span.textContent = msg.text;
      else if (typeof msg.delta === "string") span.textContent += msg.delta;
      ui.transcript.scrollTop = ui.transcript.scrollHeight;
      break;
    }
    case "dtmf":
      playTones(msg.digits || "");
      break;
    case "ended":
      endCall("The call has ended.", { ended: true });
      break;
    default:
      break; // unknown events are ignored: newer gateways may send more
  }
}

async function updateStats() {
  const pc = state.pc;
  if (!pc) return;
  ui.duration.textContent = formatDuration((Date.now() - state.startedAt) / 1000);
  let rtt = null, lost = 0, received = 0;
  const stats = await pc.getStats();
  stats.forEach((s) => {
    if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded" && s.currentRoundTripTime !== undefined) rtt = s.currentRoundTripTime;
    if (s.type === "remote-inbound-rtp" && s.roundTripTime !== undefined && rtt === null) rtt = s.roundTripTime;
    if (s.type === "inbound-rtp" && s.kind === "audio") { lost += s.packetsLost || 0; received += s.packetsReceived || 0; }
  });
  ui.rtt.textContent = rtt === null ? "–" : Math.round(rtt * 1000) + " ms";
  ui.loss.textContent = received + lost > 0 ? ((100 * lost) / (received + lost)).toFixed(1) + " %" : "–";
}

function formatDuration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  return Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
}

async function startCall() {
  showError("");
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("The microphone only works on a secure page. Open this page over https://, or on this computer at http://localhost.");
    return;
  }
  ui.call.disabled = true;
  setStatus("Asking for the microphone…");
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true }, video: false,
    });
  } catch (err) {
    showError(microphoneProblem(err));
    setStatus("Ready to call.");
    ui.call.disabled = false;
    return;
  }
  state.ending = false;
  startMeter(state.stream);
  setStatus("Connecting…");
  try {
    await connect();
  } catch (err) {
    endCall("");
    showError(err && err.userMessage ? err.userMessage : "The call could not be connected. Check your network and try again.");
    ui.call.disabled = false;
    return;
  }
  ui.call.disabled = false;
}

async function connect() {
  const pc = new RTCPeerConnection({ iceServers: [] });
  state.pc = pc;
  for (const track of state.stream.getAudioTracks()) pc.addTransceiver(track, { direction: "sendrecv", streams: [state.stream] });
  const channel = pc.createDataChannel("events");
  state.channel = channel;
  channel.onclose = () => { if (state.channel === channel && !state.ending) endCall("The call has ended.", { ended: true }); };
  channel.onmessage = (e) => { try { onEvent(JSON.parse(e.data)); } catch (_) { /* not JSON: ignore */ } };
  pc.ontrack = (e) => {
    ui.remote.srcObject = e.streams[0] || new MediaStream([e.track]);
    ui.remote.play().catch(() => { /* autoplay refused: the Call click usually allows it */ });
  };
  pc.onconnectionstatechange = () => {
    const s = pc.connectionState;
    if (s === "connected") {
      setStatus("Connected.");
      setAgentState("listening");
      if (!state.startedAt) {
        state.startedAt = Date.now();
        state.timers.push(setInterval(updateStats, 1000));
      }
    } else if (s === "failed") {
      endCall("", { ended: true });
      showError("The connection to the agent was lost. Your network may block the audio; try again or use another network.");
    } else if (s === "disconnected") {
      setStatus("Connection interrupted, trying to recover…");
    }
  };
  await pc.setLocalDescription(await pc.createOffer());
  await waitForGathering(pc);
  let resp;
  try {
    resp = await fetch("webrtc/offer", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...authHeaders() },
      body: JSON.stringify({ sdp: pc.localDescription.sdp, type: "offer" }),
    });
  } catch (_) {
    throw Object.assign(new Error("network"), { userMessage: "The gateway could not be reached. Check your network and try again." });
  }
  if (!resp.ok) throw Object.assign(new Error("refused"), { userMessage: await serverProblem(resp) });
  const answer = await resp.json();
  state.resource = String(answer.resource || "").replace(/^\//, "");
  state.callId = answer.call_id;
  state.hangupSecret = String(answer.hangup_secret || "");
  setInCall(true);
  await pc.setRemoteDescription({ type: "answer", sdp: answer.sdp });
}

// ended: the gateway ended the call (nothing to tell it). beacon: the page is going away, so
// the hang-up goes as a beacon (no headers: the call's hang-up secret is its body).
function endCall(statusText, { ended = false, beacon = false } = {}) {
  if (state.ending) return;
  state.ending = true;
  const { pc, channel, resource, hangupSecret } = state;
  const beaconSent = !ended && beacon && resource && hangupSecret && navigator.sendBeacon &&
    navigator.sendBeacon(resource + "/beacon", hangupSecret);
  if (!ended && !beaconSent && channel && channel.readyState === "open") {
    try { channel.send(JSON.stringify({ type: "hangup" })); } catch (_) { /* closing anyway */ }
  }
  if (!ended && !beaconSent && resource) {
    // the gateway answers 204 if the hang-up message above got there first
    fetch(resource, { method: "DELETE", headers: authHeaders(), keepalive: true }).catch(() => {});
  }
  for (const t of state.timers) clearInterval(t);
  state.timers = [];
  if (pc) pc.close();
  if (state.stream) for (const t of state.stream.getTracks()) t.stop();
  if (state.audioCtx) state.audioCtx.close().catch(() => {});
  Object.assign(state, { pc: null, channel: null, stream: null, resource: null, hangupSecret: "", startedAt: 0, audioCtx: null });
  ui.remote.srcObject = null;
  setInCall(false);
  setAgentState("idle");
  setStatus(statusText || "Ready to call.");
}

ui.call.addEventListener("click", () => {
  if (state.pc) endCall("Call ended.");
  else startCall();
});

ui.keypad.addEventListener("click", (e) => {
  const digit = e.target && e.target.dataset ? e.target.dataset.digit : undefined;
  if (!digit || !DTMF_DIGITS.includes(digit) || !state.channel || state.channel.readyState !== "open") return;
  state.channel.send(JSON.stringify({ type: "dtmf", digit }));
  playTones(digit);
});

window.addEventListener("pagehide", () => { if (state.pc) endCall("", { beacon: true }); });
setInCall(false);
