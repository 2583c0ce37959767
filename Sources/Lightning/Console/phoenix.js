// A small Phoenix Channels client (V2 JSON serializer: [join_ref, ref, topic, event, payload]) with
// heartbeats, socket reconnects and channel rejoins after a backoff; each (re)join sends a payload
// computed at that moment by the channel's paramsFn, which is how a log resumes where it stopped.

const DEFAULT_BACKOFF = [1000, 2000, 4000, 8000, 10000];

function safeCall(cb, ...args) {
  try { cb(...args); } catch (e) { console.error('phoenix callback failed', e); }
}

export class Socket {
  constructor(url, opts = {}) {
    this.url = url;
    this.WebSocketImpl = opts.WebSocket || globalThis.WebSocket;
    this.heartbeatMs = opts.heartbeatMs ?? 30000;
    this.joinTimeoutMs = opts.joinTimeoutMs ?? 10000;
    this.backoff = opts.backoff || DEFAULT_BACKOFF;
    this.ws = null;
    this.refCounter = 0;
    this.channels = new Set();
    this.openCbs = [];
    this.closeCbs = [];
    this.tries = 0;
    this.reconnectTimer = null;
    this.heartbeatTimer = null;
    this.pendingHeartbeat = null;
    this.stopped = true;
  }

  delay(tries) { return this.backoff[Math.min(tries, this.backoff.length - 1)]; }
  makeRef() { return String(++this.refCounter); }
  isConnected() { return !!this.ws && this.ws.readyState === 1; }
  onOpen(cb) { this.openCbs.push(cb); return this; }
  onClose(cb) { this.closeCbs.push(cb); return this; }

  connect() {
    this.stopped = false;
    if (this.ws) return this;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    let ws;
    try {
      ws = new this.WebSocketImpl(this.url);
    } catch (e) {
      console.error('websocket failed', e);
      this.scheduleReconnect();
      return this;
    }
    this.ws = ws;
    ws.addEventListener('open', () => {
      if (this.ws !== ws) return;
      this.tries = 0;
      this.startHeartbeat();
      for (const cb of this.openCbs) safeCall(cb);
      for (const ch of [...this.channels]) ch.rejoinNow();
    });
    ws.addEventListener('message', (e) => { if (this.ws === ws) this.onMessage(e.data); });
    ws.addEventListener('close', () => this.lost(ws));
    ws.addEventListener('error', () => {});
    return this;
  }

  /** The connection `ws` is gone (closed, or abandoned after a missed heartbeat). */
  lost(ws) {
    if (this.ws !== ws) return;
    this.ws = null;
    this.stopHeartbeat();
    for (const ch of this.channels) ch.socketClosed();
    for (const cb of this.closeCbs) safeCall(cb);
    if (!this.stopped) this.scheduleReconnect();
  }

  scheduleReconnect() {
    if (this.reconnectTimer || this.stopped) return;
    const d = this.delay(this.tries++);
    this.reconnectTimer = setTimeout(() => { this.reconnectTimer = null; if (!this.stopped) this.connect(); }, d);
  }

  disconnect() {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const ws = this.ws;
    if (ws) {
      this.lost(ws);
      try { ws.close(1000); } catch { /* already closed */ }
    }
  }

  startHeartbeat() {
    this.stopHeartbeat();
    this.heartbeatTimer = setInterval(() => {
      const ws = this.ws;
      if (!ws) return;
      if (this.pendingHeartbeat !== null) {
        // The previous heartbeat got no reply: treat the connection as dead now and reconnect.
        this.pendingHeartbeat = null;
        this.lost(ws);
        try { ws.close(3000, 'heartbeat timeout'); } catch { /* ignore */ }
        return;
      }
      this.pendingHeartbeat = this.makeRef();
      this.push([null, this.pendingHeartbeat, 'phoenix', 'heartbeat', {}]);
    }, this.heartbeatMs);
  }

  stopHeartbeat() {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
    this.pendingHeartbeat = null;
  }

  push(frame) {
    if (!this.isConnected()) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  onMessage(raw) {
    let msg;
    try { msg = JSON.parse(raw); } catch { return; }
    if (!Array.isArray(msg) || msg.length < 5) return;
    const [joinRef, ref, topic, event, payload] = msg;
    if (topic === 'phoenix') {
      if (event === 'phx_reply' && ref !== null && ref === this.pendingHeartbeat) this.pendingHeartbeat = null;
      return;
    }
    for (const ch of [...this.channels]) {
      if (ch.topic === topic) ch.onMessage(joinRef, ref, event, payload);
    }
  }

  channel(topic, paramsFn) {
    const ch = new Channel(this, topic, paramsFn);
    this.channels.add(ch);
    return ch;
  }
}

export class Channel {
  constructor(socket, topic, paramsFn) {
    this.socket = socket;
    this.topic = topic;
    this.paramsFn = paramsFn;
    this.state = 'closed'; // closed | joining | joined | errored
    this.wanted = false;
    this.joinRef = null;
    this.tries = 0;
    this.rejoinTimer = null;
    this.joinTimer = null;
    this.handlers = new Map();
    this.joinCbs = [];
    this.errorCbs = [];
  }

  /** Called with the reply's response after every successful join (the first and each rejoin). */
  onJoin(cb) { this.joinCbs.push(cb); return this; }
  /** Called with the reply's response when a join is refused (it is retried after the backoff). */
  onJoinError(cb) { this.errorCbs.push(cb); return this; }

  on(event, cb) {
    if (!this.handlers.has(event)) this.handlers.set(event, []);
    this.handlers.get(event).push(cb);
    return this;
  }

  join() {
    this.wanted = true;
    this.socket.channels.add(this);
    if (this.socket.isConnected()) this.sendJoin();
    else this.socket.connect();
    return this;
  }

  leave() {
    const wasActive = this.state === 'joined' || this.state === 'joining';
    this.wanted = false;
    this.clearTimers();
    if (wasActive && this.socket.isConnected()) {
      this.socket.push([this.joinRef, this.socket.makeRef(), this.topic, 'phx_leave', {}]);
    }
    this.state = 'closed';
    this.joinRef = null;
    this.socket.channels.delete(this);
  }

  clearTimers() {
    clearTimeout(this.rejoinTimer);
    clearTimeout(this.joinTimer);
    this.rejoinTimer = null;
    this.joinTimer = null;
  }

  sendJoin() {
    this.clearTimers();
    let params = {};
    try { params = (this.paramsFn ? this.paramsFn() : {}) || {}; } catch (e) { console.error('join params failed', e); }
    this.joinRef = this.socket.makeRef();
    this.state = 'joining';
    this.socket.push([this.joinRef, this.joinRef, this.topic, 'phx_join', params]);
    this.joinTimer = setTimeout(() => { if (this.state === 'joining') this.errored(); }, this.socket.joinTimeoutMs);
  }

  rejoinNow() {
    if (this.wanted) this.sendJoin();
  }

  socketClosed() {
    this.clearTimers();
    this.joinRef = null;
    if (this.wanted) this.state = 'errored';
  }

  /** The join failed or the server closed/crashed the channel: rejoin after the backoff. */
  errored() {
    this.clearTimers();
    this.state = 'errored';
    this.joinRef = null;
    if (!this.wanted || !this.socket.isConnected()) return; // the socket's reconnect rejoins
    const d = this.socket.delay(this.tries++);
    this.rejoinTimer = setTimeout(() => {
      this.rejoinTimer = null;
      if (this.wanted && this.socket.isConnected() && this.state === 'errored') this.sendJoin();
    }, d);
  }

  onMessage(joinRef, ref, event, payload) {
    if (joinRef !== null && joinRef !== undefined && joinRef !== this.joinRef) return; // an older join's
    if (event === 'phx_reply') {
      if (ref === this.joinRef && this.state === 'joining') {
        clearTimeout(this.joinTimer);
        const status = payload && payload.status;
        const response = (payload && payload.response) || {};
        if (status === 'ok') {
          this.state = 'joined';
          this.tries = 0;
          for (const cb of this.joinCbs) safeCall(cb, response);
        } else {
          for (const cb of this.errorCbs) safeCall(cb, response);
          this.errored();
        }
      }
      return;
    }
    if (event === 'phx_error' || event === 'phx_close') {
      if (this.state !== 'closed') this.errored();
      return;
    }
    for (const cb of this.handlers.get(event) || []) safeCall(cb, payload);
  }
}
