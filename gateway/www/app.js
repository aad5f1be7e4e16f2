// Tidegate dashboard page: the connection header, the device and topic tree, and the
// widgets of one dashboard.
//
// The gateway serves this page at / (the overview built from the topics it has received) and at
// /d/NAME (the dashboard NAME of the dashboards file, from GET /api/v1/dashboards).
// Messages can arrive at thousands per second: handlers only store them, and each widget
// draws at most once per animation frame (feeds.js).

import { TidegateClient, topicMatches } from "./tidegate.js";
import { FeedManager } from "./feeds.js";
import { element, formatPayload, numericFields, positionOf } from "./format.js";
import { TopicTree } from "./tree.js";
import { ChartWidget, ChatWidget, GaugeWidget, InspectorWidget, TableWidget, ValueWidget } from "./widgets.js";
import { MapWidget } from "./plane.js";

const WIDGET_TYPES = {
  value: ValueWidget,
  gauge: GaugeWidget,
  chart: ChartWidget,
  map: MapWidget,
  table: TableWidget,
  chat: ChatWidget,
  inspector: InspectorWidget,
};
// Messages per second per topic for the tree's own subscription: it shows only the latest.
const TREE_RATE = 1;

const elements = Object.fromEntries(
  [
    "state", "state-announcement", "server-version", "server-epoch", "server-seq", "message-rate", "reconnect-now",
    "dashboard-nav", "dashboard-title", "dashboard", "page-notice", "tree",
    "detail", "detail-topic", "detail-meta", "detail-value", "detail-chart", "detail-inspect", "detail-publish",
  ].map((id) => [id, document.getElementById(id)]),
);

// A gateway that requires authentication takes a token in the page's URL
// fragment (#access_token=...), which browsers never send to servers or logs.
const pageToken = new URLSearchParams(location.hash.slice(1)).get("access_token") || undefined;
const client = new TidegateClient({ bigInt: true, autoConnect: false, token: pageToken });
const feeds = new FeedManager(client);
const widgets = [];
let tree = null;
let treeFilter = "#";
let receivedCount = 0;
let highestSeq = null;

// A handle for tests and for debugging from the browser console.
window.tidegate = { client, feeds, widgets, tree: null, ready: false };

// ---- Connection state and server info --------------------------------------------------

let lastState = null;
let lastClose = null;
let reconnectAt = 0;

client.on("state", (event) => {
  lastState = event;
  if (event.state === "closed") {
    lastClose = event;
  }
  if (event.state === "reconnecting") {
    reconnectAt = event.at;
  }
  elements["reconnect-now"].hidden = event.state !== "reconnecting";
  renderState();
  // The visible state counts down every second, so screen readers get this separate line,
  // which changes only with the state.
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
  renderSeq();
});

client.on("message", (message) => {
  receivedCount += 1;
  if (typeof message.seq === "number" && (highestSeq === null || message.seq > highestSeq)) {
    highestSeq = message.seq;
  }
  if (tree && topicMatches(treeFilter, message.topic)) {
    tree.update(message);
  }
});

client.on("error", (error) => setNotice(`Gateway error ${error.code}: ${error.message}`));

elements["reconnect-now"].addEventListener("click", () => client.reconnectNow());

function renderState() {
  const event = lastState;
  if (!event) {
    return;
  }
  let text;
  switch (event.state) {
    case "connecting":
      text = "connecting…";
      break;
    case "open":
      text = "live";
      break;
    case "reconnecting":
      text = `reconnecting in ${Math.max(0, Math.ceil((reconnectAt - Date.now()) / 1000))} s (${describeClose(lastClose)})`;
      break;
    case "closed":
      text = `closed (${describeClose(event)})`;
      break;
    default:
      text = event.state;
  }
  elements.state.dataset.state = event.state;
  if (elements.state.textContent !== text) {
    elements.state.textContent = text;
    elements.state.title = text;
  }
}

function renderSeq() {
  const text = highestSeq === null ? "–" : String(highestSeq);
  if (elements["server-seq"].textContent !== text) {
    elements["server-seq"].textContent = text;
  }
}

// Returns "code 1001: reason", with the standard name when the reason is empty (browsers
// report an unreachable gateway as 1006 with no reason).
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

function setNotice(text) {
  elements["page-notice"].textContent = text;
  elements["page-notice"].hidden = text === "";
}

// ---- Dashboards -------------------------------------------------------------------------

/** Returns the dashboard name of the page URL: "NAME" for /d/NAME, null for the overview. */
function dashboardName() {
  const match = /^\/d\/([^/]+)\/?$/.exec(location.pathname);
  return match ? decodeURIComponent(match[1]) : null;
}

async function fetchJson(path) {
  const response = await fetch(path);
  if (!response.ok) {
    throw new Error(`GET ${path} failed with HTTP ${response.status}`);
  }
  return response.json();
}

async function loadDashboards() {
  try {
    const body = await fetchJson("/api/v1/dashboards");
    return Array.isArray(body.dashboards) ? body.dashboards : [];
  } catch (error) {
    // A gateway without a dashboards file returns an empty list, so this is
    // only reached when the request fails.
    setNotice(`The dashboards could not be loaded: ${error.message}`);
    return [];
  }
}

async function loadTopics() {
  try {
    const body = await fetchJson("/api/v1/topics");
    return Array.isArray(body.topics) ? body.topics : [];
  } catch (error) {
    setNotice(`The latest values could not be loaded: ${error.message}`);
    return [];
  }
}

function renderNav(dashboards, current) {
  const list = element("ul");
  const add = (href, text, active) => {
    list.append(element("li", {}, element("a", { href, text, "aria-current": active ? "page" : null })));
  };
  add("/", "Overview", current === null);
  for (const dashboard of dashboards) {
    add(`/d/${encodeURIComponent(dashboard.name)}`, dashboard.title || dashboard.name, dashboard.name === current);
  }
  elements["dashboard-nav"].replaceChildren(list);
}

/** Returns the overview dashboard, built from the latest message of each topic. */
function overviewDashboard(topics) {
  let chartFilter = null;
  let hasPositions = false;
  for (const message of topics) {
    if (message.encoding !== "json") {
      continue;
    }
    if (positionOf(message.payload)) {
      hasPositions = true;
    } else if (chartFilter === null && numericFields(message.payload).length > 0) {
      chartFilter = message.topic;
    }
  }
  const widgets = [
    { type: "chart", title: "Chart", filter: chartFilter || "#", range_s: 900, editable: true, w: 12, h: 2 },
    { type: "inspector", title: "Message inspector", filter: "#", w: hasPositions ? 6 : 12, h: 2 },
  ];
  if (hasPositions) {
    widgets.push({ type: "map", title: "Positions", filter: "#", range_s: 3600, w: 6, h: 2 });
  }
  widgets.push({ type: "chat", title: "Chat and commands", filter: "chat/#", topic: "chat/general", w: 12, h: 2 });
  return { name: "", title: "Overview", widgets, settings: {} };
}

function buildWidgets(dashboard) {
  const context = { client, feeds, settings: dashboard.settings || {} };
  const grid = elements.dashboard;
  if (Number.isInteger(dashboard.columns)) {
    grid.style.setProperty("--columns", String(dashboard.columns));
  }
  dashboard.widgets.forEach((spec, index) => {
    const Type = WIDGET_TYPES[spec.type];
    if (!Type) {
      grid.append(element("p", { className: "widget widget-error", text: `Widget ${index + 1}: unknown type "${spec.type}".` }));
      return;
    }
    try {
      const widget = new Type(context, { id: `w${index}`, ...spec });
      widgets.push(widget);
      grid.append(widget.element);
    } catch (error) {
      grid.append(element("p", { className: "widget widget-error", text: `Widget ${index + 1} (${spec.type}) failed: ${error.message}` }));
      console.error(error);
    }
  });
}

// ---- Topic detail -----------------------------------------------------------------------

let detailTopic = null;

function openDetail(path, message) {
  detailTopic = path;
  elements["detail-topic"].textContent = path;
  if (message) {
    const time = typeof message.ts === "number" ? new Date(message.ts).toISOString() : "unknown time";
    elements["detail-meta"].textContent =
      `seq ${message.seq}, ${time}, QoS ${message.qos}, ${message.retain ? "retained, " : ""}encoding ${message.encoding}`;
    elements["detail-value"].textContent = formatPayload(message, true);
  } else {
    elements["detail-meta"].textContent = "A level of the topic tree with no message of its own.";
    elements["detail-value"].textContent = "";
  }
  elements["detail-chart"].hidden = !widgets.some((widget) => widget instanceof ChartWidget && widget.spec.editable);
  elements["detail-inspect"].hidden = !widgets.some((widget) => widget instanceof InspectorWidget);
  elements["detail-publish"].hidden = !widgets.some((widget) => widget instanceof ChatWidget);
  elements.detail.showModal();
}

// A tree level stands for all topics below it.
function detailFilter() {
  return tree && tree.latest.has(detailTopic) ? detailTopic : `${detailTopic}/#`;
}

elements["detail-chart"].addEventListener("click", () => {
  const chart = widgets.find((widget) => widget instanceof ChartWidget && widget.spec.editable);
  chart.setFilter(detailFilter());
  elements.detail.close();
  chart.element.scrollIntoView({ block: "nearest" });
});

elements["detail-inspect"].addEventListener("click", () => {
  const inspector = widgets.find((widget) => widget instanceof InspectorWidget);
  inspector.setFilter(detailFilter());
  elements.detail.close();
  inspector.element.scrollIntoView({ block: "nearest" });
});

elements["detail-publish"].addEventListener("click", () => {
  const chat = widgets.find((widget) => widget instanceof ChatWidget);
  elements.detail.close();
  chat.topicInput.value = detailTopic;
  chat.formatSelect.value = "json";
  chat.textInput.focus();
});

// ---- Start ------------------------------------------------------------------------------

async function start() {
  const name = dashboardName();
  const [dashboards, topics] = await Promise.all([loadDashboards(), loadTopics()]);
  renderNav(dashboards, name);
  let dashboard;
  if (name === null) {
    dashboard = overviewDashboard(topics);
  } else {
    dashboard = dashboards.find((candidate) => candidate.name === name);
    if (!dashboard) {
      setNotice(`There is no dashboard named "${name}". Showing the overview.`);
      dashboard = overviewDashboard(topics);
    }
  }
  const title = dashboard.title || dashboard.name || "Overview";
  elements["dashboard-title"].textContent = title;
  document.title = `${title} – Tidegate`;

  const settings = dashboard.settings || {};
  tree = new TopicTree(elements.tree, settings, openDetail);
  window.tidegate.tree = tree;
  treeFilter = settings.tree_filter || "#";
  for (const message of topics) {
    if (topicMatches(treeFilter, message.topic)) {
      tree.update({ ...message, retain: message.retain === true, history: false });
    }
  }
  // The tree also takes every message of the other subscriptions (the "message" handler
  // above); this one adds the topics no widget subscribes to.
  feeds.add({ filter: treeFilter, maxRate: TREE_RATE, onMessage: () => {} });
  buildWidgets(dashboard);
  client.connect();
  window.tidegate.ready = true;
}

// Once per second: ages, stale devices, the reconnect countdown and the message rate.
let lastTick = performance.now();
let lastReceivedCount = 0;
setInterval(() => {
  renderState();
  renderSeq();
  if (tree) {
    tree.refresh();
  }
  for (const widget of widgets) {
    widget.tick();
  }
  const tick = performance.now();
  const rate = ((receivedCount - lastReceivedCount) * 1000) / (tick - lastTick);
  lastTick = tick;
  lastReceivedCount = receivedCount;
  elements["message-rate"].textContent = `${Math.round(rate)}/s`;
}, 1000);

start().catch((error) => {
  setNotice(`The dashboard failed to start: ${error.message}`);
  console.error(error);
});

// The sidebar sticks below the page header, whose height changes when it wraps.
const header = document.querySelector("header.top");
new ResizeObserver(() => {
  document.documentElement.style.setProperty("--header-height", `${header.offsetHeight}px`);
}).observe(header);
