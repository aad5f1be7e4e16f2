// Position view: tracks of devices whose payloads carry lat and lon (or latitude and
// longitude), drawn on a canvas without any map service. The plane is an equirectangular
// projection fitted to the bounding box of the tracks (x scaled by the cosine of the middle
// latitude so distances look right), with a degree grid and a scale bar. When the dashboard
// sets tile_url, the view switches to Web Mercator and draws those map tiles underneath.

import { invalidate } from "./feeds.js";
import { element, formatAge, formatNumber, getField, positionOf } from "./format.js";
import { Widget } from "./widgets.js";

// Points kept per track and tracks kept per widget.
const MAX_TRACK_POINTS = 5000;
const MAX_TRACKS = 64;
const TRACK_COLORS = ["#0b63ce", "#c0262d", "#17803d", "#9a5b00", "#7b3fc4", "#00838f", "#d1495b", "#3f51b5"];
const EARTH_RADIUS_M = 6371008.8;
const TILE_SIZE = 256;

export class MapWidget extends Widget {
  constructor(context, spec) {
    super(context, spec);
    this.minIntervalMs = 100;
    this.rangeS = spec.range_s || 3600;
    this.tileUrl = spec.tile_url || context.settings.tile_url || "";
    // topic -> {topic, color, points: [{lat, lon, ts, seq, payload}], and its legend elements}
    this.tracks = new Map();
    this.tiles = new Map();
    this.canvas = element("canvas", { className: "plane", role: "img", "aria-label": "Device positions" });
    this.legend = element("ul", { className: "plane-legend", "aria-label": "Latest positions" });
    this.empty = element("p", { className: "muted", text: "No positions yet: waiting for payloads with lat and lon." });
    this.attribution = element("p", { className: "muted plane-attribution", text: spec.tile_attribution || context.settings.tile_attribution || "", hidden: !this.tileUrl });
    this.body.append(this.empty, element("div", { className: "plane-wrap" }, this.canvas), this.attribution, this.legend);
    this.watch({
      filter: spec.filter,
      sinceMs: Date.now() - this.rangeS * 1000,
      onMessage: (message) => this.handleMessage(message),
    });
    new ResizeObserver(() => invalidate(this)).observe(this.canvas);
  }

  handleMessage(message) {
    if (message.encoding !== "json") {
      return;
    }
    const source = this.spec.field ? getField(message.payload, this.spec.field) : message.payload;
    const position = positionOf(source);
    if (!position) {
      return;
    }
    let track = this.tracks.get(message.topic);
    if (!track) {
      if (this.tracks.size >= MAX_TRACKS) {
        return;
      }
      track = { topic: message.topic, color: TRACK_COLORS[this.tracks.size % TRACK_COLORS.length], points: [], item: null };
      this.tracks.set(message.topic, track);
    }
    track.points.push({ ...position, ts: message.ts, seq: message.seq, payload: message.payload });
    if (track.points.length > MAX_TRACK_POINTS * 1.1) {
      track.points.splice(0, track.points.length - MAX_TRACK_POINTS);
    }
    invalidate(this);
  }

  render() {
    const cutoff = Date.now() - this.rangeS * 1000;
    for (const track of this.tracks.values()) {
      let old = 0;
      // Keep the latest point even when it is older than the range, so a parked device stays.
      while (old < track.points.length - 1 && track.points[old].ts < cutoff) {
        old += 1;
      }
      if (old > 0) {
        track.points.splice(0, old);
      }
    }
    this.empty.hidden = this.tracks.size > 0;
    this.draw();
    this.renderLegend();
  }

  draw() {
    const canvas = this.canvas;
    const rect = canvas.getBoundingClientRect();
    if (rect.width === 0 || rect.height === 0) {
      return;
    }
    const ratio = window.devicePixelRatio || 1;
    canvas.width = Math.round(rect.width * ratio);
    canvas.height = Math.round(rect.height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    const style = getComputedStyle(canvas);
    const colors = {
      background: style.getPropertyValue("--plane-bg").trim() || "#f3f5f8",
      grid: style.getPropertyValue("--plane-grid").trim() || "#d5dae1",
      text: style.getPropertyValue("--muted").trim() || "#5b6470",
    };
    ctx.fillStyle = colors.background;
    ctx.fillRect(0, 0, rect.width, rect.height);
    const bounds = this.bounds();
    if (!bounds) {
      return;
    }
    const projection = this.tileUrl ? mercatorProjection(bounds, rect) : planeProjection(bounds, rect);
    // What the latest drawing used, for snapshot(): the tile zoom and the points drawn.
    this.drawn = { zoom: projection.zoom ?? null, points: [...this.tracks.values()].reduce((n, t) => n + t.points.length, 0) };
    if (this.tileUrl) {
      this.drawTiles(ctx, projection, rect);
    }
    drawGrid(ctx, projection, rect, colors);
    for (const track of this.tracks.values()) {
      this.drawTrack(ctx, projection, track);
    }
    drawScaleBar(ctx, projection, rect, colors);
  }

  bounds() {
    let minLat = Infinity;
    let maxLat = -Infinity;
    let minLon = Infinity;
    let maxLon = -Infinity;
    for (const track of this.tracks.values()) {
      for (const point of track.points) {
        minLat = Math.min(minLat, point.lat);
        maxLat = Math.max(maxLat, point.lat);
        minLon = Math.min(minLon, point.lon);
        maxLon = Math.max(maxLon, point.lon);
      }
    }
    if (minLat === Infinity) {
      return null;
    }
    // A single point or a straight north-south track still gets an area of about 200 m.
    const pad = 0.001;
    return { minLat: minLat - pad, maxLat: maxLat + pad, minLon: minLon - pad, maxLon: maxLon + pad };
  }

  drawTrack(ctx, projection, track) {
    const points = track.points;
    ctx.strokeStyle = track.color;
    ctx.lineWidth = 2;
    ctx.lineJoin = "round";
    ctx.beginPath();
    points.forEach((point, i) => {
      const [x, y] = projection.project(point.lat, point.lon);
      if (i === 0) {
        ctx.moveTo(x, y);
      } else {
        ctx.lineTo(x, y);
      }
    });
    ctx.stroke();
    const last = points[points.length - 1];
    const [x, y] = projection.project(last.lat, last.lon);
    ctx.fillStyle = track.color;
    ctx.beginPath();
    ctx.arc(x, y, 5, 0, 2 * Math.PI);
    ctx.fill();
    ctx.strokeStyle = "#ffffff";
    ctx.lineWidth = 1.5;
    ctx.stroke();
    ctx.fillStyle = track.color;
    ctx.font = "12px system-ui, sans-serif";
    ctx.fillText(this.trackLabel(track), x + 8, y - 6);
  }

  trackLabel(track) {
    const levels = track.topic.split("/");
    // transit/device3/position -> device3: the level before a last "position"-like level.
    return levels.length > 1 ? levels[levels.length - 2] : track.topic;
  }

  renderLegend() {
    const now = Date.now();
    for (const track of this.tracks.values()) {
      if (!track.item) {
        track.swatch = element("span", { className: "swatch", style: `background:${track.color}` });
        track.text = element("span");
        track.item = element("li", { "data-topic": track.topic }, track.swatch, track.text);
        this.legend.append(track.item);
      }
      const last = track.points[track.points.length - 1];
      const line = last.payload && typeof last.payload === "object" && last.payload.line ? ` line ${last.payload.line}` : "";
      track.text.textContent = `${this.trackLabel(track)}${line}: ${formatNumber(last.lat, 5)}, ${formatNumber(last.lon, 5)}, ${track.points.length} points, ${formatAge(last.ts, now)}`;
    }
  }

  drawTiles(ctx, projection, rect) {
    const zoom = projection.zoom;
    const scale = TILE_SIZE * 2 ** zoom;
    const [x0, y0] = projection.worldAt(0, 0);
    const [x1, y1] = projection.worldAt(rect.width, rect.height);
    const maxIndex = 2 ** zoom - 1;
    for (let tx = Math.floor(x0 * scale / TILE_SIZE); tx <= Math.floor(x1 * scale / TILE_SIZE); tx++) {
      for (let ty = Math.floor(y0 * scale / TILE_SIZE); ty <= Math.floor(y1 * scale / TILE_SIZE); ty++) {
        if (tx < 0 || ty < 0 || tx > maxIndex || ty > maxIndex) {
          continue;
        }
        const image = this.tile(zoom, tx, ty);
        if (image.complete && image.naturalWidth > 0) {
          const [sx, sy] = projection.screenAt(tx * TILE_SIZE / scale, ty * TILE_SIZE / scale);
          const [ex, ey] = projection.screenAt((tx + 1) * TILE_SIZE / scale, (ty + 1) * TILE_SIZE / scale);
          ctx.drawImage(image, sx, sy, ex - sx, ey - sy);
        }
      }
    }
  }

  tile(z, x, y) {
    const url = this.tileUrl.replace("{z}", z).replace("{x}", x).replace("{y}", y);
    let image = this.tiles.get(url);
    if (!image) {
      if (this.tiles.size > 256) {
        this.tiles.clear();
      }
      image = new Image();
      image.addEventListener("load", () => invalidate(this));
      image.src = url;
      this.tiles.set(url, image);
    }
    return image;
  }

  snapshot() {
    return {
      drawn: this.drawn ?? null,
      tracks: Object.fromEntries([...this.tracks].map(([topic, track]) => [topic, track.points.map((p) => ({ lat: p.lat, lon: p.lon, seq: p.seq }))])),
    };
  }
}

// Equirectangular plane fitted to the bounds: x = lon * cos(mid latitude), y = lat.
function planeProjection(bounds, rect) {
  const margin = 24;
  const cosLat = Math.cos(((bounds.minLat + bounds.maxLat) / 2) * Math.PI / 180);
  const spanX = (bounds.maxLon - bounds.minLon) * cosLat;
  const spanY = bounds.maxLat - bounds.minLat;
  const scale = Math.min((rect.width - 2 * margin) / spanX, (rect.height - 2 * margin) / spanY);
  const offsetX = (rect.width - spanX * scale) / 2;
  const offsetY = (rect.height - spanY * scale) / 2;
  const project = (lat, lon) => [offsetX + (lon - bounds.minLon) * cosLat * scale, offsetY + (bounds.maxLat - lat) * scale];
  const unproject = (x, y) => [bounds.maxLat - (y - offsetY) / scale, bounds.minLon + (x - offsetX) / (cosLat * scale)];
  // Metres per pixel: one degree of latitude is EARTH_RADIUS_M * pi / 180 metres.
  const metresPerPixel = (EARTH_RADIUS_M * Math.PI / 180) / scale;
  return { project, unproject, metresPerPixel };
}

// Web Mercator fitted to the bounds, at the integer zoom whose tiles cover it best.
function mercatorProjection(bounds, rect) {
  const world = (lat, lon) => {
    const sin = Math.sin(lat * Math.PI / 180);
    return [(lon + 180) / 360, 0.5 - Math.log((1 + sin) / (1 - sin)) / (4 * Math.PI)];
  };
  const [ax, ay] = world(bounds.maxLat, bounds.minLon);
  const [bx, by] = world(bounds.minLat, bounds.maxLon);
  const fit = Math.min(rect.width / ((bx - ax) * TILE_SIZE), rect.height / ((by - ay) * TILE_SIZE));
  const zoom = Math.max(0, Math.min(19, Math.floor(Math.log2(fit))));
  const scale = TILE_SIZE * 2 ** zoom;
  const centerX = (ax + bx) / 2;
  const centerY = (ay + by) / 2;
  const screenAt = (wx, wy) => [rect.width / 2 + (wx - centerX) * scale, rect.height / 2 + (wy - centerY) * scale];
  const worldAt = (x, y) => [centerX + (x - rect.width / 2) / scale, centerY + (y - rect.height / 2) / scale];
  const project = (lat, lon) => screenAt(...world(lat, lon));
  const unproject = (x, y) => {
    const [wx, wy] = worldAt(x, y);
    const lat = Math.atan(Math.sinh(Math.PI * (1 - 2 * wy))) * 180 / Math.PI;
    return [lat, wx * 360 - 180];
  };
  const midLat = (bounds.minLat + bounds.maxLat) / 2;
  const metresPerPixel = (2 * Math.PI * EARTH_RADIUS_M * Math.cos(midLat * Math.PI / 180)) / scale;
  return { project, unproject, metresPerPixel, zoom, screenAt, worldAt };
}

// Draws latitude and longitude lines at a round step that gives about five lines.
function drawGrid(ctx, projection, rect, colors) {
  const [topLat, leftLon] = projection.unproject(0, 0);
  const [bottomLat, rightLon] = projection.unproject(rect.width, rect.height);
  const step = niceStep(Math.max(topLat - bottomLat, rightLon - leftLon) / 5);
  const decimals = Math.max(0, -Math.floor(Math.log10(step)));
  ctx.strokeStyle = colors.grid;
  ctx.fillStyle = colors.text;
  ctx.lineWidth = 1;
  ctx.font = "11px system-ui, sans-serif";
  for (let lat = Math.ceil(bottomLat / step) * step; lat <= topLat; lat += step) {
    const [, y] = projection.project(lat, leftLon);
    ctx.beginPath();
    ctx.moveTo(0, y);
    ctx.lineTo(rect.width, y);
    ctx.stroke();
    ctx.fillText(`${lat.toFixed(decimals)}°`, 4, y - 3);
  }
  for (let lon = Math.ceil(leftLon / step) * step; lon <= rightLon; lon += step) {
    const [x] = projection.project(topLat, lon);
    ctx.beginPath();
    ctx.moveTo(x, 0);
    ctx.lineTo(x, rect.height);
    ctx.stroke();
    ctx.fillText(`${lon.toFixed(decimals)}°`, x + 3, rect.height - 4);
  }
}

// Draws a scale bar of a round length of about a fifth of the width, bottom right.
function drawScaleBar(ctx, projection, rect, colors) {
  const metres = niceStep(projection.metresPerPixel * rect.width / 5);
  const pixels = metres / projection.metresPerPixel;
  const x = rect.width - pixels - 16;
  const y = rect.height - 20;
  ctx.strokeStyle = colors.text;
  ctx.fillStyle = colors.text;
  ctx.lineWidth = 2;
  ctx.beginPath();
  ctx.moveTo(x, y - 5);
  ctx.lineTo(x, y);
  ctx.lineTo(x + pixels, y);
  ctx.lineTo(x + pixels, y - 5);
  ctx.stroke();
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillText(metres >= 1000 ? `${metres / 1000} km` : `${metres} m`, x, y - 8);
}

// Returns 1, 2 or 5 times a power of ten, the first at least `value`.
function niceStep(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const factor of [1, 2, 5, 10]) {
    if (factor * power >= value) {
      return factor * power;
    }
  }
  return 10 * power;
}
