// pedsam live page: send the camera over WebRTC, show the masked video that comes back,
// turn clicks into objects over a data channel, and show the objects and live figures.
"use strict";

const video = document.getElementById("video");
const statusLine = document.getElementById("status");
const list = document.getElementById("objects");
const empty = document.getElementById("empty");
let channel = null;

function setStatus(text, isError) {
  statusLine.textContent = text;
  statusLine.className = isError ? "error" : "";
}

function seconds(value) {
  return value === null || value === undefined ? "-" : (value * 1000).toFixed(0) + " ms";
}

function send(message) {
  if (channel && channel.readyState === "open") channel.send(JSON.stringify(message));
}

function showState(state) {
  list.replaceChildren(...state.objects.map((obj) => {
    const item = document.createElement("li");
    item.dataset.id = obj.id;
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = obj.colour;
    const label = document.createElement("span");
    const score = obj.score === null ? "" : " score " + obj.score.toFixed(2);
    const area = obj.area === null ? "" : ", " + obj.area + " px";
    label.textContent = "#" + obj.id + score + area;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.textContent = "remove";
    remove.addEventListener("click", () => send({ type: "remove", id: obj.id }));
    item.append(swatch, label, remove);
    return item;
  }));
  empty.hidden = state.objects.length > 0;
  const s = state.stats;
  document.getElementById("stat-processed").textContent = s.frames;
  document.getElementById("stat-segmented").textContent = s.frames_segmented;
  document.getElementById("stat-dropped").textContent = s.frames_dropped;
  document.getElementById("stat-fps").textContent = s.recent_fps.toFixed(1);
  document.getElementById("stat-p50").textContent = seconds(s.latency_p50_s);
  document.getElementById("stat-p95").textContent = seconds(s.latency_p95_s);
}

// The click's position in the video's own pixels (the frame the server processed), allowing
// for the letterboxing of object-fit: contain.
function framePoint(event) {
  const rect = video.getBoundingClientRect();
  const scale = Math.min(rect.width / video.videoWidth, rect.height / video.videoHeight);
  const left = rect.left + (rect.width - video.videoWidth * scale) / 2;
  const top = rect.top + (rect.height - video.videoHeight * scale) / 2;
  return { x: (event.clientX - left) / scale, y: (event.clientY - top) / scale };
}

video.addEventListener("click", (event) => {
  if (!video.videoWidth) return;
  const p = framePoint(event);
  if (p.x < 0 || p.y < 0 || p.x >= video.videoWidth || p.y >= video.videoHeight) return;
  send({ type: "click", x: p.x, y: p.y });
});
document.getElementById("clear").addEventListener("click", () => send({ type: "clear" }));

function iceComplete(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") resolve();
    });
  });
}

// The access token the server printed with the page's address, carried on to its requests.
const token = new URLSearchParams(window.location.search).get("token");
const withToken = (path) => (token ? path + "?token=" + encodeURIComponent(token) : path);

async function start() {
  const reply0 = await fetch(withToken("config"));
  const config = await reply0.json();
  if (!reply0.ok) throw new Error(config.error);
  if (config.notice) {
    const notice = document.getElementById("notice");
    notice.textContent = "Note: " + config.notice + ".";
    notice.hidden = false;
  }
  const camera = await navigator.mediaDevices.getUserMedia({
    video: { width: 640, height: 480 }, audio: false,
  });
  const pc = new RTCPeerConnection({ iceServers: config.iceServers });
  for (const track of camera.getVideoTracks()) pc.addTrack(track, camera);
  pc.addEventListener("track", (event) => {
    video.srcObject = event.streams[0] || new MediaStream([event.track]);
  });
  pc.addEventListener("connectionstatechange", () => {
    const failed = pc.connectionState === "failed" || pc.connectionState === "closed";
    setStatus("connection " + pc.connectionState, failed);
  });
  channel = pc.createDataChannel("control");
  channel.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "state") showState(message);
    else if (message.type === "error") setStatus(message.message, true);
  });
  setStatus("connecting to " + config.workers + "-worker server (" + config.model + ")...");
  await pc.setLocalDescription(await pc.createOffer());
  await iceComplete(pc);  // the server takes the offer with all its candidates
  const reply = await fetch(withToken("offer"), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
  });
  const answer = await reply.json();
  if (!reply.ok) throw new Error(answer.error);
  await pc.setRemoteDescription(answer);
}

start().catch((error) => setStatus("error: " + error.message, true));
