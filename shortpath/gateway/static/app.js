// shortpath web client: the gateway's WebSocket for control and signalling, a WebRTC
// peer connection to the host for the session (docs/browser.md). No inline script
// anywhere (the page's Content-Security-Policy forbids it); no third-party code.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const FRAME_HDR = 1 + 4 + 8 + 2 + 2;   // b"F", u32 index, u64 sent_us, u16 w, u16 h (host/browser.py)

  // Everything the page knows, also read by the tests (window.shortpath.state).
  const state = {
    phase: 'idle', user: null, resources: [], sessionId: null, hostId: null,
    path: null, pair: null, rttMs: null, switches: 0, pairHistory: [],
    connectAt: null, firstFrameMs: null, frames: 0, badFrames: 0, lastFrame: -1,
    eventRtts: [], error: null,
    marks: {},   // ms since Connect: launched, answer-<lane>, open-<lane>, chosen, first-frame
  };
  function mark(name) {
    if (state.connectAt !== null && !(name in state.marks)) state.marks[name] = Math.round(performance.now() - state.connectAt);
  }
  let ws = null;
  let pc = null;
  let channels = {};
  let statsTimer = null;
  const pendingEchoes = [];   // resolvers waiting on the input channel
  const eventSent = new Map();  // event number -> performance.now() at send
  let eventSeq = 0;

  function log(text) {
    const el = $('log');
    el.textContent = (el.textContent + text + '\n').split('\n').slice(-40).join('\n');
  }
  function setStatus(text, kind) {
    const el = $('status');
    el.textContent = text;
    el.dataset.state = kind || 'busy';
  }
  function fail(code, message) {
    state.error = { code, message };
    state.phase = 'error';
    setStatus(`error [${code}]: ${message}`, 'error');
    log(`error [${code}]: ${message}`);
  }

  // --- control channel (WebSocket to the gateway) --------------------------------
  function send(obj) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(obj));
  }

  function signIn() {
    const token = $('token').value.trim();
    if (!token) { fail('config', 'paste a user token first'); return; }
    if (ws) ws.close();
    ws = new WebSocket(`wss://${location.host}/ws`);
    setStatus('signing in…');
    ws.onopen = () => send({ type: 'hello', token });
    $('token').value = '';     // the page keeps no copy once it has been sent
    ws.onmessage = (ev) => onControl(JSON.parse(ev.data));
    ws.onclose = () => {
      if (state.phase !== 'error' && state.phase !== 'closed') {
        log('control channel closed');
        if (state.phase === 'connected') setStatus('control channel closed (session continues)', 'connected');
      }
    };
  }

  function onControl(msg) {
    switch (msg.type) {
      case 'welcome':
        state.user = msg.user;
        state.phase = 'signed-in';
        setStatus(`signed in as ${msg.user}`, 'ready');
        $('signin').hidden = true;
        send({ type: 'feed' });
        break;
      case 'feed': {
        state.resources = msg.resources;
        const sel = $('resource');
        sel.replaceChildren(...msg.resources.map((r) => {
          const o = document.createElement('option');
          o.value = r.name;
          o.textContent = `${r.name} (${r.kind})`;
          return o;
        }));
        $('feed').hidden = false;
        state.phase = 'feed';
        break;
      }
      case 'launched':
        mark('launched');
        state.sessionId = msg.session_id;
        state.hostId = msg.host_id;
        log(`session ${msg.session_id} on ${msg.host_id}; ${msg.ice_servers.length} ICE server entries`);
        startPeer(msg.ice_servers);
        break;
      case 'answer':
        onAnswer(msg);
        break;
      case 'candidate':
        if (msg.candidate && lanes.webrtc) {
          lanes.webrtc.pc.addIceCandidate({ candidate: msg.candidate, sdpMid: msg.sdpMid, sdpMLineIndex: msg.sdpMLineIndex })
            .catch((e) => log(`candidate refused: ${e}`));
        }
        break;
      case 'bye':
        state.phase = 'closed';
        setStatus(`session ended: ${msg.reason}`, 'idle');
        break;
      case 'error':
        fail(msg.code, msg.message + (msg.reason ? ` (${msg.reason})` : ''));
        break;
      default:
        log(`unknown control message ${msg.type}`);
    }
  }

  // --- the session (WebRTC to the host) --------------------------------------------
  function connect() {
    const resource = $('resource').value;
    if (!resource) { fail('config', 'pick a resource'); return; }
    state.connectAt = performance.now();
    state.phase = 'launching';
    setStatus(`launching ${resource}…`);
    send({ type: 'launch', resource });
  }

  // Two lanes to the host, raced: "managed" (the host's shared UDP 3390 listener, ICE-lite; only
  // host candidates, so no STUN/TURN) and "webrtc" (full ICE with the broker's STUN and TURN).
  // The first whose input channel opens is kept, but managed is preferred: when webrtc opens
  // first while managed is still trying, managed gets MANAGED_GRACE_MS more, and up to
  // MANAGED_REACHABLE_MS in all once its ICE checks have succeeded (only DTLS/SCTP to go).
  const MANAGED_GRACE_MS = 300;
  const MANAGED_REACHABLE_MS = 2000;
  let lanes = {};
  let chosen = null;
  let graceTimer = null;

  function makeLane(name, iceServers) {
    const lpc = new RTCPeerConnection({ iceServers });
    const ch = {
      input: lpc.createDataChannel('input', { ordered: true }),
      graphics: lpc.createDataChannel('graphics', { ordered: true }),
      events: lpc.createDataChannel('events', { ordered: false, maxRetransmits: 0 }),
    };
    const lane = { name, pc: lpc, channels: ch, open: false, failed: false };
    ch.graphics.binaryType = 'arraybuffer';
    ch.input.onmessage = (ev) => { if (lane === chosen) { const r = pendingEchoes[0]; if (r) r(ev.data); } };
    ch.graphics.onmessage = (ev) => { if (!chosen || lane === chosen) drawFrame(ev.data); };
    ch.events.onmessage = (ev) => { if (lane === chosen) onEventEcho(ev.data); };
    ch.input.onopen = () => { lane.open = true; mark(`open-${name}`); log(`${name} lane open`); consider(); };
    lpc.onconnectionstatechange = () => {
      log(`${name} lane: ${lpc.connectionState}`);
      if (lpc.connectionState === 'failed') laneFailed(lane);
    };
    lanes[name] = lane;
    return lane;
  }

  function laneFailed(lane) {
    if (lane.failed) return;
    lane.failed = true;
    if (lane === chosen) { fail('ice-failed', `the ${lane.name} path to the host failed`); return; }
    lane.pc.close();
    consider();
  }

  function consider() {
    if (chosen) return;
    const m = lanes.managed;
    const w = lanes.webrtc;
    if (m && m.open && !m.failed) { choose(m); return; }
    if (w && w.open) {
      if (!m || m.failed) { choose(w); return; }
      if (!graceTimer) {
        const reachable = () => ['connected', 'completed'].includes(m.pc.iceConnectionState);
        graceTimer = setTimeout(() => {
          if (chosen) return;
          if (!reachable() || m.failed) { choose(w); return; }
          graceTimer = setTimeout(() => { if (!chosen) choose(w); }, MANAGED_REACHABLE_MS - MANAGED_GRACE_MS);
        }, MANAGED_GRACE_MS);
      }
      return;
    }
    if ((!m || m.failed) && w && w.failed) fail('ice-failed', 'no path to the host');
  }

  function choose(lane) {
    chosen = lane;
    mark('chosen');
    pc = lane.pc;
    channels = lane.channels;
    state.lane = lane.name;
    for (const other of Object.values(lanes)) if (other !== lane) other.pc.close();
    send({ type: 'select', lane: lane.name });
    state.phase = 'connected';
    setStatus(`connected to ${state.hostId}`, 'connected');
    $('disconnect-btn').disabled = false;
  }

  function startPeer(iceServers) {
    const managed = makeLane('managed', []);
    const webrtc = makeLane('webrtc', iceServers);
    webrtc.pc.onicecandidate = (ev) => {
      const c = ev.candidate;
      send({ type: 'candidate', candidate: c ? c.candidate : '', sdpMid: c ? c.sdpMid : null,
             sdpMLineIndex: c ? c.sdpMLineIndex : null });
    };
    const offer = (lane) => lane.pc.createOffer()
      .then((o) => lane.pc.setLocalDescription(o))
      .then(() => send({ type: 'offer', lane: lane.name, sdp: lane.pc.localDescription.sdp }));
    // managed first: its answer needs no gathering on the host, the webrtc one does
    offer(managed).then(() => offer(webrtc)).catch((e) => fail('webrtc', String(e)));
    statsTimer = setInterval(pollStats, 250);
  }

  function onAnswer(msg) {
    const lane = lanes[msg.lane || 'webrtc'];
    if (!lane) return;
    mark(`answer-${lane.name}`);
    if (!msg.sdp) { log(`${lane.name} lane: not offered by the host`); laneFailed(lane); return; }
    lane.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp }).catch((e) => {
      log(`${lane.name} lane: answer refused: ${e}`);
      laneFailed(lane);
    });
  }

  function disconnect() {
    if (statsTimer) clearInterval(statsTimer);
    for (const lane of Object.values(lanes)) lane.pc.close();
    if (ws) ws.close();
    state.phase = 'closed';
    setStatus('disconnected', 'idle');
    $('disconnect-btn').disabled = true;
  }

  // Which path the selected candidate pair is: the managed lane -> managed; relay on our side ->
  // TURN (by the relay's transport to the TURN server), relay on the host's side -> TURN, else direct.
  function classify(local, remote) {
    if (chosen && chosen.name === 'managed') return 'managed';
    if (local.candidateType === 'relay') {
      if (local.relayProtocol === 'tls') return 'turn-tls';
      if (local.relayProtocol === 'tcp') return 'turn-tcp';
      return 'turn';
    }
    if (remote.candidateType === 'relay') return 'turn';
    return 'direct';
  }

  async function pollStats() {
    if (!pc) return;
    const report = await pc.getStats();
    let pairId = null;
    report.forEach((s) => { if (s.type === 'transport' && s.selectedCandidatePairId) pairId = s.selectedCandidatePairId; });
    const pair = pairId && report.get(pairId);
    if (!pair) return;
    const local = report.get(pair.localCandidateId);
    const remote = report.get(pair.remoteCandidateId);
    if (!local || !remote) return;
    const desc = `${local.candidateType}/${local.protocol}${local.relayProtocol ? '(' + local.relayProtocol + ')' : ''} ` +
      `${local.address}:${local.port} -> ${remote.candidateType} ${remote.address}:${remote.port}`;
    const path = classify(local, remote);
    if (state.pair !== null && state.pair !== desc) {
      state.switches += 1;
      log(`path switch: ${state.path} -> ${path}`);
    }
    if (state.pair !== desc) state.pairHistory.push({ path, desc, at: performance.now() });
    state.pair = desc;
    state.path = path;
    state.remote = { address: remote.address, port: remote.port, type: remote.candidateType };
    state.local = { address: local.address, port: local.port, type: local.candidateType,
                    relayProtocol: local.relayProtocol || null, url: local.url || null };
    if (typeof pair.currentRoundTripTime === 'number') state.rttMs = pair.currentRoundTripTime * 1000;
    $('path').textContent = { managed: 'managed (UDP 3390)', direct: 'direct (UDP)', turn: 'TURN (UDP)', 'turn-tcp': 'TURN over TCP',
                              'turn-tls': 'TURN over TLS' }[path] || path;
    $('path').dataset.path = path;
    $('pair').textContent = desc;
    $('rtt').textContent = state.rttMs === null ? '-' : `${state.rttMs.toFixed(1)} ms`;
    $('switches').textContent = String(state.switches);
  }

  // --- graphics: the host's synthetic desktop -----------------------------------------
  const off = document.createElement('canvas');
  function expectedPixel(x, y, index, w) {   // host/browser.py pattern_pixel
    const sx = (x + 2 * index) % w;
    const check = ((Math.floor(sx / 16) + Math.floor(y / 16)) % 2) ? 200 : 40;
    return [(sx * 2) % 256, (y * 3) % 256, check, 255];
  }
  function drawFrame(buf) {
    const dv = new DataView(buf);
    if (buf.byteLength < FRAME_HDR || dv.getUint8(0) !== 0x46) { state.badFrames += 1; return; }
    const index = dv.getUint32(1);
    const w = dv.getUint16(13);
    const h = dv.getUint16(15);
    if (buf.byteLength !== FRAME_HDR + w * h * 4) { state.badFrames += 1; return; }
    const px = new Uint8ClampedArray(buf, FRAME_HDR, w * h * 4);
    for (const [x, y] of [[0, 0], [w - 1, h - 1], [w >> 1, h >> 1]]) {
      const want = expectedPixel(x, y, index, w);
      const at = 4 * (y * w + x);
      if (want.some((v, k) => px[at + k] !== v)) { state.badFrames += 1; return; }
    }
    if (off.width !== w || off.height !== h) { off.width = w; off.height = h; }
    off.getContext('2d').putImageData(new ImageData(px, w, h), 0, 0);
    const screen = $('screen');
    const ctx = screen.getContext('2d');
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(off, 0, 0, screen.width, screen.height);
    state.frames += 1;
    state.lastFrame = index;
    if (state.firstFrameMs === null && state.connectAt !== null) {
      mark('first-frame');
      state.firstFrameMs = performance.now() - state.connectAt;
      $('ttff').textContent = `${state.firstFrameMs.toFixed(0)} ms`;
    }
    $('frames').textContent = `${state.frames} (#${index})`;
  }

  // --- input: mouse and key events on the unreliable lane ------------------------------
  function sendEvent(kind, detail) {
    const ch = channels.events;
    if (!ch || ch.readyState !== 'open') return;
    eventSeq += 1;
    eventSent.set(eventSeq, performance.now());
    if (eventSent.size > 512) eventSent.delete(eventSent.keys().next().value);
    ch.send(JSON.stringify({ n: eventSeq, kind, ...detail }));
  }
  function onEventEcho(data) {
    let msg;
    try { msg = JSON.parse(data); } catch (e) { return; }
    const t0 = eventSent.get(msg.n);
    if (t0 === undefined) return;
    eventSent.delete(msg.n);
    const rtt = performance.now() - t0;
    state.eventRtts.push(rtt);
    if (state.eventRtts.length > 1000) state.eventRtts.shift();
    $('event-rtt').textContent = `${rtt.toFixed(1)} ms (${msg.kind})`;
  }
  function canvasXY(ev) {
    const r = $('screen').getBoundingClientRect();
    return { x: Math.round(ev.clientX - r.left), y: Math.round(ev.clientY - r.top) };
  }

  // --- numbered messages over the input channel (the tests use this) ---------------------
  function echo(n) {
    const ch = channels.input;
    if (!ch || ch.readyState !== 'open') return Promise.reject(new Error('input channel not open'));
    const t0 = performance.now();
    return new Promise((resolve) => {
      const got = [];
      const done = () => {
        pendingEchoes.shift();
        const inOrder = got.every((v, i) => v === `msg:${i}`);
        resolve({ sent: n, received: got.length, inOrder, ms: performance.now() - t0 });
      };
      pendingEchoes.push((data) => { got.push(data); if (got.length === n) done(); });
      for (let i = 0; i < n; i += 1) ch.send(`msg:${i}`);
    });
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('signin-btn').addEventListener('click', signIn);
    $('connect-btn').addEventListener('click', connect);
    $('disconnect-btn').addEventListener('click', disconnect);
    $('tokenfile').addEventListener('change', (ev) => {
      const f = ev.target.files[0];
      if (f) f.text().then((t) => { $('token').value = t.trim(); });
    });
    const screen = $('screen');
    let lastMove = 0;
    screen.addEventListener('mousemove', (ev) => {
      const now = performance.now();
      if (now - lastMove < 16) return;   // at most ~60 moves a second
      lastMove = now;
      sendEvent('move', canvasXY(ev));
    });
    screen.addEventListener('mousedown', (ev) => sendEvent('down', { ...canvasXY(ev), button: ev.button }));
    screen.addEventListener('mouseup', (ev) => sendEvent('up', { ...canvasXY(ev), button: ev.button }));
    screen.addEventListener('keydown', (ev) => { sendEvent('key', { key: ev.key }); ev.preventDefault(); });
  });

  // Every candidate pair of the peer connection with its state (read by the lab tests, which
  // print it when the page ends up on another path than the cell expects).
  async function candidatePairs() {
    if (!pc) return [];
    const report = await pc.getStats();
    const out = [];
    const name = (c) => c && `${c.candidateType}/${c.relayProtocol || c.protocol} ${c.address}:${c.port}`;
    report.forEach((s) => {
      if (s.type !== 'candidate-pair') return;
      out.push({ state: s.state, nominated: !!s.nominated, priority: String(s.priority),
                 requests: s.requestsSent, responses: s.responsesReceived,
                 bytesSent: s.bytesSent, bytesReceived: s.bytesReceived,
                 local: name(report.get(s.localCandidateId)), remote: name(report.get(s.remoteCandidateId)) });
    });
    return out;
  }
  window.shortpath = { state, echo, sendEvent, candidatePairs };
})();
