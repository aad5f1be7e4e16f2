// Shared subscriptions and the render scheduler of the dashboard.
//
// Many widgets can watch the same topic filter, but a TidegateClient keeps one subscription
// per filter. A Feed is that one subscription, shared by its consumers: it asks for the
// oldest history any of them needs, and drops the max_rate conflation as soon as one of
// them needs every message. A consumer that joins a feed that is already live gets its
// history from GET /api/v1/history, and the live messages that arrive meanwhile are held
// until the history is in, so it sees neither a gap nor a duplicate.

/** Requests a render of `widget` on the next animation frame; several requests coalesce. */
export function invalidate(widget) {
  dirtyWidgets.add(widget);
  if (!frameRequested) {
    frameRequested = true;
    requestAnimationFrame(renderDirty);
  }
}

const dirtyWidgets = new Set();
let frameRequested = false;

function renderDirty(now) {
  frameRequested = false;
  const widgets = [...dirtyWidgets];
  dirtyWidgets.clear();
  for (const widget of widgets) {
    if (widget.minIntervalMs && now - (widget.renderedAt || 0) < widget.minIntervalMs) {
      // Heavy widgets (charts) redraw at most every minIntervalMs; ask again next frame.
      invalidate(widget);
      continue;
    }
    widget.renderedAt = now;
    try {
      widget.render();
    } catch (error) {
      console.error(`render of ${widget.constructor.name} failed:`, error);
    }
  }
}

// Most history messages fetched over HTTP for a consumer that joins a live feed. The gateway
// caps it further at its history_max_messages.
const HTTP_HISTORY_LIMIT = 10000;
// Live messages held for one consumer while its history loads. Past this the older half is
// dropped and the consumer is told of a gap.
const MAX_HELD = 20000;

export class FeedManager {
  constructor(client) {
    this.client = client;
    this.feeds = new Map();
    // False once the gateway rejected a subscribe with max_rate: then feeds omit it.
    this.maxRateSupported = true;
    client.on("welcome", (server) => {
      for (const feed of this.feeds.values()) {
        feed.handleWelcome(server);
      }
    });
  }

  /**
   * Adds a consumer and returns a handle with remove(). consumer: {filter, onMessage(message),
   * sinceMs?: number (history since this time), last?: number (last N messages), latest?:
   * true (start with the latest message of each topic, from GET /api/v1/topics), maxRate?:
   * number (the consumer is content with this many messages per second per topic),
   * onGap?(info), onError?(error), onHistory?(info)}.
   */
  add(consumer) {
    let feed = this.feeds.get(consumer.filter);
    if (!feed) {
      feed = new Feed(this, consumer.filter);
      this.feeds.set(consumer.filter, feed);
    }
    feed.addConsumer(consumer);
    return {
      remove: () => feed.removeConsumer(consumer),
    };
  }

  removeFeed(feed) {
    if (this.feeds.get(feed.filter) === feed) {
      this.feeds.delete(feed.filter);
    }
  }
}

class Feed {
  constructor(manager, filter) {
    this.manager = manager;
    this.client = manager.client;
    this.filter = filter;
    this.consumers = new Map();
    this.subscription = null;
    this.maxRate = undefined;
    this.epoch = null;
  }

  addConsumer(consumer) {
    const state = { consumer, lastSeq: null, held: null };
    this.consumers.set(consumer, state);
    const wantedRate = this.rateFor([...this.consumers.keys()]);
    if (consumer.latest) {
      this.loadLatest(state);
    }
    if (this.subscription === null) {
      this.subscribe(this.historyFor([consumer]), wantedRate);
      return;
    }
    if (this.subscription.epoch === null && this.client.state !== "open") {
      // Not sent yet: the first subscribe request covers every consumer added so far.
      this.subscription.history = this.historyFor([...this.consumers.keys()]);
      this.subscription.maxRate = wantedRate;
      this.maxRate = wantedRate;
      return;
    }
    if (wantedRate !== this.maxRate) {
      // A consumer that needs every message joined a conflated feed: subscribe again
      // without max_rate, resuming after the last delivered message.
      this.resubscribe(wantedRate);
    }
    if (consumer.sinceMs !== undefined || consumer.last !== undefined) {
      this.loadHistory(state);
    }
  }

  removeConsumer(consumer) {
    this.consumers.delete(consumer);
    if (this.consumers.size === 0) {
      const subscription = this.subscription;
      this.subscription = null;
      this.manager.removeFeed(this);
      if (subscription) {
        subscription.unsubscribe().catch(() => {});
      }
    }
  }

  // Returns the max_rate for these consumers: undefined when one of them needs every
  // message, otherwise the highest rate any of them asked for.
  rateFor(consumers) {
    if (!this.manager.maxRateSupported || consumers.length === 0) {
      return undefined;
    }
    let rate = 0;
    for (const consumer of consumers) {
      if (!(consumer.maxRate > 0)) {
        return undefined;
      }
      rate = Math.max(rate, consumer.maxRate);
    }
    return rate;
  }

  // Returns the history request covering every given consumer, or undefined.
  historyFor(consumers) {
    let sinceMs = Infinity;
    let last = 0;
    for (const consumer of consumers) {
      if (consumer.sinceMs !== undefined) {
        sinceMs = Math.min(sinceMs, consumer.sinceMs);
      }
      if (consumer.last !== undefined) {
        last = Math.max(last, consumer.last);
      }
    }
    if (sinceMs !== Infinity) {
      return { since_ms: Math.floor(sinceMs) };
    }
    if (last > 0) {
      return { last };
    }
    return undefined;
  }

  subscribe(history, maxRate) {
    this.maxRate = maxRate;
    const options = {
      history,
      onMessage: (message) => this.deliver(message),
      onGap: (info) => this.forEachConsumer((consumer) => consumer.onGap && consumer.onGap(info)),
      onSubscribed: (reply) => {
        this.forEachConsumer((consumer) => consumer.onSubscribed && consumer.onSubscribed(reply));
      },
      onError: (error) => this.handleError(error, history, maxRate),
    };
    if (maxRate !== undefined) {
      options.maxRate = maxRate;
    }
    this.subscription = this.client.subscribe(this.filter, options);
  }

  handleError(error, history, maxRate) {
    this.subscription = null;
    if (error.code === "invalid" && maxRate !== undefined && /max_rate/.test(error.message)) {
      // An older gateway: subscribe again without conflation.
      this.manager.maxRateSupported = false;
      this.subscribe(history, undefined);
      return;
    }
    this.forEachConsumer((consumer) => consumer.onError && consumer.onError(error));
  }

  resubscribe(maxRate) {
    const old = this.subscription;
    let history;
    if (old && old.epoch !== null) {
      const seq = old.lastSeq !== null ? old.lastSeq : old.floorSeq;
      history = { since: { epoch: old.epoch, seq } };
    } else {
      history = this.historyFor([...this.consumers.keys()]);
    }
    if (old) {
      // The client forgets the old subscription at once and sends the unsubscribe before
      // the new subscribe, so the gateway handles them in that order.
      old.unsubscribe().catch(() => {});
    }
    this.subscribe(history, maxRate);
  }

  handleWelcome(server) {
    if (this.epoch !== null && this.epoch !== server.epoch) {
      // A new message store: seqs start over, so the per-consumer duplicate check resets.
      for (const state of this.consumers.values()) {
        state.lastSeq = null;
      }
    }
    this.epoch = server.epoch;
  }

  forEachConsumer(callback) {
    for (const consumer of [...this.consumers.keys()]) {
      try {
        callback(consumer);
      } catch (error) {
        console.error(error);
      }
    }
  }

  deliver(message) {
    for (const state of this.consumers.values()) {
      if (state.held !== null) {
        state.held.push(message);
        if (state.held.length > MAX_HELD) {
          state.held.splice(0, MAX_HELD / 2);
          if (!state.overflowed) {
            state.overflowed = true;
            state.consumer.onGap && state.consumer.onGap({ filter: this.filter, resumed: false, since: null, history: null });
          }
        }
        continue;
      }
      deliverTo(state, message);
    }
  }

  // Fetches the latest message of each topic for one consumer, holding its live messages
  // until they are delivered.
  async loadLatest(state) {
    const consumer = state.consumer;
    state.held = [];
    const params = new URLSearchParams({ filter: this.filter });
    let topics = [];
    try {
      const response = await fetch(`/api/v1/topics?${params}`, authOptions(this.client));
      const body = await response.json();
      if (!response.ok) {
        throw new Error(body.message || `HTTP ${response.status}`);
      }
      topics = body.topics;
    } catch (error) {
      consumer.onError && consumer.onError({ code: "unavailable", message: `latest values of ${this.filter} failed: ${error.message}` });
    }
    if (!this.consumers.has(consumer)) {
      return;
    }
    const held = state.held;
    state.held = null;
    // In seq order, because the duplicate check drops a seq below the last delivered one.
    topics.sort((a, b) => a.seq - b.seq);
    for (const frame of topics) {
      deliverTo(state, frameToMessage(frame, false));
    }
    for (const message of held) {
      deliverTo(state, message);
    }
  }

  // Fetches the history of one consumer that joined a live feed, holding its live messages
  // until the history is delivered.
  async loadHistory(state) {
    const consumer = state.consumer;
    state.held = [];
    const params = new URLSearchParams({ filter: this.filter, limit: String(consumer.last || HTTP_HISTORY_LIMIT) });
    if (consumer.sinceMs !== undefined) {
      params.set("since_ms", String(Math.floor(consumer.sinceMs)));
    }
    let body = null;
    try {
      const response = await fetch(`/api/v1/history?${params}`, authOptions(this.client));
      body = await response.json();
      if (!response.ok) {
        throw new Error(body.message || `HTTP ${response.status}`);
      }
    } catch (error) {
      consumer.onError && consumer.onError({ code: "unavailable", message: `history of ${this.filter} failed: ${error.message}` });
      body = null;
    }
    if (!this.consumers.has(consumer)) {
      return;
    }
    const held = state.held;
    state.held = null;
    if (body) {
      consumer.onHistory && consumer.onHistory({ count: body.count, truncated: body.truncated, recovered: body.recovered });
      for (const frame of body.messages) {
        deliverTo(state, frameToMessage(frame, true));
      }
    }
    for (const message of held) {
      deliverTo(state, message);
    }
  }
}

function deliverTo(state, message) {
  if (typeof message.seq === "number") {
    if (state.lastSeq !== null && message.seq <= state.lastSeq) {
      return;
    }
    state.lastSeq = message.seq;
  }
  try {
    state.consumer.onMessage(message);
  } catch (error) {
    console.error(error);
  }
}

// Returns the client's message object for a message frame of the HTTP API.
function frameToMessage(frame, history) {
  return {
    topic: frame.topic,
    seq: frame.seq,
    ts: frame.ts,
    qos: frame.qos,
    retain: frame.retain === true,
    encoding: frame.encoding,
    history,
    payload: frame.encoding === "base64" ? base64Bytes(frame.payload) : frame.payload,
  };
}

function base64Bytes(text) {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) {
    bytes[i] = binary.charCodeAt(i);
  }
  return bytes;
}

/** Fetch options that carry the client's token, when it has one. */
function authOptions(client) {
  const token = client.options && client.options.token;
  return token ? { headers: { Authorization: `Bearer ${token}` } } : {};
}
