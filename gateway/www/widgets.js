// Dashboard widgets: value, gauge, chart, table, chat and inspector. The map widget is in
// plane.js. Each widget takes messages from a shared feed (feeds.js), keeps a bounded amount
// of data, and draws in render(), which the scheduler calls at most once per animation frame.

import { invalidate } from "./feeds.js";
import {
  element, formatAge, formatJson, formatPayload, formatScalar, formatTime, getField, numericFields,
  setStatus, toNumber, uniqueId,
} from "./format.js";
import { parseJson, topicMatches } from "./tidegate.js";

// Messages per second per topic that value, gauge and table widgets ask the gateway for.
export const CONFLATED_RATE = 4;

/** Base class: a titled panel placed in the dashboard grid. */
export class Widget {
  constructor(context, spec) {
    this.context = context;
    this.spec = spec;
    this.id = spec.id || uniqueId(spec.type);
    this.titleId = uniqueId("title");
    this.heading = element("h2", { id: this.titleId, text: spec.title || `${spec.type}: ${spec.filter}` });
    this.tools = element("div", { className: "widget-tools" });
    this.body = element("div", { className: "widget-body" });
    this.note = element("p", { className: "widget-note", role: "status", hidden: true });
    this.element = element(
      "section",
      { className: `widget widget-${spec.type}`, "aria-labelledby": this.titleId, "data-widget": this.id, "data-type": spec.type },
      element("header", { className: "widget-head" }, this.heading, this.tools),
      this.note,
      this.body,
    );
    placeInGrid(this.element, spec);
    this.handles = [];
  }

  /** Adds a feed consumer for this widget. unwatchAll() removes it again. */
  watch(consumer) {
    const handle = this.context.feeds.add({
      onGap: (info) => this.showNote(info.resumed
        ? "Some messages sent while disconnected could not be recovered."
        : "The gateway's window does not reach back that far: older messages are missing."),
      onError: (error) => this.showNote(`${error.code}: ${error.message}`),
      ...consumer,
    });
    this.handles.push(handle);
    return handle;
  }

  unwatchAll() {
    for (const handle of this.handles) {
      handle.remove();
    }
    this.handles = [];
  }

  showNote(text) {
    this.note.textContent = text;
    this.note.hidden = text === "";
  }

  /** Called once a second, for ages and stale states. */
  tick() {}

  /** Returns the widget's data for tests and debugging. */
  snapshot() {
    return {};
  }

  render() {}
}

function placeInGrid(node, spec) {
  if (Number.isInteger(spec.x) && Number.isInteger(spec.w)) {
    node.style.gridColumn = `${spec.x + 1} / span ${spec.w}`;
  } else if (Number.isInteger(spec.w)) {
    node.style.gridColumn = `span ${spec.w}`;
  }
  if (Number.isInteger(spec.y) && Number.isInteger(spec.h)) {
    node.style.gridRow = `${spec.y + 1} / span ${spec.h}`;
  } else if (Number.isInteger(spec.h)) {
    node.style.gridRow = `span ${spec.h}`;
  }
}

// Returns the field paths of a widget spec: "fields", or "field" as a list, or [].
function specFields(spec) {
  if (Array.isArray(spec.fields)) {
    return spec.fields;
  }
  if (typeof spec.field === "string") {
    return [spec.field];
  }
  return [];
}

// Returns the label of a topic in a widget: the levels that differ between matching topics,
// which are the wildcard levels of the filter, or the whole topic.
function shortTopic(filter, topic) {
  const filterLevels = filter.split("/");
  const topicLevels = topic.split("/");
  const parts = [];
  for (let i = 0; i < topicLevels.length; i++) {
    const level = filterLevels[i];
    if (level === "#") {
      parts.push(...topicLevels.slice(i));
      break;
    }
    if (level === "+") {
      parts.push(topicLevels[i]);
    }
  }
  return parts.length > 0 ? parts.join("/") : topic;
}

// ---- Value and gauge --------------------------------------------------------------------

// Topics one value or gauge widget shows at most.
const MAX_VALUE_TOPICS = 24;

/** The latest value of one field of every topic that matches the filter. */
export class ValueWidget extends Widget {
  constructor(context, spec) {
    super(context, spec);
    this.field = typeof spec.field === "string" ? spec.field : "";
    this.latest = new Map();
    this.rows = new Map();
    this.list = element("ul", { className: "values" });
    this.body.append(this.list);
    this.watch({
      filter: spec.filter,
      latest: true,
      maxRate: spec.max_rate ?? CONFLATED_RATE,
      onMessage: (message) => this.handleMessage(message),
    });
  }

  handleMessage(message) {
    if (!this.latest.has(message.topic) && this.latest.size >= MAX_VALUE_TOPICS) {
      return;
    }
    this.latest.set(message.topic, message);
    this.dirty = true;
    invalidate(this);
  }

  valueOf(message) {
    return getField(message.payload, this.field);
  }

  render() {
    const now = Date.now();
    for (const [topic, message] of this.latest) {
      let row = this.rows.get(topic);
      if (!row) {
        row = this.createRow(topic);
        this.rows.set(topic, row);
        insertSorted(this.list, row.item, topic);
      }
      this.updateRow(row, message, now);
    }
  }

  createRow(topic) {
    const label = element("span", { className: "value-label", text: shortTopic(this.spec.filter, topic), title: topic });
    const value = element("span", { className: "value-number" });
    const unit = element("span", { className: "value-unit", text: this.spec.unit || "" });
    const age = element("span", { className: "value-age muted" });
    const item = element("li", { "data-topic": topic }, label, element("span", { className: "value-main" }, value, unit), age);
    return { item, value, age };
  }

  updateRow(row, message, now) {
    const text = formatScalar(this.valueOf(message), this.spec.decimals);
    if (row.value.textContent !== text) {
      row.value.textContent = text;
    }
    row.age.textContent = formatAge(message.ts, now);
  }

  tick() {
    invalidate(this);
  }

  snapshot() {
    return Object.fromEntries([...this.latest].map(([topic, message]) => [topic, this.valueOf(message)]));
  }
}

/** A value drawn on a half-circle scale from spec.min to spec.max. */
export class GaugeWidget extends ValueWidget {
  createRow(topic) {
    const row = super.createRow(topic);
    const svgNs = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(svgNs, "svg");
    svg.setAttribute("viewBox", "0 0 100 56");
    svg.setAttribute("class", "gauge");
    svg.setAttribute("aria-hidden", "true");
    const track = document.createElementNS(svgNs, "path");
    track.setAttribute("d", "M 8 50 A 42 42 0 0 1 92 50");
    track.setAttribute("class", "gauge-track");
    const bar = document.createElementNS(svgNs, "path");
    bar.setAttribute("d", "M 8 50 A 42 42 0 0 1 92 50");
    bar.setAttribute("class", "gauge-bar");
    bar.setAttribute("pathLength", "100");
    svg.append(track, bar);
    row.item.prepend(svg);
    row.bar = bar;
    return row;
  }

  updateRow(row, message, now) {
    super.updateRow(row, message, now);
    const min = typeof this.spec.min === "number" ? this.spec.min : 0;
    const max = typeof this.spec.max === "number" ? this.spec.max : 100;
    const value = toNumber(this.valueOf(message));
    const share = value === null || max <= min ? 0 : Math.min(1, Math.max(0, (value - min) / (max - min)));
    row.bar.style.strokeDasharray = `${(share * 100).toFixed(2)} 100`;
    row.item.setAttribute("aria-label", `${shortTopic(this.spec.filter, message.topic)}: ${row.value.textContent} ${this.spec.unit || ""} on a scale of ${min} to ${max}`);
  }
}

// ---- Chart ------------------------------------------------------------------------------

// Points one chart keeps at most, over all series. Older points are dropped first.
const MAX_CHART_POINTS = 50000;
// Series one chart draws at most.
const MAX_SERIES = 16;
const SERIES_COLORS = ["#0b63ce", "#c0262d", "#17803d", "#9a5b00", "#7b3fc4", "#00838f", "#d1495b", "#5b6470"];
export const RANGE_CHOICES = [
  [300, "5 minutes"],
  [900, "15 minutes"],
  [3600, "1 hour"],
  [21600, "6 hours"],
  [86400, "24 hours"],
];

/**
 * Numeric JSON fields over time. spec.fields lists the field paths; without it the chart
 * offers every numeric field it receives as a check box. spec.range_s is the time range.
 */
export class ChartWidget extends Widget {
  constructor(context, spec) {
    super(context, spec);
    this.minIntervalMs = 100;
    this.rangeS = spec.range_s || 900;
    this.fixedFields = specFields(spec);
    // Fields the user checked; starts with the spec's fields.
    this.selected = new Set(this.fixedFields);
    this.knownFields = new Set(this.fixedFields);
    // Series: key "topic\u0000field" -> {topic, field, label}; the column order of the data.
    this.series = new Map();
    // Rows: x (seconds), seq, and one value column per series (null where that series has
    // no point at this row).
    this.xs = [];
    this.seqs = [];
    this.columns = [];
    this.plot = null;
    this.structureChanged = true;

    this.buildTools();
    this.plotArea = element("div", { className: "chart-plot", role: "img", "aria-label": `Chart of ${spec.title || spec.filter}` });
    this.legendNote = element("p", { className: "muted chart-empty", text: "Waiting for numeric values…" });
    this.body.append(this.fieldList, this.legendNote, this.plotArea);
    this.subscribe();
    new ResizeObserver(() => this.resize()).observe(this.plotArea);
  }

  buildTools() {
    const rangeId = uniqueId("range");
    this.rangeSelect = element("select", { id: rangeId });
    for (const [seconds, label] of RANGE_CHOICES) {
      this.rangeSelect.append(element("option", { value: seconds, text: label, selected: seconds === this.rangeS }));
    }
    if (!RANGE_CHOICES.some(([seconds]) => seconds === this.rangeS)) {
      this.rangeSelect.prepend(element("option", { value: this.rangeS, text: `${this.rangeS} s`, selected: true }));
    }
    this.rangeSelect.addEventListener("change", () => {
      this.rangeS = Number(this.rangeSelect.value);
      this.reset();
    });
    this.tools.append(element("label", { for: rangeId, text: "Range" }), this.rangeSelect);
    if (this.spec.editable) {
      const filterId = uniqueId("chart-filter");
      this.filterInput = element("input", { id: filterId, value: this.spec.filter, autocomplete: "off", spellcheck: "false", required: true });
      const form = element("form", { className: "chart-filter" },
        element("label", { for: filterId, text: "Topic filter" }), this.filterInput,
        element("button", { type: "submit", text: "Plot" }));
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        this.setFilter(this.filterInput.value.trim());
      });
      this.tools.prepend(form);
    }
    this.fieldList = element("fieldset", { className: "field-picker", hidden: true },
      element("legend", { text: "Fields" }));
  }

  subscribe() {
    this.unwatchAll();
    this.watch({
      filter: this.filter(),
      sinceMs: Date.now() - this.rangeS * 1000,
      onMessage: (message) => this.handleMessage(message),
      onHistory: (info) => info.truncated && this.showNote("History was cut at the gateway's limit: older points are missing."),
    });
  }

  filter() {
    return this.spec.filter;
  }

  /** Plots another filter, offering its numeric fields again. */
  setFilter(filter) {
    if (filter === "" || filter === this.spec.filter) {
      return;
    }
    this.spec = { ...this.spec, filter };
    if (this.filterInput) {
      this.filterInput.value = filter;
    }
    this.selected = new Set(this.fixedFields);
    this.knownFields = new Set(this.fixedFields);
    this.fieldList.replaceChildren(element("legend", { text: "Fields" }));
    this.fieldList.hidden = true;
    this.dropSeries();
    this.reset();
  }

  /** Drops all points and loads the chosen range again. */
  reset() {
    this.xs = [];
    this.seqs = [];
    this.columns = this.columns.map(() => []);
    this.showNote("");
    this.subscribe();
    invalidate(this);
  }

  handleMessage(message) {
    if (message.encoding !== "json") {
      return;
    }
    if (this.fixedFields.length === 0) {
      for (const path of numericFields(message.payload)) {
        if (!this.knownFields.has(path)) {
          this.knownFields.add(path);
          this.addFieldChoice(path);
        }
      }
    }
    let row = null;
    for (const field of this.selected) {
      const value = toNumber(getField(message.payload, field));
      if (value === null) {
        continue;
      }
      const column = this.seriesIndex(message.topic, field);
      if (column < 0) {
        continue;
      }
      if (row === null) {
        row = this.appendRow(message);
      }
      this.columns[column][row] = value;
    }
    if (row !== null) {
      invalidate(this);
    }
  }

  appendRow(message) {
    // uPlot needs ascending x. ts comes from the gateway host's wall clock, which can step
    // back, so a point with an older ts than the previous one is drawn at the previous time.
    const last = this.xs.length > 0 ? this.xs[this.xs.length - 1] : -Infinity;
    this.xs.push(Math.max(message.ts / 1000, last));
    this.seqs.push(message.seq);
    for (const column of this.columns) {
      column.push(null);
    }
    if (this.xs.length > MAX_CHART_POINTS * 1.1) {
      this.dropRows(this.xs.length - MAX_CHART_POINTS);
    }
    return this.xs.length - 1;
  }

  dropRows(count) {
    this.xs.splice(0, count);
    this.seqs.splice(0, count);
    for (const column of this.columns) {
      column.splice(0, count);
    }
  }

  seriesIndex(topic, field) {
    const key = `${topic}\u0000${field}`;
    const existing = this.series.get(key);
    if (existing) {
      return existing.index;
    }
    if (this.series.size >= MAX_SERIES) {
      return -1;
    }
    const fieldLabel = field === "" ? "value" : field;
    const topicLabel = shortTopic(this.filter(), topic);
    const label = this.selected.size > 1 || this.fixedFields.length > 1 ? `${topicLabel} ${fieldLabel}` : topicLabel;
    const entry = { topic, field, label, index: this.columns.length };
    this.series.set(key, entry);
    this.columns.push(new Array(this.xs.length).fill(null));
    this.structureChanged = true;
    return entry.index;
  }

  addFieldChoice(path) {
    const id = uniqueId("field");
    const box = element("input", { type: "checkbox", id, value: path, checked: this.selected.has(path) });
    box.addEventListener("change", () => {
      if (box.checked) {
        this.selected.add(path);
      } else {
        this.selected.delete(path);
      }
      this.dropSeries();
      this.reset();
    });
    this.fieldList.append(element("span", { className: "field check" }, box, element("label", { for: id, text: path === "" ? "value" : path })));
    this.fieldList.hidden = false;
    if (this.selected.size === 0 && this.knownFields.size === 1) {
      // Nothing chosen yet: show the first numeric field until the user picks.
      box.checked = true;
      this.selected.add(path);
    }
  }

  dropSeries() {
    this.series.clear();
    this.columns = [];
    this.structureChanged = true;
  }

  resize() {
    if (this.plot && this.plot.width !== this.plotSize().width) {
      const { width, height } = this.plotSize();
      this.plot.setSize({ width, height });
    }
  }

  // The height is fixed (spec.plot_height, default 240 px): a height taken from the layout
  // would grow with the plot's own legend on every resize.
  plotSize() {
    const width = Math.floor(this.plotArea.getBoundingClientRect().width);
    return { width: Math.max(200, width), height: this.spec.plot_height || 240 };
  }

  render() {
    // Points older than the range leave the chart.
    const cutoff = Date.now() / 1000 - this.rangeS;
    let old = 0;
    while (old < this.xs.length && this.xs[old] < cutoff) {
      old += 1;
    }
    if (old > 0) {
      this.dropRows(old);
    }
    this.legendNote.hidden = this.series.size > 0;
    if (typeof uPlot !== "function") {
      this.legendNote.textContent = "The chart library failed to load.";
      this.legendNote.hidden = false;
      return;
    }
    if (this.series.size === 0) {
      if (this.plot) {
        this.plot.destroy();
        this.plot = null;
      }
      return;
    }
    if (this.structureChanged || !this.plot) {
      // Series are drawn in label order, whatever order their first points arrived in.
      this.order = [...this.series.values()].sort((a, b) => a.label.localeCompare(b.label, undefined, { numeric: true }));
    }
    const data = [this.xs, ...this.order.map((entry) => this.columns[entry.index])];
    if (this.structureChanged || !this.plot) {
      this.structureChanged = false;
      if (this.plot) {
        this.plot.destroy();
      }
      const { width, height } = this.plotSize();
      const series = [{}];
      for (const entry of this.order) {
        series.push({
          label: entry.label,
          stroke: SERIES_COLORS[entry.index % SERIES_COLORS.length],
          width: 1.5,
          spanGaps: true,
          value: (plot, value) => (value === null || value === undefined ? "–" : `${formatScalar(value, this.spec.decimals)}${this.spec.unit ? ` ${this.spec.unit}` : ""}`),
        });
      }
      this.plot = new uPlot({
        width,
        height,
        series,
        axes: [{}, { label: this.spec.unit || "", size: 60 }],
        scales: { x: { time: true } },
        legend: { live: true },
        cursor: { drag: { x: false, y: false } },
      }, data, this.plotArea);
    } else {
      this.plot.setData(data);
    }
  }

  snapshot() {
    const series = {};
    for (const entry of this.series.values()) {
      const points = [];
      const column = this.columns[entry.index];
      for (let i = 0; i < this.xs.length; i++) {
        if (column[i] !== null && column[i] !== undefined) {
          points.push({ seq: this.seqs[i], ts: Math.round(this.xs[i] * 1000), value: column[i] });
        }
      }
      series[entry.label] = points;
    }
    return { filter: this.filter(), fields: [...this.selected], rangeS: this.rangeS, series, drawn: this.plot !== null };
  }
}

// ---- Table ------------------------------------------------------------------------------

const MAX_TABLE_ROWS = 500;

/** One row per topic with the chosen fields as columns; without fields, the top-level scalars. */
export class TableWidget extends Widget {
  constructor(context, spec) {
    super(context, spec);
    this.fields = specFields(spec);
    this.autoFields = this.fields.length === 0;
    this.latest = new Map();
    this.rows = new Map();
    this.table = element("table", { className: "data-table" });
    this.caption = element("caption", { className: "visually-hidden", text: spec.title || spec.filter });
    this.head = element("thead");
    this.tbody = element("tbody");
    this.table.append(this.caption, this.head, this.tbody);
    this.body.append(element("div", { className: "table-scroll", tabindex: "0", "aria-labelledby": this.titleId }, this.table));
    this.headDirty = true;
    this.watch({
      filter: spec.filter,
      latest: true,
      maxRate: spec.max_rate ?? CONFLATED_RATE,
      onMessage: (message) => this.handleMessage(message),
    });
  }

  handleMessage(message) {
    if (!this.latest.has(message.topic) && this.latest.size >= MAX_TABLE_ROWS) {
      return;
    }
    this.latest.set(message.topic, message);
    if (this.autoFields && message.encoding === "json" && message.payload && typeof message.payload === "object") {
      for (const [key, value] of Object.entries(message.payload)) {
        if (value === null || typeof value !== "object") {
          if (!this.fields.includes(key) && this.fields.length < 10) {
            this.fields.push(key);
            this.headDirty = true;
          }
        }
      }
    }
    this.changed = this.changed || new Set();
    this.changed.add(message.topic);
    invalidate(this);
  }

  render() {
    if (this.headDirty) {
      this.headDirty = false;
      const row = element("tr", {}, element("th", { scope: "col", text: "Topic" }));
      for (const field of this.fields) {
        row.append(element("th", { scope: "col", text: field === "" ? "value" : field }));
      }
      row.append(element("th", { scope: "col", className: "num", text: "Age" }));
      this.head.replaceChildren(row);
      for (const entry of this.rows.values()) {
        entry.row.remove();
      }
      this.rows.clear();
      this.changed = new Set(this.latest.keys());
    }
    const now = Date.now();
    for (const topic of this.changed || []) {
      const message = this.latest.get(topic);
      let entry = this.rows.get(topic);
      if (!entry) {
        entry = { row: element("tr", { "data-topic": topic }), cells: [] };
        entry.row.append(element("th", { scope: "row", text: shortTopic(this.spec.filter, topic), title: topic }));
        for (let i = 0; i < this.fields.length; i++) {
          entry.cells.push(element("td"));
          entry.row.append(entry.cells[i]);
        }
        entry.age = element("td", { className: "num muted" });
        entry.row.append(entry.age);
        this.rows.set(topic, entry);
        insertSorted(this.tbody, entry.row, topic);
      }
      this.fields.forEach((field, i) => {
        const value = message.encoding === "json" ? getField(message.payload, field) : field === "" ? message.payload : undefined;
        entry.cells[i].textContent = formatScalar(value, this.spec.decimals);
      });
      entry.age.textContent = formatAge(message.ts, now);
    }
    this.changed = new Set();
  }

  tick() {
    const now = Date.now();
    for (const [topic, entry] of this.rows) {
      entry.age.textContent = formatAge(this.latest.get(topic).ts, now);
    }
  }

  snapshot() {
    return { fields: [...this.fields], rows: Object.fromEntries([...this.latest].map(([topic, message]) => [topic, message.payload])) };
  }
}

function insertSorted(parent, row, key) {
  for (const child of parent.children) {
    if (child.dataset.topic > key) {
      parent.insertBefore(row, child);
      return;
    }
  }
  parent.append(row);
}

// ---- Chat and commands ------------------------------------------------------------------

const MAX_CHAT_MESSAGES = 300;

/**
 * Messages of the filter, everyone's, live; and a form that publishes text or JSON to a
 * topic. spec.topic is the default topic of the form.
 */
export class ChatWidget extends Widget {
  constructor(context, spec) {
    super(context, spec);
    this.messages = [];
    this.added = [];
    this.log = element("ol", { className: "chat-log", "aria-live": "polite", "aria-label": "Messages" });
    this.buildForm();
    this.body.append(this.log, this.form);
    this.watch({
      filter: spec.filter,
      last: 50,
      onMessage: (message) => this.handleMessage(message),
    });
  }

  buildForm() {
    const topicId = uniqueId("chat-topic");
    const nameId = uniqueId("chat-name");
    const textId = uniqueId("chat-text");
    const formatId = uniqueId("chat-format");
    const defaultTopic = this.spec.topic || this.spec.filter.replace(/\/?#$/, "").replace(/\+/g, "general") || "chat";
    this.topicInput = element("input", { id: topicId, name: "topic", value: defaultTopic, autocomplete: "off", spellcheck: "false", required: true });
    this.nameInput = element("input", { id: nameId, name: "name", value: localStorage.getItem("tidegate.chat.name") || "", autocomplete: "nickname", placeholder: "anonymous" });
    this.textInput = element("textarea", { id: textId, name: "text", rows: "2", required: true });
    this.formatSelect = element("select", { id: formatId, name: "format" },
      element("option", { value: "chat", text: "Chat message" }),
      element("option", { value: "text", text: "Text" }),
      element("option", { value: "json", text: "JSON" }));
    this.status = element("output", { for: textId, className: "chat-status", "aria-live": "polite" });
    this.form = element("form", { className: "chat-form" },
      element("div", { className: "row" },
        element("div", { className: "field grow" }, element("label", { for: topicId, text: "Topic" }), this.topicInput),
        element("div", { className: "field" }, element("label", { for: nameId, text: "Your name" }), this.nameInput),
        element("div", { className: "field" }, element("label", { for: formatId, text: "Send as" }), this.formatSelect)),
      element("div", { className: "field" }, element("label", { for: textId, text: "Message" }), this.textInput),
      element("div", { className: "actions" }, element("button", { type: "submit", text: "Send" }), this.status));
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.send();
    });
    this.textInput.addEventListener("keydown", (event) => {
      // Enter sends, Shift+Enter starts a new line.
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.form.requestSubmit();
      }
    });
  }

  /** Returns the payload to publish from the form, or throws with a message. */
  payloadFromForm() {
    const text = this.textInput.value;
    switch (this.formatSelect.value) {
      case "json":
        try {
          return parseJson(text, { bigInt: true });
        } catch (error) {
          throw new Error(`invalid JSON: ${error.message}`);
        }
      case "text":
        return text;
      default: {
        const name = this.nameInput.value.trim();
        localStorage.setItem("tidegate.chat.name", name);
        return name ? { from: name, text } : { text };
      }
    }
  }

  async send() {
    const topic = this.topicInput.value.trim();
    let payload;
    try {
      payload = this.payloadFromForm();
    } catch (error) {
      setStatus(this.status, error.message, "error");
      return;
    }
    setStatus(this.status, "sending…");
    try {
      await this.context.client.publish(topic, payload, { qos: 1 });
      setStatus(this.status, `sent to ${topic}`, "ok");
      this.textInput.value = "";
    } catch (error) {
      setStatus(this.status, `${error.code || "error"}: ${error.message}`, "error");
    }
  }

  handleMessage(message) {
    this.messages.push(message);
    this.added.push(message);
    if (this.messages.length > MAX_CHAT_MESSAGES) {
      this.messages.splice(0, this.messages.length - MAX_CHAT_MESSAGES);
    }
    invalidate(this);
  }

  render() {
    const atBottom = this.log.scrollHeight - this.log.scrollTop - this.log.clientHeight < 40;
    for (const message of this.added.slice(-MAX_CHAT_MESSAGES)) {
      this.log.append(this.renderMessage(message));
    }
    this.added = [];
    while (this.log.children.length > MAX_CHAT_MESSAGES) {
      this.log.firstElementChild.remove();
    }
    if (atBottom) {
      this.log.scrollTop = this.log.scrollHeight;
    }
  }

  renderMessage(message) {
    const payload = message.payload;
    let from = "";
    let text;
    if (message.encoding === "json" && payload && typeof payload === "object" && typeof payload.text === "string") {
      from = typeof payload.from === "string" ? payload.from : "";
      text = payload.text;
    } else {
      text = formatPayload(message);
    }
    return element("li", { "data-seq": message.seq },
      element("span", { className: "chat-meta muted" }, `${formatTime(message.ts)} ${message.topic}`),
      from ? element("strong", { className: "chat-from", text: from }) : null,
      element("span", { className: "chat-text", text }));
  }

  snapshot() {
    return { messages: this.messages.map((m) => ({ topic: m.topic, seq: m.seq, payload: m.payload })) };
  }
}

// ---- Inspector --------------------------------------------------------------------------

const MAX_INSPECTED = 200;

/** The most recent raw messages of a filter: payload, encoding, seq, arrival time. */
export class InspectorWidget extends Widget {
  constructor(context, spec) {
    super(context, spec);
    this.messages = [];
    this.currentFilter = spec.filter;
    this.received = 0;
    const filterId = uniqueId("inspect-filter");
    const pauseId = uniqueId("inspect-pause");
    this.filterInput = element("input", { id: filterId, value: spec.filter, autocomplete: "off", spellcheck: "false", required: true });
    this.pause = element("input", { id: pauseId, type: "checkbox" });
    this.filterStatus = element("output", { for: filterId, "aria-live": "polite" });
    const form = element("form", { className: "inspector-form" },
      element("div", { className: "field grow" }, element("label", { for: filterId, text: "Topic filter" }), this.filterInput),
      element("button", { type: "submit", text: "Inspect" }),
      element("span", { className: "field check" }, this.pause, element("label", { for: pauseId, text: "Pause" })),
      this.filterStatus);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.setFilter(this.filterInput.value.trim());
    });
    this.pause.addEventListener("change", () => invalidate(this));
    this.tbody = element("tbody");
    const table = element("table", { className: "data-table inspector-table" },
      element("caption", { className: "visually-hidden", text: "Recent messages, newest first" }),
      element("thead", {}, element("tr", {},
        ...["Time", "Topic", "Seq", "Encoding", "QoS", "Payload"].map((name) => element("th", { scope: "col", text: name })))),
      this.tbody);
    this.body.append(form, element("div", { className: "table-scroll", tabindex: "0", "aria-label": "Recent messages" }, table));
    this.subscribe();
  }

  /** Shows the messages of another filter from now on. */
  setFilter(filter) {
    if (filter === "") {
      setStatus(this.filterStatus, "enter a topic filter, for example # or sensors/+/temp", "error");
      return;
    }
    this.filterInput.value = filter;
    this.currentFilter = filter;
    this.messages = [];
    this.tbody.replaceChildren();
    setStatus(this.filterStatus, "");
    this.subscribe();
  }

  subscribe() {
    this.unwatchAll();
    this.watch({
      filter: this.currentFilter,
      last: 50,
      onMessage: (message) => this.handleMessage(message),
      onError: (error) => setStatus(this.filterStatus, `${error.code}: ${error.message}`, "error"),
    });
  }

  handleMessage(message) {
    this.received += 1;
    this.messages.push({ ...message, arrival: Date.now() });
    if (this.messages.length > MAX_INSPECTED * 2) {
      this.messages.splice(0, this.messages.length - MAX_INSPECTED);
    }
    invalidate(this);
  }

  render() {
    if (this.pause.checked) {
      return;
    }
    const newest = this.messages.slice(-MAX_INSPECTED);
    this.messages = newest;
    const shownSeq = this.tbody.firstElementChild ? Number(this.tbody.firstElementChild.dataset.seq) : -Infinity;
    const fresh = newest.filter((message) => !(message.seq <= shownSeq));
    const fragment = document.createDocumentFragment();
    for (let i = fresh.length - 1; i >= 0; i--) {
      fragment.append(this.renderRow(fresh[i]));
    }
    this.tbody.prepend(fragment);
    while (this.tbody.children.length > MAX_INSPECTED) {
      this.tbody.lastElementChild.remove();
    }
  }

  renderRow(message) {
    const payload = formatPayload(message);
    const shown = payload.length > 300 ? `${payload.slice(0, 300)}…` : payload;
    return element("tr", { "data-seq": message.seq },
      element("td", { className: "num", text: formatTime(message.arrival), title: `gateway time ${new Date(message.ts).toISOString()}` }),
      element("td", { className: "mono", text: message.topic }),
      element("td", { className: "num", text: String(message.seq) }),
      element("td", { text: message.history ? `${message.encoding} (history)` : message.encoding }),
      element("td", { className: "num", text: `${message.qos}${message.retain ? " R" : ""}` }),
      element("td", { className: "mono payload", text: shown, title: payload.length > 300 ? payload.slice(0, 2000) : "" }));
  }

  snapshot() {
    return { filter: this.currentFilter, messages: this.messages.map((m) => ({ topic: m.topic, seq: m.seq, encoding: m.encoding, payload: m.payload })) };
  }
}

export { formatJson, topicMatches };
