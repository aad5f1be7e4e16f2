// Device and topic tree: every topic the gateway has seen, grouped by its levels, with the
// latest value, its age and the online state of each device.
//
// A device is the parent of a status topic (last-will convention: ".../status" or
// ".../availability" saying "online" or "offline", configurable) or the parent of a topic
// with data. A device is offline when its status topic reports "offline", or when none of its
// topics had a message for stale_after_s seconds.

import { element, formatAge, formatDuration, formatPayload } from "./format.js";
import { invalidate } from "./feeds.js";

export const DEFAULT_STATUS = {
  suffixes: ["availability", "status"],
  online: ["online"],
  offline: ["offline"],
};
export const DEFAULT_STALE_AFTER_S = 300;
// Topics shown in the tree at most. Later topics are counted, not shown.
const MAX_TOPICS = 5000;
const PREVIEW_CHARS = 80;

export class TopicTree {
  /**
   * container: the element to fill. settings: {status, stale_after_s}. onSelect(topic) is
   * called when a topic is activated.
   */
  constructor(container, settings, onSelect) {
    this.container = container;
    this.onSelect = onSelect;
    this.status = { ...DEFAULT_STATUS, ...(settings.status || {}) };
    this.staleMs = 1000 * (settings.stale_after_s ?? DEFAULT_STALE_AFTER_S);
    // topic -> latest message.
    this.latest = new Map();
    this.pending = new Map();
    this.hiddenTopics = 0;
    // path -> node {path, name, depth, parent, children: Map, topic: bool, device: bool,
    // element parts}.
    this.root = { path: "", children: new Map(), depth: -1 };
    this.nodes = new Map();

    this.summary = element("p", { className: "muted tree-summary", "aria-live": "off" });
    this.list = element("ul", { className: "tree", "aria-label": "Devices and topics" });
    this.root.list = this.list;
    this.empty = element("p", { className: "muted", text: "No topics yet." });
    container.append(this.summary, this.list, this.empty);
    this.summary.textContent = "0 topics";
  }

  /** Stores a message as the latest of its topic when it is newer than the stored one. */
  update(message) {
    const stored = this.pending.get(message.topic) || this.latest.get(message.topic);
    if (stored && typeof stored.seq === "number" && typeof message.seq === "number" && message.seq <= stored.seq) {
      return;
    }
    if (!this.latest.has(message.topic) && !this.pending.has(message.topic) && this.latest.size + this.pending.size >= MAX_TOPICS) {
      this.hiddenTopics += 1;
      return;
    }
    this.pending.set(message.topic, message);
    invalidate(this);
  }

  /** Returns {state: "online"|"offline"|"unknown", reason} for a device path. */
  deviceState(path, now = Date.now()) {
    const node = this.nodes.get(path);
    if (!node) {
      return { state: "unknown", reason: "" };
    }
    for (const suffix of this.status.suffixes) {
      const message = this.latest.get(path === "" ? suffix : `${path}/${suffix}`);
      const word = message ? statusWord(message) : null;
      if (word !== null && this.status.offline.includes(word)) {
        return { state: "offline", reason: `${suffix} says ${word}` };
      }
    }
    const newest = newestTs(node, this.latest);
    if (newest !== null && this.staleMs > 0 && now - newest > this.staleMs) {
      return { state: "offline", reason: `silent for ${formatDuration((now - newest) / 1000)}` };
    }
    return { state: "online", reason: newest === null ? "" : `last message ${formatAge(newest, now)}` };
  }

  /**
   * Applies pending messages and refreshes the state of the devices they belong to. The
   * other ages and states change with time only, and refresh() updates them once a second.
   */
  render() {
    const now = Date.now();
    const touched = new Set();
    for (const [topic, message] of this.pending) {
      this.latest.set(topic, message);
      const node = this.ensureNode(topic);
      node.topic = true;
      this.renderTopic(node, message, now);
      const devicePath = this.devicePathOf(topic);
      const device = this.nodes.get(devicePath);
      if (device && !device.device) {
        device.device = true;
        device.badge.hidden = false;
      }
      if (device) {
        touched.add(device);
      }
    }
    this.pending.clear();
    for (const device of touched) {
      this.renderDeviceState(device, now);
    }
    this.renderSummary();
  }

  /** Updates every age and device state; called once a second. */
  refresh(now = Date.now()) {
    for (const node of this.nodes.values()) {
      if (node.topic) {
        const message = this.latest.get(node.path);
        const age = formatAge(message.ts, now);
        if (node.age.textContent !== age) {
          node.age.textContent = age;
        }
      }
      if (node.device) {
        this.renderDeviceState(node, now);
      }
    }
    this.renderSummary();
  }

  renderDeviceState(node, now) {
    const { state, reason } = this.deviceState(node.path, now);
    if (node.badge.dataset.state !== state || node.badge.title !== reason) {
      node.badge.dataset.state = state;
      node.badge.textContent = state;
      node.badge.title = reason;
      node.item.dataset.state = state;
    }
  }

  renderSummary() {
    const parts = [`${this.latest.size} ${this.latest.size === 1 ? "topic" : "topics"}`];
    if (this.hiddenTopics > 0) {
      parts.push(`${this.hiddenTopics} more not shown (limit ${MAX_TOPICS})`);
    }
    this.summary.textContent = parts.join(", ");
    this.empty.hidden = this.latest.size > 0;
  }

  devicePathOf(topic) {
    const levels = topic.split("/");
    if (levels.length === 1) {
      return topic;
    }
    return levels.slice(0, -1).join("/");
  }

  ensureNode(path) {
    let node = this.nodes.get(path);
    if (node) {
      return node;
    }
    const levels = path.split("/");
    const parentPath = levels.slice(0, -1).join("/");
    const parent = levels.length === 1 ? this.root : this.ensureNode(parentPath);
    const name = levels[levels.length - 1];
    node = { path, name, depth: levels.length - 1, parent, children: new Map(), topic: false, device: false };
    this.buildNode(node);
    // Insert in name order among the siblings.
    const names = [...parent.children.keys(), name].sort();
    const next = names[names.indexOf(name) + 1];
    parent.children.set(name, node);
    const sibling = next !== undefined ? parent.children.get(next).item : null;
    if (!parent.list) {
      parent.list = element("ul");
      parent.item.append(parent.list);
      parent.toggle.hidden = false;
      parent.toggle.setAttribute("aria-expanded", "true");
    }
    parent.list.insertBefore(node.item, sibling);
    this.nodes.set(path, node);
    return node;
  }

  buildNode(node) {
    node.toggle = element("button", {
      type: "button",
      className: "tree-toggle",
      hidden: true,
      "aria-label": `Collapse ${node.path}`,
      onclick: () => this.toggle(node),
    });
    node.label = element("button", {
      type: "button",
      className: "tree-name",
      text: node.name === "" ? "(empty)" : node.name,
      title: node.path,
      onclick: () => this.onSelect(node.path, this.latest.get(node.path) || null),
    });
    node.badge = element("span", { className: "device-state", hidden: true, "data-state": "unknown" });
    node.value = element("span", { className: "tree-value" });
    node.age = element("span", { className: "tree-age num" });
    node.item = element(
      "li",
      { "data-path": node.path },
      element("div", { className: "tree-row" }, node.toggle, node.label, node.badge, node.value, node.age),
    );
  }

  toggle(node) {
    const expanded = node.toggle.getAttribute("aria-expanded") === "true";
    node.toggle.setAttribute("aria-expanded", String(!expanded));
    node.toggle.setAttribute("aria-label", `${expanded ? "Expand" : "Collapse"} ${node.path}`);
    node.list.hidden = expanded;
  }

  renderTopic(node, message, now) {
    const text = message.encoding === "utf8" && message.payload === "" ? "(empty)" : formatPayload(message);
    node.value.textContent = text.length > PREVIEW_CHARS ? `${text.slice(0, PREVIEW_CHARS)}…` : text;
    node.value.title = `seq ${message.seq}, ${message.encoding}`;
    node.age.textContent = formatAge(message.ts, now);
  }
}

// Returns the lower-case status word of a status message ("online", "offline", ...), from
// a text payload, a JSON string, or a JSON object with "state" or "status", else null.
function statusWord(message) {
  let value = message.payload;
  if (value !== null && typeof value === "object" && !(value instanceof Uint8Array)) {
    value = value.state ?? value.status;
  }
  return typeof value === "string" ? value.trim().toLowerCase() : null;
}

// Returns the newest ts of the topic at the node and its direct children, or null.
function newestTs(node, latest) {
  let newest = null;
  const consider = (message) => {
    if (message && typeof message.ts === "number" && (newest === null || message.ts > newest)) {
      newest = message.ts;
    }
  };
  consider(latest.get(node.path));
  for (const child of node.children.values()) {
    consider(latest.get(child.path));
  }
  return newest;
}
