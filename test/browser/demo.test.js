// The demo dashboards file: its schema, and its dashboards on the data that
// tools/devices/replay.py replays (lab motes, Helsinki phones, a Zigbee2MQTT bridge).

import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, test } from "node:test";

import { NEEDS, assertNoProblems, withStack } from "./fixtures.js";
import { REPO, launchBrowser, openPage, screenshot, waitFor, widgetSnapshot } from "./harness.js";

const DEMO_FILE = path.join(REPO, "tools/demo-dashboards.json");
// Replay speed and wall-clock duration: at 300, 8 s cover 40 minutes of the phones' day and
// 480 readings of each mote.
const REPLAY_SPEED = "300";
const REPLAY_SECONDS = 8;

let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close();
});

function validate(schemaFile, instance) {
  const script = `
import json, sys
from jsonschema import Draft202012Validator
schema = json.load(open(sys.argv[1]))
Draft202012Validator.check_schema(schema)
errors = sorted(Draft202012Validator(schema).iter_errors(json.loads(sys.argv[2])), key=str)
for error in errors:
    print(list(error.absolute_path), error.message)
sys.exit(1 if errors else 0)
`;
  return spawnSync("/usr/bin/python3", ["-c", script, schemaFile, JSON.stringify(instance)], { encoding: "utf8" });
}

test("demo dashboards match the schema", () => {
  const result = validate(path.join(REPO, "schemas/dashboards.schema.json"), JSON.parse(readFileSync(DEMO_FILE, "utf8")));
  assert.equal(result.status, 0, `${result.stdout}${result.stderr}`);
});

test("schema rejects bad dashboards", () => {
  const schema = path.join(REPO, "schemas/dashboards.schema.json");
  const cases = [
    ["a name with a slash", { dashboards: [{ name: "a/b", widgets: [{ type: "value", filter: "#" }] }] }],
    ["no widgets", { dashboards: [{ name: "a", widgets: [] }] }],
    ["an unknown widget type", { dashboards: [{ name: "a", widgets: [{ type: "clock", filter: "#" }] }] }],
    ["a widget without a filter", { dashboards: [{ name: "a", widgets: [{ type: "value" }] }] }],
    ["a misspelled key", { dashboards: [{ name: "a", widgets: [{ type: "chart", filter: "#", feilds: ["t"] }] }] }],
    ["a tile URL without {z}", { dashboards: [{ name: "a", settings: { tile_url: "http://127.0.0.1/{x}/{y}.png" }, widgets: [{ type: "map", filter: "#" }] }] }],
  ];
  for (const [what, instance] of cases) {
    assert.notEqual(validate(schema, instance).status, 0, `the schema accepted ${what}`);
  }
});

// Starts the replayer against the broker; it stops by itself after REPLAY_SECONDS.
function startReplay(stack) {
  const replay = spawn("/usr/bin/python3", [
    path.join(REPO, "tools/devices/replay.py"),
    "--mqtt-url", `tcp://127.0.0.1:${stack.mqttPort}`,
    "--speed", REPLAY_SPEED,
    "--duration", String(REPLAY_SECONDS),
    "--client-id-prefix", `browser-test-${process.pid}`,
    "--log-level", "warn",
  ], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  replay.stderr.on("data", (chunk) => {
    stderr += chunk.toString();
  });
  replay.finished = new Promise((resolve) => replay.once("exit", (code) => resolve({ code, stderr })));
  return replay;
}

test("demo dashboards show the replay", { skip: NEEDS, timeout: 60000 }, async () => {
  const dashboards = JSON.parse(readFileSync(DEMO_FILE, "utf8"));
  await withStack({ dashboards, publishAllow: ["chat/#", "zigbee2mqtt/+/set"] }, async (stack) => {
    const replay = startReplay(stack);
    try {
      const transit = await openPage(browser, `${stack.url}/d/transit`);
      const lab = await openPage(browser, `${stack.url}/d/lab`);
      const zigbee = await openPage(browser, `${stack.url}/d/zigbee`);

      await waitFor(async () => {
        const tracks = (await widgetSnapshot(transit, "w0")).tracks;
        return Object.keys(tracks).length >= 3 && Object.values(tracks).every((points) => points.length >= 2);
      }, 15000, "tracks of three phones");
      await waitFor(async () => Object.keys(await widgetSnapshot(lab, "w0")).length === 4, 10000, "four motes");
      await waitFor(async () => Object.keys((await widgetSnapshot(zigbee, "w0")).rows).length >= 5, 10000, "Zigbee devices");

      const chart = await widgetSnapshot(lab, "w2");
      assert.deepEqual(Object.keys(chart.series).sort(), ["mote1", "mote2", "mote3", "mote4"]);
      assert.equal(await lab.getAttribute('[data-path="lab/mote1"] .device-state', "data-state"), "online");
      assert.equal(await zigbee.getAttribute('[data-path="zigbee2mqtt/bridge"] .device-state', "data-state"), "online");

      await screenshot(transit, "demo-transit");
      await screenshot(lab, "demo-lab");
      await screenshot(zigbee, "demo-zigbee");

      // The lamp takes commands on zigbee2mqtt/work_lamp/set and publishes its new state.
      const commands = '[data-widget="w2"]';
      await zigbee.selectOption(`${commands} select[name="format"]`, "json");
      await zigbee.fill(`${commands} textarea`, '{"state": "OFF"}');
      await zigbee.click(`${commands} button[type="submit"]`);
      await zigbee.waitForSelector(`${commands} .chat-status[data-kind="ok"]`, { timeout: 5000 });
      await waitFor(async () => (await widgetSnapshot(zigbee, "w0")).rows["zigbee2mqtt/work_lamp"]?.state === "OFF", 5000, "the lamp to turn off");

      // When the replay stops, every mote publishes "offline" to its status topic.
      const { code, stderr } = await replay.finished;
      assert.equal(code, 0, stderr);
      await lab.waitForFunction(() => document.querySelector('[data-path="lab/mote1"] .device-state')?.dataset.state === "offline", null, { timeout: 5000 });
      await screenshot(lab, "demo-lab-offline");

      for (const page of [transit, lab, zigbee]) {
        assertNoProblems(page);
        await page.close();
      }
    } finally {
      if (replay.exitCode === null) {
        replay.kill("SIGTERM");
        await replay.finished;
      }
    }
  });
});
