"use strict";
// The calls console: live calls (server-sent events), the history and one call's detail.
// Reads the same HTTP API as scripts, with the token from the link (#token=...).

const token = (() => {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) history.replaceState(null, "", location.pathname);
  return fromHash || "";
})();
const $ = (id) => document.getElementById(id);
const state = { live: [], history: [], detail: null, error: "", streaming: false };
window.gatewayConsole = state; // for tests and for the curious

function authHeaders() { return token ? { Authorization: "Bearer " + token } : {}; }
function showError(text) { state.error = text; $("error").textContent = text; $("error").hidden = !text; }
function setStatus(text) { $("status").textContent = text; }

async function api(path, options = {}) {
  const resp = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if (resp.status === 401) {
    throw new Error(token
      ? "The token in the link was refused (401)."
      : "This console needs the API token. Open the link you were given (it ends in #token=…).");
  }
  if (!resp.ok) {
    let message = resp.statusText;
    try { message = (await resp.json()).error?.message || message; } catch (_) { /* not JSON */ }
    throw new Error(`${path}: ${resp.status} ${message}`);
  }
  return resp;
}

function cell(row, text) {
  const td = document.createElement("td");
  td.textContent = text == null ? "–" : String(text);
  row.appendChild(td);
  return td;
}
function seconds(s) {
  if (s == null) return "–";
  const t = Math.round(s);
  return `${Math.floor(t / 60)}:${String(t % 60).padStart(2, "0")}`;
}
function ms(v) { return v == null ? "–" : `${v} ms`; }
function db(v) { return v == null ? "silent" : `${v} dBFS`; }
function when(unix) { return unix ? new Date(unix * 1000).toLocaleTimeString() : "–"; }

// --- live calls: pushed by the server (text/event-stream over fetch, so the token rides in a header)

function renderLive() {
  const body = $("live").querySelector("tbody");
  body.replaceChildren();
  for (const c of state.live) {
    const row = document.createElement("tr");
    row.dataset.callId = c.id;
    const m = c.media || {};
    [c.id, c.leg, c.direction, c.caller, c.called, c.provider, c.state, seconds(c.duration_s),
      db(c.level_in_dbfs), db(c.level_out_dbfs), m.rtp_lost, m.jitter_ms == null ? null : `${m.jitter_ms} ms`]
      .forEach((v) => cell(row, v));
    const hang = document.createElement("button");
    hang.textContent = "Hang up";
    hang.className = "hangup";
    hang.addEventListener("click", () => hangUp(c.id));
    row.appendChild(document.createElement("td")).appendChild(hang);
    body.appendChild(row);
  }
  if (!state.live.length) {
    const row = document.createElement("tr");
    cell(row, "No live calls.").colSpan = 13;
    body.appendChild(row);
  }
}

async function streamLive() {
  for (;;) {
    try {
      const resp = await api("/live-calls");
      state.streaming = true;
      setStatus("Connected: live calls are pushed by the gateway.");
      const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const message = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = message.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5)).join("\n");
          if (!data) continue;
          const before = new Set(state.live.map((c) => c.id));
          state.live = JSON.parse(data).calls;
          renderLive();
          const now = new Set(state.live.map((c) => c.id));
          if ([...before].some((id) => !now.has(id))) loadHistory(); // a call ended
        }
      }
    } catch (err) {
      state.streaming = false;
      showError(err.message);
      if (err.message.includes("401")) { setStatus("Not authorised."); return; }
    }
    state.streaming = false;
    setStatus("Reconnecting…");
    await new Promise((r) => setTimeout(r, 2000));
  }
}

async function hangUp(id) {
  try { await api(`/calls/${encodeURIComponent(id)}`, { method: "DELETE" }); }
  catch (err) { showError(err.message); }
}

async function drain() {
  if (!confirm("Drain the gateway? It takes no new calls and stops when the live ones end.")) return;
  try { await api("/admin/drain", { method: "POST" }); setStatus("Draining."); }
  catch (err) { showError(err.message); }
}

// --- history and one call's detail

async function loadHistory() {
  try {
    state.history = (await (await api("/history?limit=50")).json()).calls;
  } catch (err) { showError(err.message); return; }
  const body = $("history").querySelector("tbody");
  body.replaceChildren();
  for (const c of state.history) {
    const row = document.createElement("tr");
    row.dataset.callId = c.id;
    [when(c.ended_at), c.id, c.leg, c.caller, c.called, c.outcome, seconds(c.duration_s)]
      .forEach((v) => cell(row, v));
    row.addEventListener("click", () => showCall(c.id));
    body.appendChild(row);
  }
}

async function showCall(id) {
  let call;
  try { call = await (await api(`/history/${encodeURIComponent(id)}`)).json(); }
  catch (err) { showError(err.message); return; }
  state.detail = call;
  document.querySelectorAll("#history tbody tr").forEach((r) => r.classList.toggle("selected", r.dataset.callId === id));
  $("detail").hidden = false;
  $("detail-id").textContent = call.id;
  $("detail-facts").textContent =
    `${call.direction} ${call.leg} call from ${call.caller || "?"} to ${call.called || "?"} via ` +
    `${call.provider} ${call.model}; ${call.outcome} after ${seconds(call.duration_s)}`;
  const d = call.detail || {};
  const lat = d.latency || {};
  const med = lat.median || {};
  const rows = [
    ["Caller stops speaking → provider speech_stopped", ms(med.vad_ms)],
    ["speech_stopped → first audio delta (the model)", ms(med.model_ms)],
    ["First audio delta → first packet to the caller (the gateway)", ms(med.gateway_ms)],
    ["speech_stopped → first packet to the caller", ms(med.total_ms)],
    ["Barge-in reaction", (lat.barge_in_reaction_ms || []).map((v) => `${v} ms`).join(", ") || "–"],
    ["Gateway processing per message to the model", ms(lat.processing_to_model_ms)],
    ["Gateway processing per delta to the caller", ms(lat.processing_to_caller_ms)],
    ["Answered turns", (lat.turns || []).length],
  ];
  const latency = $("latency").querySelector("tbody");
  latency.replaceChildren();
  for (const [name, value] of rows) {
    const row = document.createElement("tr");
    cell(row, name); cell(row, value).className = "figure";
    latency.appendChild(row);
  }
  const transcript = $("transcript");
  transcript.replaceChildren();
  for (const t of d.transcript || []) {
    const li = document.createElement("li");
    li.className = t.role;
    const role = document.createElement("span");
    role.className = "role";
    role.textContent = t.role === "user" ? "Caller" : "Agent";
    li.append(role, t.text);
    transcript.appendChild(li);
  }
  const tools = $("tools").querySelector("tbody");
  tools.replaceChildren();
  for (const t of d.tool_calls || []) {
    const row = document.createElement("tr");
    cell(row, t.name);
    const args = cell(row, ""); args.replaceChildren(Object.assign(document.createElement("pre"), { textContent: t.arguments }));
    const out = cell(row, ""); out.replaceChildren(Object.assign(document.createElement("pre"), { textContent: typeof t.output === "string" ? t.output : JSON.stringify(t.output) }));
    cell(row, t.outcome); cell(row, ms(t.elapsed_ms));
    tools.appendChild(row);
  }
  const errors = $("errors");
  errors.replaceChildren();
  for (const e of d.errors || []) {
    const li = document.createElement("li");
    li.textContent = `${e.source}: ${e.code ? e.code + ": " : ""}${e.message}`;
    errors.appendChild(li);
  }
  if (!(d.errors || []).length) errors.appendChild(Object.assign(document.createElement("li"), { textContent: "None." }));
  await showRecording(call);
}

async function showRecording(call) {
  const audio = $("recording-audio");
  const link = $("recording-download");
  if (audio.src.startsWith("blob:")) URL.revokeObjectURL(audio.src);
  audio.removeAttribute("src");
  $("recording").hidden = !call.recording;
  $("recording-none").hidden = !!call.recording;
  if (!call.recording) return;
  try {
    // <audio> cannot send the bearer token: fetch the WAV, then play and offer it as a blob
    const blob = await (await api(call.recording)).blob();
    const url = URL.createObjectURL(blob);
    audio.src = url;
    link.href = url;
    link.download = `${call.id}.wav`;
  } catch (err) { showError(err.message); }
}

$("drain").addEventListener("click", drain);
loadHistory();
streamLive();
