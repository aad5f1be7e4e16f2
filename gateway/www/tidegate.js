/**
 * tidegate.js: browser client for the Tidegate MQTT-to-WebSocket gateway.
 *
 * An ES module with no dependencies. The gateway serves it at /tidegate.js.
 *
 *   import { TidegateClient } from "/tidegate.js";
 *   const client = new TidegateClient();              // ws(s)://<location.host>/ws
 *   client.on("state", (s) => console.log(s.state, s));
 *   client.subscribe("sensors/#", { history: { last: 10 }, onMessage: (m) => console.log(m.topic, m.payload) });
 *   await client.publish("chat/room1", { text: "hi" }, { qos: 1 });
 *
 * Constructor: new TidegateClient(url?, options?), or connect(url?, options?).
 *   url      WebSocket URL. Defaults to ws://<location.host>/ws, or wss:// when the page is https.
 *   options  autoConnect     (default true) open the connection at once, otherwise call connect().
 *            reconnect       (default true) reconnect after any close that close() did not cause.
 *            minDelayMs      (default 500) first reconnect delay, in milliseconds.
 *            maxDelayMs      (default 30000) cap of the reconnect delay, in milliseconds.
 *            stableAfterMs   (default 5000) a connection that stayed open this long resets the
 *                            delay to minDelayMs.
 *            requestTimeoutMs (default 15000) publish() and ping() reject with code "timeout"
 *                            when no reply comes in this time. 0 disables the timeout.
 *            heartbeatMs     (default 30000) when nothing arrived for this long the client sends
 *                            a ping, and when nothing arrived for twice this long it drops the
 *                            connection (local close code 4000) and reconnects. 0 disables it.
 *            bigInt          (default false) decode JSON integers beyond Number.MAX_SAFE_INTEGER
 *                            as BigInt, keeping every digit. It needs JSON.parse source text
 *                            access (Chrome 114, Firefox 135, Safari 18.4), and older browsers
 *                            round those integers.
 *            token           a JWT or API key, sent as the access_token query parameter on
 *                            every connect (browsers cannot set WebSocket headers). Change it
 *                            with setToken() before it expires: the client sends an auth
 *                            message, so the connection stays open.
 *            WebSocket       WebSocket constructor to use (default globalThis.WebSocket).
 *            onState, onWelcome, onError: handlers added as with on() below.
 *
 * Reconnect: the delay starts at minDelayMs and doubles after each failed attempt, up to
 * maxDelayMs. Each wait is a random value between half the delay and the full delay (jitter),
 * so browsers do not all reconnect at the same moment after a gateway restart.
 *
 * Events, client.on(name, handler) returns a function that removes the handler:
 *   "state"    {state, ...}: state is one of
 *                "connecting"   {url, attempt}
 *                "open"         {server}: the welcome arrived and subscriptions are being re-sent.
 *                "closed"       {code, reason, wasClean, final}: close code and reason of the
 *                               WebSocket. final is true after close() or with reconnect off.
 *                "reconnecting" {delayMs, attempt, at}: the next attempt starts in delayMs
 *                               milliseconds, at the Date.now() value `at`.
 *   "welcome"  server info {server, version, epoch, seq, maxMessageBytes}, also in client.server.
 *   "error"    TidegateError for an error reply that matches no request, or a frame that is
 *              not valid JSON.
 *   "message"  every decoded message frame, before it is routed to the subscriptions.
 *
 * Methods:
 *   connect()                 opens the connection (when autoConnect is false, or after close()).
 *   close(code?, reason?)     closes the connection and stops reconnecting.
 *   reconnectNow()            skips the remaining reconnect delay.
 *   subscribe(filter, opts)   returns a Subscription and sends the subscribe request when open.
 *       opts.history    {last: N} | {since_ms: T} | {since: {epoch, seq}}, only for the first
 *                       subscribe. After a reconnect the client asks for {since: {epoch, seq}}
 *                       from the last seq this subscription delivered, so the gateway can send
 *                       what was missed.
 *       opts.maxRate    messages per second per topic (a number > 0): the gateway conflates
 *                       faster topics to their latest message. For views that show only the
 *                       latest value; omit it where every message matters.
 *       opts.onMessage(message, subscription)  a message matching the filter. message is
 *                       {topic, seq, ts, qos, retain, encoding, payload, history}, payload is
 *                       decoded: encoding "json" gives the JSON value, "utf8" a string and
 *                       "base64" a Uint8Array. ts is the gateway timestamp as sent (milliseconds
 *                       since the Unix epoch). A message whose seq is not greater than the last
 *                       seq delivered to this subscription is dropped, so a resumed
 *                       subscription delivers no duplicates.
 *       opts.onSubscribed(reply, subscription)  the gateway confirmed the subscription; this
 *                       happens again after every reconnect.
 *       opts.onGap(info, subscription)  the gateway replied recovered:false to a history
 *                       request: messages may be missing. info is {filter, resumed, since,
 *                       history}; resumed is true when the request resumed after a reconnect.
 *       opts.onError(error, subscription)  the gateway rejected the subscribe request (for
 *                       example code "invalid"). The subscription is then removed.
 *       subscription.ready is a Promise resolved with the first "subscribed" reply or rejected
 *       with the TidegateError.
 *   unsubscribe(filterOrSubscription)  removes the subscription and returns a Promise of the
 *                       "unsubscribed" reply (resolved at once when not connected).
 *   publish(topic, payload, {qos = 0, retain = false})  returns a Promise resolved with the
 *                       "published" reply, or rejected with a TidegateError {code, message}.
 *                       payload: a string is sent as UTF-8 text, a Uint8Array or ArrayBuffer
 *                       as bytes (base64 on the wire), anything else as JSON, where a BigInt
 *                       becomes a JSON number with every digit.
 *   ping()                    returns a Promise of the round-trip time in milliseconds.
 *   request(body)             sends any request object with a new id and returns a Promise of
 *                             the reply.
 *
 * Helpers: parseJson(text, {bigInt}) and stringifyJson(value, indent) read and write JSON
 * with BigInt support, topicMatches(filter, topic) applies the MQTT filter rules, and
 * base64ToBytes / bytesToBase64 convert payload bytes.
 *
 * Errors are TidegateError objects with code and message. The gateway codes are "invalid",
 * "forbidden", "not_found", "limit" and "unavailable". The client adds "disconnected" (not
 * connected, or the connection closed before the reply) and "timeout".
 *
 * Properties: state, server (latest welcome, or null), lastSeq (highest seq seen on this epoch),
 * subscriptions (Map of filter to Subscription).
 */

export class TidegateError extends Error {
  constructor(code, message, reply = null) {
    super(message);
    this.name = "TidegateError";
    this.code = code;
    this.reply = reply;
  }
}

// Local close code reported when the heartbeat finds the connection dead. RFC 6455 section
// 7.4.2 reserves 4000-4999 for private use.
const HEARTBEAT_CLOSE_CODE = 4000;

const DEFAULT_OPTIONS = {
  autoConnect: true,
  reconnect: true,
  minDelayMs: 500,
  maxDelayMs: 30000,
  stableAfterMs: 5000,
  requestTimeoutMs: 15000,
  heartbeatMs: 30000,
  bigInt: false,
  WebSocket: undefined,
};

/** Returns the default gateway URL: the /ws path on the host that served the page. */
export function defaultUrl() {
  if (typeof location === "undefined") {
    throw new TypeError("no location to derive the WebSocket URL from: pass a ws:// or wss:// URL");
  }
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/ws`;
}

/** Returns whether an MQTT topic filter matches a topic name (MQTT 3.1.1 section 4.7). */
export function topicMatches(filter, topic) {
  if (filter.startsWith("+") || filter.startsWith("#")) {
    if (topic.startsWith("$")) {
      return false;
    }
  }
  const filterLevels = filter.split("/");
  const topicLevels = topic.split("/");
  for (let i = 0; i < filterLevels.length; i++) {
    const level = filterLevels[i];
    if (level === "#") {
      // "#" also matches the parent level: "a/#" matches "a".
      return true;
    }
    if (i >= topicLevels.length) {
      return false;
    }
    if (level !== "+" && level !== topicLevels[i]) {
      return false;
    }
  }
  return filterLevels.length === topicLevels.length;
}

/** Decodes a base64 string to a Uint8Array. */
export function base64ToBytes(text) {
  if (typeof Uint8Array.fromBase64 === "function") {
    return Uint8Array.fromBase64(text);
  }
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) {
    bytes[i] = binary.charCodeAt(i);
  }
  return bytes;
}

/** Encodes bytes as a base64 string. */
export function bytesToBase64(bytes) {
  if (typeof bytes.toBase64 === "function") {
    return bytes.toBase64();
  }
  let binary = "";
  const chunkSize = 0x8000;
  for (let i = 0; i < bytes.length; i += chunkSize) {
    binary += String.fromCharCode.apply(null, bytes.subarray(i, i + chunkSize));
  }
  return btoa(binary);
}

// JSON.parse reviver that turns integers beyond the safe range into BigInt. Older engines
// pass no third argument (source text access), so the rounded number stays.
function reviveBigInt(key, value, context) {
  if (typeof value === "number" && !Number.isSafeInteger(value) && Number.isInteger(value)) {
    const source = context && context.source;
    if (typeof source === "string" && /^-?\d+$/.test(source)) {
      return BigInt(source);
    }
  }
  return value;
}

/**
 * Parses JSON text. With bigInt, integers beyond Number.MAX_SAFE_INTEGER become BigInt when the
 * engine gives the reviver the source text (Chrome 114, Firefox 135, Safari 18.4). Older
 * engines round them.
 */
export function parseJson(text, { bigInt = false } = {}) {
  return bigInt ? JSON.parse(text, reviveBigInt) : JSON.parse(text);
}

/**
 * Serializes a value as JSON and writes each BigInt as a JSON number with every digit.
 * Throws a TypeError for a BigInt when the engine lacks JSON.rawJSON (added in the same
 * versions as source text access).
 */
export function stringifyJson(value, indent) {
  return JSON.stringify(value, replaceBigInt, indent);
}

function replaceBigInt(key, value) {
  if (typeof value !== "bigint") {
    return value;
  }
  if (typeof JSON.rawJSON !== "function") {
    throw new TypeError("this browser cannot write a BigInt as a JSON number (no JSON.rawJSON)");
  }
  return JSON.rawJSON(value.toString());
}

/** Decodes the payload of a "message" frame according to its encoding. */
export function decodePayload(frame) {
  switch (frame.encoding) {
    case "base64":
      return base64ToBytes(frame.payload);
    case "utf8":
    case "json":
    default:
      // The frame parser already turned the embedded JSON into a value.
      return frame.payload;
  }
}

/** One subscription of a TidegateClient. Created by TidegateClient.subscribe(). */
export class Subscription {
  constructor(client, filter, options) {
    this.client = client;
    this.filter = filter;
    this.history = options.history;
    this.maxRate = options.maxRate;
    this.onMessage = options.onMessage;
    this.onSubscribed = options.onSubscribed;
    this.onGap = options.onGap;
    this.onError = options.onError;
    // Epoch that lastSeq and floorSeq refer to, null before the first "subscribed".
    this.epoch = null;
    // Last seq delivered to onMessage in this.epoch, or null.
    this.lastSeq = null;
    // Welcome seq of the connection that first confirmed the subscription in this.epoch: the
    // resume point while no message was delivered yet.
    this.floorSeq = null;
    // True between the "subscribed" reply on the current connection and the next close.
    this.active = false;
    this.closed = false;
    this.ready = new Promise((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    // An ignored rejection logs nothing because of this handler. Callers that await the
    // promise still receive the rejection.
    this.ready.catch(() => {});
  }

  /** Removes this subscription, as TidegateClient.unsubscribe does. */
  unsubscribe() {
    return this.client.unsubscribe(this);
  }

  // Returns the history object for the next subscribe request.
  historyRequest() {
    if (this.epoch !== null) {
      const seq = this.lastSeq !== null ? this.lastSeq : this.floorSeq;
      return { since: { epoch: this.epoch, seq } };
    }
    return this.history;
  }
}

export class TidegateClient {
  constructor(url, options = {}) {
    if (url !== undefined && url !== null && typeof url === "object") {
      options = url;
      url = undefined;
    }
    this.url = url || defaultUrl();
    this.options = { ...DEFAULT_OPTIONS, ...options };
    this.WebSocketImpl = this.options.WebSocket || globalThis.WebSocket;
    if (typeof this.WebSocketImpl !== "function") {
      throw new TypeError("no WebSocket implementation: pass options.WebSocket");
    }

    this.state = "idle";
    this.server = null;
    this.lastSeq = null;
    this.subscriptions = new Map();

    this.handlers = new Map();
    this.pending = new Map();
    this.nextId = 1;
    this.socket = null;
    this.attempt = 0;
    this.openedAt = 0;
    this.lastReceivedAt = 0;
    this.reconnectTimer = null;
    this.heartbeatTimer = null;
    this.stopped = false;
    // Subscription whose "subscribed" reply came last: history frames belong to it.
    this.replaying = null;

    for (const [option, event] of [["onState", "state"], ["onWelcome", "welcome"], ["onError", "error"]]) {
      if (typeof this.options[option] === "function") {
        this.on(event, this.options[option]);
      }
    }

    this.handleOnline = () => {
      if (this.state === "reconnecting") {
        this.reconnectNow();
      }
    };
    if (typeof addEventListener === "function") {
      addEventListener("online", this.handleOnline);
    }

    if (this.options.autoConnect) {
      // Start on the next microtask so the caller can add handlers first.
      queueMicrotask(() => {
        if (this.state === "idle") {
          this.connect();
        }
      });
    }
  }

  /** Adds an event handler and returns a function that removes it. */
  on(event, handler) {
    if (!this.handlers.has(event)) {
      this.handlers.set(event, new Set());
    }
    this.handlers.get(event).add(handler);
    return () => this.handlers.get(event).delete(handler);
  }

  emit(event, value) {
    const handlers = this.handlers.get(event);
    if (!handlers) {
      return;
    }
    for (const handler of [...handlers]) {
      try {
        handler(value);
      } catch (error) {
        reportHandlerError(error);
      }
    }
  }

  setState(state, details = {}) {
    this.state = state;
    this.emit("state", { state, ...details });
  }

  /** Opens the connection. Does nothing while a connection is open or being opened. */
  connect() {
    this.stopped = false;
    if (this.socket) {
      return;
    }
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    this.setState("connecting", { url: this.url, attempt: this.attempt });

    let socket;
    try {
      socket = new this.WebSocketImpl(this.connectUrl());
    } catch (error) {
      // A malformed URL throws here; report it as a close and stop, because retrying
      // cannot fix it.
      this.setState("closed", { code: 1006, reason: String(error.message || error), wasClean: false, final: true });
      this.stopped = true;
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      this.openedAt = Date.now();
      this.lastReceivedAt = this.openedAt;
      this.startHeartbeat();
    };
    socket.onmessage = (event) => {
      this.lastReceivedAt = Date.now();
      this.handleFrame(event.data);
    };
    socket.onclose = (event) => {
      this.handleClose(socket, event.code, event.reason, event.wasClean);
    };
    // The close event that always follows an error event carries the details.
    socket.onerror = () => {};
  }

  /** Closes the connection and stops reconnecting. */
  close(code = 1000, reason = "") {
    this.stopped = true;
    clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
    const socket = this.socket;
    if (socket) {
      try {
        socket.close(code, reason);
      } catch (error) {
        socket.close();
      }
      this.handleClose(socket, code, reason, true);
    } else if (this.state !== "closed") {
      this.setState("closed", { code, reason, wasClean: true, final: true });
    }
  }

  /** Starts the next connection attempt now when one is scheduled. */
  reconnectNow() {
    if (this.reconnectTimer !== null) {
      clearTimeout(this.reconnectTimer);
      this.reconnectTimer = null;
      this.connect();
    }
  }

  handleClose(socket, code, reason, wasClean) {
    if (socket !== this.socket) {
      return;
    }
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    this.socket = null;
    this.stopHeartbeat();
    this.replaying = null;
    for (const subscription of this.subscriptions.values()) {
      subscription.active = false;
    }
    const stayedOpen = this.openedAt > 0 && Date.now() - this.openedAt >= this.options.stableAfterMs;
    this.openedAt = 0;
    this.rejectPending("disconnected", `connection closed (code ${code}) before the reply`);

    const final = this.stopped || !this.options.reconnect;
    this.setState("closed", { code, reason, wasClean, final });
    if (final) {
      return;
    }
    if (stayedOpen) {
      this.attempt = 0;
    }
    const delayMs = this.nextDelay();
    this.attempt += 1;
    this.setState("reconnecting", { delayMs, attempt: this.attempt, at: Date.now() + delayMs });
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = null;
      this.connect();
    }, delayMs);
  }

  // Returns the wait before the next attempt: the capped exponential delay, picked at random
  // between half of it and all of it.
  nextDelay() {
    const { minDelayMs, maxDelayMs } = this.options;
    const delay = Math.min(maxDelayMs, minDelayMs * 2 ** Math.min(this.attempt, 30));
    return Math.round(delay / 2 + Math.random() * (delay / 2));
  }

  startHeartbeat() {
    const interval = this.options.heartbeatMs;
    if (!interval) {
      return;
    }
    this.heartbeatTimer = setInterval(() => {
      const silentMs = Date.now() - this.lastReceivedAt;
      if (silentMs >= 2 * interval) {
        this.dropConnection(HEARTBEAT_CLOSE_CODE, `nothing received for ${Math.round(silentMs / 1000)} s`);
      } else if (silentMs >= interval) {
        this.send({ type: "ping" });
      }
    }, Math.max(250, Math.floor(interval / 2)));
  }

  stopHeartbeat() {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }

  // Gives up on a connection that is probably dead without waiting for the close handshake,
  // which could take minutes on a broken network.
  dropConnection(code, reason) {
    const socket = this.socket;
    if (!socket) {
      return;
    }
    try {
      socket.close();
    } catch (error) {
      // The socket is already closing.
    }
    this.handleClose(socket, code, reason, false);
  }

  send(body) {
    if (!this.socket || this.socket.readyState !== 1) {
      return false;
    }
    this.socket.send(JSON.stringify(body));
    return true;
  }

  /** Sends a request with a new id and returns a Promise of the reply. */
  request(body, { timeoutMs = this.options.requestTimeoutMs } = {}) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      if (!this.socket || this.socket.readyState !== 1 || this.state !== "open") {
        reject(new TidegateError("disconnected", `not connected to ${this.url}`));
        return;
      }
      let text;
      try {
        text = stringifyJson({ ...body, id });
      } catch (error) {
        // For example a cyclic object in the payload.
        reject(new TidegateError("invalid", `request cannot be encoded as JSON: ${error.message}`));
        return;
      }
      const maxBytes = this.server && this.server.maxMessageBytes;
      if (maxBytes) {
        const size = new TextEncoder().encode(text).length;
        if (size > maxBytes) {
          // The gateway would close the connection with code 1009.
          reject(new TidegateError("limit", `request is ${size} bytes, the gateway accepts at most ${maxBytes}`));
          return;
        }
      }
      const entry = { resolve, reject, timer: null, type: body.type };
      if (timeoutMs > 0) {
        entry.timer = setTimeout(() => {
          this.pending.delete(id);
          reject(new TidegateError("timeout", `no reply to ${body.type} within ${timeoutMs} ms`));
        }, timeoutMs);
      }
      this.pending.set(id, entry);
      this.socket.send(text);
    });
  }

  rejectPending(code, message) {
    const pending = this.pending;
    this.pending = new Map();
    for (const entry of pending.values()) {
      clearTimeout(entry.timer);
      entry.reject(new TidegateError(code, message));
    }
  }

  /** Publishes a message. The header comment lists the payload types. */
  /** Returns the URL to open: the gateway URL, with the token when there is one. */
  connectUrl() {
    if (!this.options.token) {
      return this.url;
    }
    const separator = this.url.includes("?") ? "&" : "?";
    return `${this.url}${separator}access_token=${encodeURIComponent(this.options.token)}`;
  }

  /**
   * Replaces the credential. When connected, sends it in an auth message and
   * resolves with the gateway's "authenticated" reply; later connects use it too.
   */
  setToken(token) {
    this.options.token = token;
    if (this.state !== "open") {
      return Promise.resolve(null);
    }
    return this.request({ type: "auth", token });
  }

  publish(topic, payload, { qos = 0, retain = false } = {}) {
    if (typeof topic !== "string" || topic === "") {
      return Promise.reject(new TidegateError("invalid", "topic must be a non-empty string"));
    }
    const body = { type: "publish", topic, payload, qos, retain };
    if (payload instanceof ArrayBuffer) {
      payload = new Uint8Array(payload);
    }
    if (payload instanceof Uint8Array) {
      body.payload = bytesToBase64(payload);
      body.encoding = "base64";
    } else if (payload === undefined) {
      return Promise.reject(new TidegateError("invalid", "payload is missing"));
    }
    return this.request(body);
  }

  /** Sends a ping and returns a Promise of the round-trip time in milliseconds. */
  async ping() {
    const started = performance.now();
    await this.request({ type: "ping" });
    return performance.now() - started;
  }

  /** Adds a subscription. The header comment lists the options. */
  subscribe(filter, options = {}) {
    if (typeof filter !== "string" || filter === "") {
      throw new TypeError("filter must be a non-empty string");
    }
    if (this.subscriptions.has(filter)) {
      throw new Error(`already subscribed to ${filter}: unsubscribe first`);
    }
    const subscription = new Subscription(this, filter, options);
    this.subscriptions.set(filter, subscription);
    if (this.state === "open") {
      this.sendSubscribe(subscription);
    }
    return subscription;
  }

  /** Removes a subscription and returns a Promise of the "unsubscribed" reply. */
  unsubscribe(filterOrSubscription) {
    const filter = typeof filterOrSubscription === "string" ? filterOrSubscription : filterOrSubscription.filter;
    const subscription = this.subscriptions.get(filter);
    if (!subscription) {
      return Promise.reject(new TidegateError("not_found", `not subscribed to ${filter}`));
    }
    subscription.closed = true;
    subscription.active = false;
    this.subscriptions.delete(filter);
    if (this.replaying === subscription) {
      this.replaying = null;
    }
    if (this.state !== "open") {
      return Promise.resolve({ type: "unsubscribed", filter });
    }
    return this.request({ type: "unsubscribe", filter });
  }

  sendSubscribe(subscription) {
    const body = { type: "subscribe", filter: subscription.filter };
    if (subscription.maxRate !== undefined) {
      body.max_rate = subscription.maxRate;
    }
    const history = subscription.historyRequest();
    if (history) {
      body.history = history;
    }
    const resumed = subscription.epoch !== null;
    this.request(body, { timeoutMs: 0 }).then(
      (reply) => this.handleSubscribed(subscription, reply, history, resumed),
      (error) => this.handleSubscribeError(subscription, error),
    );
  }

  handleSubscribed(subscription, reply, history, resumed) {
    if (subscription.closed) {
      return;
    }
    if (subscription.epoch !== this.server.epoch) {
      // First confirmation, or the gateway restarted with a new epoch: seqs start over, so
      // the old lastSeq no longer filters duplicates.
      subscription.epoch = this.server.epoch;
      subscription.lastSeq = null;
      subscription.topicSeqs = null;
      subscription.floorSeq = this.server.seq;
    }
    subscription.active = true;
    this.replaying = subscription;
    subscription.resolveReady(reply);
    callHandler(subscription.onSubscribed, reply, subscription);
    if (history && reply.recovered === false) {
      callHandler(subscription.onGap, { filter: subscription.filter, resumed, since: history.since || null, history }, subscription);
    }
  }

  handleSubscribeError(subscription, error) {
    if (error.code === "disconnected") {
      // The subscription is sent again after the reconnect.
      return;
    }
    if (this.subscriptions.get(subscription.filter) === subscription) {
      this.subscriptions.delete(subscription.filter);
    }
    subscription.closed = true;
    subscription.rejectReady(error);
    if (typeof subscription.onError === "function") {
      callHandler(subscription.onError, error, subscription);
    } else {
      this.emit("error", error);
    }
  }

  handleFrame(data) {
    if (typeof data !== "string") {
      this.emit("error", new TidegateError("invalid", "binary frame from the gateway ignored"));
      return;
    }
    let frame;
    try {
      frame = parseJson(data, { bigInt: this.options.bigInt });
    } catch (error) {
      this.emit("error", new TidegateError("invalid", `frame from the gateway is not JSON: ${error.message}`));
      return;
    }
    if (frame === null || typeof frame !== "object") {
      this.emit("error", new TidegateError("invalid", "frame from the gateway is not a JSON object"));
      return;
    }
    switch (frame.type) {
      case "message":
        this.handleMessage(frame);
        break;
      case "welcome":
        this.handleWelcome(frame);
        break;
      case "error":
        this.handleReply(frame, new TidegateError(frame.code || "invalid", frame.message || "error", frame));
        break;
      default:
        this.handleReply(frame, null);
    }
  }

  handleReply(frame, error) {
    const entry = frame.id !== undefined ? this.pending.get(frame.id) : undefined;
    if (!entry) {
      if (error) {
        this.emit("error", error);
      }
      return;
    }
    this.pending.delete(frame.id);
    clearTimeout(entry.timer);
    if (error) {
      entry.reject(error);
    } else {
      entry.resolve(frame);
    }
  }

  handleWelcome(frame) {
    const previousEpoch = this.server ? this.server.epoch : null;
    this.server = {
      server: frame.server,
      version: frame.version,
      epoch: String(frame.epoch),
      seq: Number(frame.seq),
      maxMessageBytes: frame.max_message_bytes,
    };
    if (previousEpoch !== this.server.epoch || this.lastSeq === null || this.server.seq > this.lastSeq) {
      this.lastSeq = this.server.seq;
    }
    this.setState("open", { server: this.server });
    this.emit("welcome", this.server);
    for (const subscription of this.subscriptions.values()) {
      this.sendSubscribe(subscription);
    }
  }

  handleMessage(frame) {
    const message = {
      topic: frame.topic,
      seq: frame.seq,
      ts: frame.ts,
      qos: frame.qos,
      retain: frame.retain === true,
      encoding: frame.encoding,
      history: frame.history === true,
      payload: undefined,
    };
    try {
      message.payload = decodePayload(frame);
    } catch (error) {
      this.emit("error", new TidegateError("invalid", `cannot decode payload of ${frame.topic}: ${error.message}`));
      return;
    }
    if (typeof message.seq === "number" && (this.lastSeq === null || message.seq > this.lastSeq)) {
      this.lastSeq = message.seq;
    }
    this.emit("message", message);

    if (message.history) {
      // History follows the "subscribed" reply of the subscription that requested it.
      const subscription = this.replaying;
      if (subscription && topicMatches(subscription.filter, message.topic)) {
        this.deliver(subscription, message);
      }
      return;
    }
    for (const subscription of this.subscriptions.values()) {
      if (subscription.active && topicMatches(subscription.filter, message.topic)) {
        this.deliver(subscription, message);
      }
    }
  }

  deliver(subscription, message) {
    if (typeof message.seq === "number") {
      // A conflated (maxRate) subscription gets each topic's latest message
      // after a pause, so seqs only increase per topic: a message may come
      // after a newer one on another topic and must still be delivered.
      if (subscription.maxRate !== undefined && !message.history) {
        const topicSeqs = subscription.topicSeqs || (subscription.topicSeqs = new Map());
        const last = topicSeqs.get(message.topic);
        if (last !== undefined && message.seq <= last) {
          return;
        }
        if (topicSeqs.size >= 10000 && last === undefined) {
          topicSeqs.clear();
        }
        topicSeqs.set(message.topic, message.seq);
        if (subscription.lastSeq === null || message.seq > subscription.lastSeq) {
          subscription.lastSeq = message.seq;
        }
        callHandler(subscription.onMessage, message, subscription);
        return;
      }
      if (subscription.lastSeq !== null && message.seq <= subscription.lastSeq) {
        return;
      }
      subscription.lastSeq = message.seq;
    }
    callHandler(subscription.onMessage, message, subscription);
  }
}

/** Creates a TidegateClient; the same as new TidegateClient(url, options). */
export function connect(url, options) {
  return new TidegateClient(url, options);
}

function callHandler(handler, value, subscription) {
  if (typeof handler !== "function") {
    return;
  }
  try {
    handler(value, subscription);
  } catch (error) {
    reportHandlerError(error);
  }
}

// A throwing handler must not break the client's own state, so the error is reported
// asynchronously, where the browser console shows it as uncaught.
function reportHandlerError(error) {
  setTimeout(() => {
    throw error;
  }, 0);
}
