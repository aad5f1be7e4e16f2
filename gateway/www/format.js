// Formatting and JSON field helpers shared by the dashboard modules.

/** Returns "12 s ago", "3 min ago", ... for a gateway timestamp in milliseconds. */
export function formatAge(ts, now = Date.now()) {
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

/** Returns a duration in seconds as "45 s", "12 min", "3 h" or "2 d". */
export function formatDuration(seconds) {
  if (seconds < 60) {
    return `${Math.round(seconds)} s`;
  }
  if (seconds < 3600) {
    return `${Math.round(seconds / 60)} min`;
  }
  if (seconds < 86400) {
    return `${Math.round(seconds / 3600)} h`;
  }
  return `${Math.round(seconds / 86400)} d`;
}

/** Returns the local wall-clock time of a timestamp with milliseconds, "14:03:07.123". */
export function formatTime(ts) {
  if (typeof ts !== "number") {
    return "";
  }
  const date = new Date(ts);
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

/** Serializes JSON and writes a BigInt as a number with every digit. */
export function formatJson(value, indent = 0) {
  return JSON.stringify(value, (key, item) => (typeof item === "bigint" ? rawJsonNumber(item) : item), indent) ?? "";
}

function rawJsonNumber(bigint) {
  if (typeof JSON.rawJSON === "function") {
    return JSON.rawJSON(bigint.toString());
  }
  // NOTE: browsers without JSON.rawJSON show the digits as a quoted string.
  return bigint.toString();
}

/** Returns a message payload as text: JSON, the UTF-8 text, or a hex preview of bytes. */
export function formatPayload(message, pretty = false) {
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

/** Returns a number for display with at most `decimals` digits after the point. */
export function formatNumber(value, decimals) {
  if (typeof value !== "number" || !Number.isFinite(value)) {
    return String(value);
  }
  if (typeof decimals === "number") {
    return value.toFixed(decimals);
  }
  return String(Math.round(value * 1000) / 1000);
}

/** Returns a scalar field value for display: numbers rounded, strings as is, others as JSON. */
export function formatScalar(value, decimals) {
  if (value === undefined) {
    return "–";
  }
  if (typeof value === "number") {
    return formatNumber(value, decimals);
  }
  if (typeof value === "string") {
    return value;
  }
  return formatJson(value);
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

/**
 * Returns the value at a dot-separated field path ("color.hue", "activities.0.type") of a
 * payload, or undefined. The empty path is the payload itself.
 */
export function getField(payload, path) {
  if (path === "" || path === undefined || path === null) {
    return payload;
  }
  let value = payload;
  for (const key of String(path).split(".")) {
    if (value === null || typeof value !== "object") {
      return undefined;
    }
    value = value[key];
  }
  return value;
}

/** Returns a field value as a finite number (BigInt rounded, numeric strings parsed), or null. */
export function toNumber(value) {
  if (typeof value === "number") {
    return Number.isFinite(value) ? value : null;
  }
  if (typeof value === "bigint") {
    return Number(value);
  }
  if (typeof value === "boolean") {
    return value ? 1 : 0;
  }
  if (typeof value === "string" && value.trim() !== "" && /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(value.trim())) {
    return Number(value);
  }
  return null;
}

/**
 * Returns the dot paths of the numeric fields of a JSON payload, at most `limit`, looking
 * `depth` levels deep. A bare number payload gives [""].
 */
export function numericFields(payload, { depth = 3, limit = 32 } = {}) {
  const paths = [];
  const visit = (value, prefix, level) => {
    if (paths.length >= limit) {
      return;
    }
    if (typeof value === "number" || typeof value === "bigint") {
      paths.push(prefix);
      return;
    }
    if (value === null || typeof value !== "object" || level >= depth) {
      return;
    }
    for (const key of Object.keys(value)) {
      visit(value[key], prefix === "" ? key : `${prefix}.${key}`, level + 1);
    }
  };
  visit(payload, "", 0);
  return paths;
}

/** Returns {lat, lon} from a payload with lat/lon or latitude/longitude, or null. */
export function positionOf(payload) {
  if (payload === null || typeof payload !== "object") {
    return null;
  }
  const lat = toNumber(payload.lat ?? payload.latitude);
  const lon = toNumber(payload.lon ?? payload.lng ?? payload.longitude);
  if (lat === null || lon === null || Math.abs(lat) > 90 || Math.abs(lon) > 180) {
    return null;
  }
  return { lat, lon };
}

/** Creates an element with attributes and children. */
export function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) {
      continue;
    }
    if (name === "className") {
      node.className = value;
    } else if (name === "text") {
      node.textContent = value;
    } else if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else {
      node.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children) {
    if (child !== null && child !== undefined && child !== false) {
      node.append(child);
    }
  }
  return node;
}

let uniqueCounter = 0;

/** Returns a new element id with the given prefix, unique in the page. */
export function uniqueId(prefix) {
  uniqueCounter += 1;
  return `${prefix}-${uniqueCounter}`;
}

/** Sets the text and kind ("ok", "error" or "") of an output element. */
export function setStatus(output, text, kind = "") {
  output.textContent = text;
  output.dataset.kind = kind;
}
