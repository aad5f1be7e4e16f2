// Widget behaviour in headless Chromium: conflation, stale devices, map tiles, the inspector,
// the overview chart's pickers and keyboard use.

import assert from "node:assert/strict";
import { createServer } from "node:http";
import { after, before, test } from "node:test";

import { NEEDS, TEST_DASHBOARDS, assertNoProblems, busFixes, withStack } from "./fixtures.js";
import { launchBrowser, openPage, screenshot, screenshotOf, waitFor, widgetSnapshot } from "./harness.js";

let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

// Records the JSON frames a page sends and receives on its WebSockets.
function recordFrames(page) {
  const frames = { sent: [], received: [] };
  page.on("websocket", (socket) => {
    socket.on("framesent", (frame) => frames.sent.push(JSON.parse(frame.payload)));
    socket.on("framereceived", (frame) => frames.received.push(JSON.parse(frame.payload)));
  });
  return frames;
}

test("value widget subscribes with max_rate", { skip: NEEDS }, async () => {
  const dashboards = {
    dashboards: [{
      name: "rates",
      settings: { tree_filter: "sensors/#" },
      widgets: [{ type: "value", filter: "sensors/+", field: "n" }],
    }],
  };
  await withStack({ dashboards }, async (stack) => {
    const mqtt = await stack.mqttClient();
    const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
    const page = await openPageIn(context, `${stack.url}/d/rates`);
    const { frames } = page;

    const subscribes = frames.sent.filter((frame) => frame.type === "subscribe");
    const valueSubscribe = subscribes.find((frame) => frame.filter === "sensors/+");
    assert.ok(valueSubscribe, `no subscribe for sensors/+ in ${JSON.stringify(subscribes)}`);
    assert.equal(valueSubscribe.max_rate, 4);
    const treeSubscribe = subscribes.find((frame) => frame.filter === "sensors/#");
    assert.equal(treeSubscribe.max_rate, 1);

    for (let n = 0; n < 100; n++) {
      await mqtt.publishAsync("sensors/a", JSON.stringify({ n }), { qos: 0 });
    }
    await page.waitForFunction(
      () => document.querySelector('[data-topic="sensors/a"] .value-number')?.textContent === "99",
      null,
      { timeout: 5000 },
    );
    const delivered = frames.received.filter((frame) => frame.type === "message" && frame.topic === "sensors/a");
    assert.ok(delivered.length < 50, `${delivered.length} of 100 messages were delivered despite max_rate`);
    assert.equal(delivered[delivered.length - 1].payload.n, 99);
    assertNoProblems(page);
    await context.close();
  });
});

// Opens a page in a new browser context that records its WebSocket frames in page.frames
// and its problems in page.problems, and waits until every subscription is confirmed.
async function openPageIn(context, url) {
  const page = await context.newPage();
  page.frames = recordFrames(page);
  page.problems = [];
  page.on("console", (message) => message.type() === "error" && page.problems.push(`console error: ${message.text()}`));
  page.on("pageerror", (error) => page.problems.push(`page error: ${error.message}`));
  page.on("requestfailed", (request) => page.problems.push(`request failed: ${request.url()}`));
  await page.goto(url);
  await page.waitForFunction(() => window.tidegate && window.tidegate.ready && window.tidegate.client.state === "open", null, { timeout: 10000 });
  await page.waitForFunction(() => [...window.tidegate.client.subscriptions.values()].every((subscription) => subscription.active), null, { timeout: 5000 });
  return page;
}

test("silent device turns offline", { skip: NEEDS }, async () => {
  const dashboards = {
    dashboards: [{
      name: "stale",
      settings: { stale_after_s: 1, status: { suffixes: ["availability"], online: ["online"], offline: ["offline"] } },
      widgets: [{ type: "inspector", filter: "#" }],
    }],
  };
  await withStack({ dashboards }, async (stack) => {
    const mqtt = await stack.mqttClient();
    const page = await openPage(browser, `${stack.url}/d/stale`);
    await mqtt.publishAsync("plant/pump1/flow", "12.5", { qos: 1 });
    await mqtt.publishAsync("plant/pump2/availability", JSON.stringify({ state: "offline" }), { qos: 1 });
    const pump1 = '[data-path="plant/pump1"] > .tree-row .device-state';
    const pump2 = '[data-path="plant/pump2"] > .tree-row .device-state';
    await page.waitForSelector(`${pump1}[data-state="online"]`, { timeout: 2000 });
    await page.waitForSelector(`${pump2}[data-state="offline"]`, { timeout: 2000 });
    assert.match(await page.getAttribute(pump2, "title"), /availability says offline/);
    await page.waitForSelector(`${pump1}[data-state="offline"]`, { timeout: 4000 });
    assert.match(await page.getAttribute(pump1, "title"), /silent for \d+ s/);
    await mqtt.publishAsync("plant/pump1/flow", "13", { qos: 1 });
    await page.waitForSelector(`${pump1}[data-state="online"]`, { timeout: 2000 });
    await screenshotOf(page.locator(".sidebar"), "tree-states");
    assertNoProblems(page);
    await page.close();
  });
});

// A 1x1 PNG, served as every tile.
const TILE_PNG = Buffer.from("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==", "base64");

test("map draws tiles from tile_url", { skip: NEEDS }, async () => {
  const requests = [];
  const tiles = createServer((request, response) => {
    requests.push(request.url);
    response.writeHead(200, { "content-type": "image/png", "access-control-allow-origin": "*" });
    response.end(TILE_PNG);
  });
  await new Promise((resolve) => tiles.listen(0, "127.0.0.1", resolve));
  const tilePort = tiles.address().port;
  const dashboards = {
    dashboards: [{
      name: "tiles",
      settings: { tile_url: `http://127.0.0.1:${tilePort}/tiles/{z}/{x}/{y}.png`, tile_attribution: "test tiles" },
      widgets: [{ type: "map", filter: "transit/+/position", range_s: 86400 }],
    }],
  };
  try {
    await withStack({ dashboards }, async (stack) => {
      const mqtt = await stack.mqttClient();
      const fixes = busFixes(1, "2016-08-26 09:07:00", "2016-08-26 09:23:00");
      for (const fix of fixes) {
        await mqtt.publishAsync("transit/device1/position", JSON.stringify(fix), { qos: 1 });
      }
      const page = await openPage(browser, `${stack.url}/d/tiles`);
      await waitFor(async () => (await widgetSnapshot(page, "w0")).tracks["transit/device1/position"]?.length === fixes.length, 5000, "every fix in the track");

      // The first drawings may use another zoom, fitted to the part of the track loaded by
      // then, so wait for a drawing of the whole track and take its zoom.
      await waitFor(async () => (await widgetSnapshot(page, "w0")).drawn?.points === fixes.length, 5000, "a drawing of every fix");
      const drawnZoom = (await widgetSnapshot(page, "w0")).drawn.zoom;

      // The tile under the first fix at that zoom (Web Mercator).
      const expectedTile = () => {
        const zoom = drawnZoom;
        const scale = 2 ** zoom;
        const x = Math.floor(((fixes[0].lon + 180) / 360) * scale);
        const sin = Math.sin((fixes[0].lat * Math.PI) / 180);
        const y = Math.floor((0.5 - Math.log((1 + sin) / (1 - sin)) / (4 * Math.PI)) * scale);
        return { zoom, url: `/tiles/${zoom}/${x}/${y}.png` };
      };
      await waitFor(() => requests.length > 0 && requests.includes(expectedTile().url), 5000, "the tile under the first fix");
      for (const url of requests) {
        assert.match(url, /^\/tiles\/\d+\/\d+\/\d+\.png$/);
      }
      const { zoom } = expectedTile();
      assert.ok(zoom >= 9, `zoom ${zoom} is too far out for a track of about 15 km`);
      assert.ok(zoom <= 14, `zoom ${zoom} is too far in for a track of about 15 km`);
      assert.equal(await page.textContent('[data-widget="w0"] .plane-attribution'), "test tiles");
      assertNoProblems(page);
      await page.close();
    });
  } finally {
    await new Promise((resolve) => tiles.close(resolve));
  }
});

test("inspector shows raw messages", { skip: NEEDS }, async () => {
  await withStack({ dashboards: TEST_DASHBOARDS }, async (stack) => {
    const mqtt = await stack.mqttClient();
    const page = await openPage(browser, `${stack.url}/d/test`);
    const inspector = '[data-widget="w5"]';
    await mqtt.publishAsync("raw/bytes", Buffer.from([0xff, 0x00, 0x41]), { qos: 1 });
    await mqtt.publishAsync("raw/text", "plain text", { qos: 1 });
    await mqtt.publishAsync("raw/json", '{"big":123456789012345678901234567890}', { qos: 1 });

    const row = (topic) => `${inspector} tbody tr:has(td:text-is("${topic}"))`;
    await page.waitForSelector(row("raw/json"), { timeout: 3000 });
    assert.deepEqual(await page.locator(`${row("raw/bytes")} td`).allTextContents().then((cells) => cells.slice(3)), ["base64", "1", "3 bytes: ff 00 41"]);
    assert.equal(await page.locator(`${row("raw/text")} td`).nth(3).textContent(), "utf8");
    assert.equal(await page.locator(`${row("raw/text")} td`).nth(5).textContent(), "plain text");
    // Large integers keep every digit.
    assert.equal(await page.locator(`${row("raw/json")} td`).nth(5).textContent(), '{"big":123456789012345678901234567890}');

    await page.fill(`${inspector} input[id^="inspect-filter"]`, "raw/text");
    await page.press(`${inspector} input[id^="inspect-filter"]`, "Enter");
    await page.waitForFunction((selector) => {
      const topics = [...document.querySelectorAll(`${selector} tbody tr td:nth-child(2)`)].map((cell) => cell.textContent);
      return topics.length === 1 && topics[0] === "raw/text";
    }, inspector, { timeout: 3000 });

    await page.fill(`${inspector} input[id^="inspect-filter"]`, "raw/#/x");
    await page.press(`${inspector} input[id^="inspect-filter"]`, "Enter");
    await page.waitForSelector(`${inspector} output[data-kind="error"]:has-text("invalid")`, { timeout: 3000 });
    await screenshotOf(page.locator(inspector), "inspector");
    // The invalid filter's error reply is expected; nothing else may fail.
    assertNoProblems(page);
    await page.close();
  });
});

test("overview chart picks fields and range", async () => {
  await withStack({}, async (stack) => {
    const mqtt = await stack.mqttClient();
    for (let i = 0; i < 10; i++) {
      await mqtt.publishAsync("lab/mote1/telemetry", JSON.stringify({ temperature: 20 + i, humidity: 40 + i }), { qos: 1 });
      await mqtt.publishAsync("lab/mote2/telemetry", JSON.stringify({ temperature: 30 + i }), { qos: 1 });
    }
    const page = await openPage(browser, `${stack.url}/`);
    const chart = '[data-widget="w0"]';
    await waitFor(async () => (await widgetSnapshot(page, "w0")).series["lab/mote1/telemetry"]?.length === 10, 5000, "the first topic's points");
    assert.deepEqual((await widgetSnapshot(page, "w0")).fields, ["temperature"]);
    assert.equal(await page.isChecked(`${chart} input[value="temperature"]`), true);
    assert.equal(await page.isChecked(`${chart} input[value="humidity"]`), false);

    await page.check(`${chart} input[value="humidity"]`);
    await waitFor(async () => Object.keys((await widgetSnapshot(page, "w0")).series).length === 2, 5000, "two series");
    const series = (await widgetSnapshot(page, "w0")).series;
    assert.deepEqual(series["lab/mote1/telemetry humidity"].map((point) => point.value), [40, 41, 42, 43, 44, 45, 46, 47, 48, 49]);

    await page.selectOption(`${chart} select`, "3600");
    await waitFor(async () => {
      const snapshot = await widgetSnapshot(page, "w0");
      return snapshot.rangeS === 3600 && snapshot.series["lab/mote1/telemetry temperature"]?.length === 10;
    }, 5000, "the points reloaded for one hour");

    // The tree's detail dialog puts another topic on the chart.
    await page.click('[data-path="lab/mote2/telemetry"] .tree-name');
    await page.click("#detail-chart");
    await waitFor(async () => (await widgetSnapshot(page, "w0")).series["lab/mote2/telemetry"]?.length === 10, 5000, "the second topic's points");
    assert.equal(await page.inputValue(`${chart} input[id^="chart-filter"]`), "lab/mote2/telemetry");
    await screenshot(page, "overview-chart");
    assertNoProblems(page);
    await page.close();
  });
});

test("keyboard reaches and uses controls", { skip: NEEDS }, async () => {
  await withStack({ dashboards: TEST_DASHBOARDS }, async (stack) => {
    const mqtt = await stack.mqttClient();
    await mqtt.publishAsync("lab/mote1/telemetry", JSON.stringify({ temperature: 20, humidity: 40 }), { qos: 1 });
    const page = await openPage(browser, `${stack.url}/d/test`);
    await page.waitForSelector('[data-path="lab/mote1/telemetry"]');

    // Tab through the page and record what gets focus.
    const reached = new Set();
    for (let i = 0; i < 80; i++) {
      await page.keyboard.press("Tab");
      reached.add(await page.evaluate(() => {
        const active = document.activeElement;
        return active.labels?.[0]?.textContent || active.getAttribute("aria-label") || active.textContent.trim() || active.tagName;
      }));
    }
    for (const name of ["Skip to the dashboard", "Overview", "telemetry", "Range", "Message", "Send", "Topic filter", "Inspect", "Pause"]) {
      assert.ok(reached.has(name), `Tab never reached "${name}"; reached: ${[...reached].join(", ")}`);
    }

    // Enter on a tree topic opens its detail, Escape closes it.
    await page.focus('[data-path="lab/mote1/telemetry"] .tree-name');
    await page.keyboard.press("Enter");
    await page.waitForSelector("#detail[open]");
    assert.equal(await page.textContent("#detail-topic"), "lab/mote1/telemetry");
    await page.keyboard.press("Escape");
    await page.waitForSelector("#detail", { state: "hidden" });

    // A chat message typed and sent with the keyboard only.
    await page.focus('[data-widget="w4"] textarea');
    await page.keyboard.type("typed with the keyboard");
    await page.keyboard.press("Enter");
    await page.waitForSelector('[data-widget="w4"] .chat-log li:has-text("typed with the keyboard")', { timeout: 3000 });
    assertNoProblems(page);
    await page.close();
  });
});
