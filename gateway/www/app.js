// Tidegate dashboard: a live table of the latest message per topic.
//
// Messages can arrive at thousands per second, so onMessage only stores the latest message
// per topic in `pendingUpdates`. One requestAnimationFrame callback per frame applies them,
// touching only the rows whose topic changed. The table keeps at most MAX_ROWS topics and
// evicts the least recently updated one.

import { TidegateClient, parseJson } from "./tidegate.js";

const MAX_ROWS = 2000;
// Maximum characters of a value shown in the table. The tooltip and the detail dialog show
// more.
const PREVIEW_CHARS = 120;
// Maximum tooltip length in characters, so a large payload does not make a huge tooltip.
const TOOLTIP_CHARS = 2000;

const elements = Object.fromEntries(
  [
    "state", "state-announcement", "server-version", "server-epoch", "server-seq", "message-rate", "reconnect-now",
    "filter-form", "filter", "history", "filter-status",
    "publish-form", "publish-topic", "publish-payload", "publish-format", "publish-qos",
    "publish-retain", "publish-status",
    "topics-summary", "pause", "clear", "notice", "topics-body", "empty",
    "detail", "detail-topic", "detail-meta", "detail-value", "detail-copy", "detail-use",
  ].map((id) => [id, document.getElementById(id)]),
);

// topic -> {message, row, valueButton, encodingCell, seqCell, ageCell, shownAge}. Map order
// is the update order, oldest first, which makes eviction O(1).
const rows = new Map();
// Sorted topics of the rows in the table, to insert new rows in order.
const sortedTopics = [];
// topic -> latest message not yet rendered.
const pendingUpdates = new Map();
let frameRequested = false;
// Rows updated in the current render, highlighted on the next frame.
let flashRows = [];
// Highlighting stops above this many row updates per second: painting hundreds of
// concurrent highlight animations costs more than a frame, and at that rate the table
// changes everywhere anyway.
const MAX_FLASHES_PER_SECOND = 50;
let rowUpdatesThisSecond = 0;
let flashEnabled = true;
let evictedCount = 0;
let receivedCount = 0;
let highestSeq = null;
let subscription = null;
let reconnectAt = 0;
let lastState = null;
let lastClose = null;

const client = new TidegateClient({ bigInt: true });

// ---- Connection state and server info --------------------------------------------------

client.on("state", (event) => {
  lastState = event;
  if (event.state === "closed") {
    lastClose = event;
  }
  elements["reconnect-now"].hidden = event.state !== "reconnecting";
  if (event.state === "reconnecting") {
    reconnectAt = event.at;
  }
  if (event.state === "open") {
    setNotice("");
  }
  renderState();
  // The visible state line counts down every second, so screen readers get this separate
  // line, which changes only with the state.
  if (event.state !== "closed" || event.final) {
    elements["state-announcement"].textContent = `Connection ${elements.state.textContent}`;
  }
});

client.on("welcome", (server) => {
  elements["server-version"].textContent = server.version || "?";
  elements["server-version"].title = `${server.server || "?"} ${server.version || "?"}, max message ${server.maxMessageBytes} bytes`;
  elements["server-epoch"].textContent = server.epoch;
  elements["server-epoch"].title = server.epoch;
  if (highestSeq === null || server.seq > highestSeq) {
    highestSeq = server.seq;
  }
  elements["server-seq"].textContent = String(highestSeq);
});

client.on("error", (error) => {
  setNotice(`Gateway error ${error.code}: ${error.message}`);
});

elements["reconnect-now"].addEventListener("click", () => client.reconnectNow());

function renderState() {
  const event = lastState;
  if (!event) {
    return;
  }
  const element = elements.state;
  let text;
  switch (event.state) {
    case "connecting":
      text = "connecting…";
      break;
    case "open":
      text = "live";
      break;
    case "reconnecting": {
      const seconds = Math.max(0, Math.ceil((reconnectAt - Date.now()) / 1000));
      text = `reconnecting in ${seconds} s (${describeClose(lastClose)})`;
      break;
    }
    case "closed":
      text = `closed (${describeClose(event)})`;
      break;
    default:
      text = event.state;
  }
  element.dataset.state = event.state;
  if (element.textContent !== text) {
    element.textContent = text;
    element.title = text;
  }
}

// Returns "code 1001: reason" for a close event, with the standard name when the reason is
// empty (browsers report an unreachable gateway as 1006 with no reason).
function describeClose(event) {
  if (!event) {
    return "";
  }
  const reason = event.reason || CLOSE_NAMES[event.code] || "";
  return reason ? `code ${event.code}: ${reason}` : `code ${event.code}`;
}

const CLOSE_NAMES = {
  1000: "normal closure",
  1001: "going away",
  1006: "connection lost or refused",
  1008: "policy violation",
  1009: "message too big",
  1011: "server error",
  4000: "no data from the gateway",
};

// ---- Subscription -----------------------------------------------------------------------

function subscribe(filter, lastCount) {
  if (subscription) {
    // The reply does not matter: the old subscription is gone locally either way.
    client.unsubscribe(subscription).catch(() => {});
    subscription = null;
  }
  const options = {
    onMessage: handleMessage,
    onSubscribed: (reply) => {
      setStatus(elements["filter-status"], `subscribed to ${reply.filter}`, "ok");
    },
    onGap: (info) => {
      if (info.resumed) {
        setNotice(`Messages sent while disconnected could not be recovered for ${info.filter}: some rows may show older values.`);
      } else {
        setNotice(`The gateway has no history for ${info.filter}: the table shows new messages only.`);
      }
    },
    onError: (error) => {
      setStatus(elements["filter-status"], `${error.code}: ${error.message}`, "error");
      if (subscription && subscription.filter === filter) {
        subscription = null;
      }
    },
  };
  if (lastCount > 0) {
    options.history = { last: lastCount };
  }
  subscription = client.subscribe(filter, options);
  setStatus(elements["filter-status"], client.state === "open" ? `subscribing to ${filter}…` : `will subscribe to ${filter} when connected`, "");
}

elements["filter-form"].addEventListener("submit", (event) => {
  event.preventDefault();
  const filter = elements.filter.value.trim();
  if (filter === "") {
    setStatus(elements["filter-status"], "enter a topic filter, for example # or sensors/+/temp", "error");
    return;
  }
  const lastCount = Math.max(0, Math.floor(Number(elements.history.value) || 0));
  clearTable();
  setNotice("");
  subscribe(filter, lastCount);
});

// ---- Table ------------------------------------------------------------------------------

function handleMessage(message) {
  receivedCount += 1;
  if (typeof message.seq === "number" && (highestSeq === null || message.seq > highestSeq)) {
    highestSeq = message.seq;
  }
  // Re-insert so the Map keeps the most recently updated topic last.
  pendingUpdates.delete(message.topic);
  pendingUpdates.set(message.topic, message);
  if (pendingUpdates.size > MAX_ROWS) {
    // Only MAX_ROWS topics survive the next render anyway.
    pendingUpdates.delete(pendingUpdates.keys().next().value);
  }
  scheduleRender();
}

function scheduleRender() {
  if (!frameRequested && !elements.pause.checked) {
    frameRequested = true;
    requestAnimationFrame(render);
  }
}

function render() {
  frameRequested = false;
  if (elements.pause.checked) {
    return;
  }
  const now = Date.now();
  for (const [topic, message] of pendingUpdates) {
    let entry = rows.get(topic);
    if (entry) {
      rows.delete(topic);
    } else {
      entry = createRow(topic);
    }
    rows.set(topic, entry);
    updateRow(entry, message, now);
  }
  pendingUpdates.clear();
  // Adding the class back on the next frame restarts the highlight animation without the
  // forced layout per row that reading offsetWidth would cause.
  if (flashRows.length > 0) {
    const flashed = flashRows;
    flashRows = [];
    requestAnimationFrame(() => {
      for (const row of flashed) {
        row.classList.add("flash");
      }
    });
  }

  while (rows.size > MAX_ROWS) {
    const [oldestTopic, oldest] = rows.entries().next().value;
    removeRow(oldestTopic, oldest);
    evictedCount += 1;
  }
  elements["server-seq"].textContent = highestSeq === null ? "–" : String(highestSeq);
  renderSummary();
}

function createRow(topic) {
  const row = document.createElement("div");
  row.className = "grid-row";
  row.setAttribute("role", "row");
  const topicCell = document.createElement("span");
  topicCell.setAttribute("role", "rowheader");
  topicCell.className = "topic";
  topicCell.textContent = topic;
  topicCell.title = topic;

  const valueCell = document.createElement("span");
  valueCell.setAttribute("role", "cell");
  valueCell.className = "value";
  const valueButton = document.createElement("button");
  valueButton.type = "button";
  valueButton.className = "value-button";
  valueButton.addEventListener("click", () => openDetail(topic));
  valueCell.append(valueButton);

  const encodingCell = createCell("encoding");
  const seqCell = createCell("num");
  const ageCell = createCell("num age");
  row.append(topicCell, valueCell, encodingCell, seqCell, ageCell);

  const index = sortedIndex(topic);
  sortedTopics.splice(index, 0, topic);
  const next = index + 1 < sortedTopics.length ? rows.get(sortedTopics[index + 1]) : null;
  elements["topics-body"].insertBefore(row, next ? next.row : null);
  return { message: null, row, valueButton, encodingCell, seqCell, ageCell, shownAge: "" };
}

function createCell(className) {
  const cell = document.createElement("span");
  cell.setAttribute("role", "cell");
  cell.className = className;
  return cell;
}

function removeRow(topic, entry) {
  entry.row.remove();
  rows.delete(topic);
  const index = sortedIndex(topic);
  if (sortedTopics[index] === topic) {
    sortedTopics.splice(index, 1);
  }
}

// Orders topics as people read them: "room2" before "room10".
const topicCollator = new Intl.Collator("en", { numeric: true });

// Returns the position of topic in sortedTopics, or where it would be inserted.
function sortedIndex(topic) {
  let low = 0;
  let high = sortedTopics.length;
  while (low < high) {
    const middle = (low + high) >>> 1;
    if (compareTopics(sortedTopics[middle], topic) < 0) {
      low = middle + 1;
    } else {
      high = middle;
    }
  }
  return low;
}

// The collator alone would treat some distinct topics as equal (for example "a/01" and
// "a/1"), so plain code unit order breaks ties and keeps the order total.
function compareTopics(a, b) {
  const order = topicCollator.compare(a, b);
  if (order !== 0) {
    return order;
  }
  if (a === b) {
    return 0;
  }
  return a < b ? -1 : 1;
}

function updateRow(entry, message, now) {
  entry.message = message;
  const preview = formatValue(message, false);
  const previewText = preview.length > PREVIEW_CHARS ? `${preview.slice(0, PREVIEW_CHARS - 1)}…` : preview;
  entry.valueButton.textContent = previewText === "" ? "(empty)" : previewText;
  entry.valueButton.classList.toggle("empty-value", previewText === "");
  entry.valueButton.title = preview.length > TOOLTIP_CHARS ? `${preview.slice(0, TOOLTIP_CHARS)}… (click for the full value)` : preview;
  entry.valueButton.setAttribute("aria-label", `Show full value of ${message.topic}`);
  entry.encodingCell.textContent = message.encoding;
  entry.encodingCell.title = message.history ? "from history" : "";
  entry.seqCell.textContent = message.seq === undefined ? "" : String(message.seq);
  entry.row.classList.toggle("history", message.history);
  rowUpdatesThisSecond += 1;
  if (flashEnabled) {
    entry.row.classList.remove("flash");
    flashRows.push(entry.row);
  }
  updateAge(entry, now);
}

function updateAge(entry, now) {
  const text = formatAge(entry.message.ts, now);
  if (text !== entry.shownAge) {
    entry.shownAge = text;
    entry.ageCell.textContent = text;
  }
}

function formatAge(ts, now) {
  if (typeof ts !== "number") {
    return "";
  }
  // Clock skew between the gateway and the browser can make ts slightly newer than now.
  const seconds = Math.max(0, Math.floor((now - ts) / 1000));
  if (seconds < 60) {
    return `${seconds} s ago`;
  }
  if (seconds < 3600) {
    return `${Math.floor(seconds / 60)} min ago`;
  }
  if (seconds < 86400) {
    return `${Math.floor(seconds / 3600)} h ago`;
  }
  return `${Math.floor(seconds / 86400)} d ago`;
}

// Returns the payload as text: compact JSON for the table, indented JSON when pretty.
function formatValue(message, pretty) {
  const payload = message.payload;
  switch (message.encoding) {
    case "json":
      return formatJson(payload, pretty ? 2 : 0);
    case "base64":
      return pretty ? hexDump(payload) : `${payload.length} bytes: ${hexPreview(payload, 32)}`;
    default:
      return String(payload);
  }
}

function formatJson(value, indent) {
  // Plain JSON.stringify throws on a BigInt, so the replacer writes its digits as a number.
  return JSON.stringify(value, (key, item) => (typeof item === "bigint" ? rawJsonNumber(item) : item), indent) ?? "";
}

function rawJsonNumber(bigint) {
  if (typeof JSON.rawJSON === "function") {
    return JSON.rawJSON(bigint.toString());
  }
  // NOTE: browsers without JSON.rawJSON show the digits as a quoted string.
  return bigint.toString();
}

function hexPreview(bytes, count) {
  const parts = [];
  for (let i = 0; i < Math.min(count, bytes.length); i++) {
    parts.push(bytes[i].toString(16).padStart(2, "0"));
  }
  return parts.join(" ") + (bytes.length > count ? " …" : "");
}

function hexDump(bytes) {
  const lines = [];
  for (let offset = 0; offset < bytes.length; offset += 16) {
    const chunk = bytes.subarray(offset, offset + 16);
    const hex = Array.from(chunk, (b) => b.toString(16).padStart(2, "0")).join(" ");
    const text = Array.from(chunk, (b) => (b >= 0x20 && b < 0x7f ? String.fromCharCode(b) : ".")).join("");
    lines.push(`${offset.toString(16).padStart(8, "0")}  ${hex.padEnd(47)}  ${text}`);
  }
  return lines.join("\n");
}

function clearTable() {
  for (const entry of rows.values()) {
    entry.row.remove();
  }
  rows.clear();
  sortedTopics.length = 0;
  pendingUpdates.clear();
  evictedCount = 0;
  renderSummary();
}

function renderSummary() {
  const parts = [`${rows.size} ${rows.size === 1 ? "topic" : "topics"}`];
  if (evictedCount > 0) {
    parts.push(`${evictedCount} least recently updated removed (limit ${MAX_ROWS})`);
  }
  if (elements.pause.checked) {
    parts.push(`paused, ${pendingUpdates.size} topics waiting`);
  }
  elements["topics-summary"].textContent = parts.join(", ");
  elements.empty.hidden = rows.size > 0;
}

elements.pause.addEventListener("change", () => {
  if (!elements.pause.checked) {
    scheduleRender();
  }
  renderSummary();
});

elements.clear.addEventListener("click", clearTable);

// Once per second: ages, the reconnect countdown and the message rate.
let lastTick = performance.now();
let lastReceivedCount = 0;
setInterval(() => {
  const now = Date.now();
  if (!elements.pause.checked) {
    for (const entry of rows.values()) {
      updateAge(entry, now);
    }
  } else {
    renderSummary();
  }
  renderState();
  const tick = performance.now();
  const rate = ((receivedCount - lastReceivedCount) * 1000) / (tick - lastTick);
  lastTick = tick;
  lastReceivedCount = receivedCount;
  elements["message-rate"].textContent = `${Math.round(rate)}/s`;
  flashEnabled = rowUpdatesThisSecond < MAX_FLASHES_PER_SECOND;
  rowUpdatesThisSecond = 0;
}, 1000);

// ---- Detail dialog ----------------------------------------------------------------------

let detailTopic = null;

function openDetail(topic) {
  const entry = rows.get(topic);
  if (!entry) {
    return;
  }
  const message = entry.message;
  detailTopic = topic;
  elements["detail-topic"].textContent = topic;
  const time = typeof message.ts === "number" ? new Date(message.ts).toISOString() : "unknown time";
  elements["detail-meta"].textContent =
    `seq ${message.seq}, ${time}, QoS ${message.qos}, ${message.retain ? "retained, " : ""}` +
    `${message.history ? "from history, " : ""}encoding ${message.encoding}`;
  elements["detail-value"].textContent = formatValue(message, true);
  elements.detail.showModal();
}

elements["detail-copy"].addEventListener("click", async () => {
  try {
    await navigator.clipboard.writeText(elements["detail-value"].textContent);
    elements["detail-copy"].textContent = "Copied";
  } catch (error) {
    elements["detail-copy"].textContent = "Copy failed";
  }
  setTimeout(() => {
    elements["detail-copy"].textContent = "Copy value";
  }, 1500);
});

elements["detail-use"].addEventListener("click", () => {
  elements.detail.close();
  elements["publish-topic"].value = detailTopic || "";
  elements["publish-payload"].focus();
});

// ---- Publish ----------------------------------------------------------------------------

elements["publish-form"].addEventListener("submit", async (event) => {
  event.preventDefault();
  const status = elements["publish-status"];
  const topic = elements["publish-topic"].value;
  const text = elements["publish-payload"].value;
  let payload = text;
  if (elements["publish-format"].value === "json") {
    try {
      // BigInt keeps every digit of large integers, which the client writes back unchanged.
      payload = parseJson(text, { bigInt: true });
    } catch (error) {
      setStatus(status, `invalid JSON: ${error.message}`, "error");
      return;
    }
  }
  const options = { qos: Number(elements["publish-qos"].value), retain: elements["publish-retain"].checked };
  setStatus(status, "publishing…", "");
  try {
    await client.publish(topic, payload, options);
    setStatus(status, `published to ${topic} at ${new Date().toLocaleTimeString()}`, "ok");
  } catch (error) {
    setStatus(status, `${error.code || "error"}: ${error.message}`, "error");
  }
});

// The column headings stick below the page header, whose height changes when it wraps.
const header = document.querySelector("header.top");
new ResizeObserver(() => {
  document.documentElement.style.setProperty("--header-height", `${header.offsetHeight}px`);
}).observe(header);

// ---- Helpers ----------------------------------------------------------------------------

function setStatus(output, text, kind) {
  output.textContent = text;
  output.dataset.kind = kind;
}

function setNotice(text) {
  elements.notice.textContent = text;
  elements.notice.hidden = text === "";
}

subscribe(elements.filter.value.trim() || "#", Number(elements.history.value) || 0);
