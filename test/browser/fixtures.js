// Dashboards, data and helpers shared by the browser tests.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";

import { REPO, gatewayHelp, startStack } from "./harness.js";

const HELP = gatewayHelp();

/** A skip reason when the gateway cannot serve the work tree's files and dashboards. */
export const NEEDS = !HELP.includes("--www") || !HELP.includes("--dashboards") ? "the gateway lacks --www or --dashboards" : false;

// A dashboard with one widget of each kind, used by most tests. Widget ids follow the order:
// w0 value, w1 gauge, w2 chart, w3 table, w4 chat, w5 inspector, w6 map.
export const TEST_DASHBOARDS = {
  dashboards: [
    {
      name: "test",
      title: "Test dashboard",
      widgets: [
        { type: "value", title: "Temperature", filter: "lab/+/telemetry", field: "temperature", unit: "°C", w: 4 },
        { type: "gauge", title: "Humidity", filter: "lab/+/telemetry", field: "humidity", unit: "%", min: 0, max: 100, w: 4 },
        { type: "chart", title: "Temperature chart", filter: "lab/+/telemetry", fields: ["temperature"], unit: "°C", range_s: 900, w: 12 },
        { type: "table", title: "Zigbee", filter: "zigbee2mqtt/+", w: 6 },
        { type: "chat", title: "Chat", filter: "chat/#", topic: "chat/room1", w: 6 },
        { type: "inspector", title: "Inspector", filter: "#", w: 6 },
        { type: "map", title: "Positions", filter: "transit/+/position", range_s: 86400, w: 6 },
      ],
    },
  ],
};

// Runs `body(stack)` with a fresh broker and gateway, and stops them afterwards.
export async function withStack(options, body) {
  const stack = await startStack(options);
  try {
    await body(stack);
  } finally {
    await stack.stop();
  }
}

export function assertNoProblems(page) {
  assert.deepEqual(page.problems, [], `the page reported problems:\n${page.problems.join("\n")}`);
}

// Returns the fixes of one device of the TrafficSense data between two local times
// ("2016-08-26 09:07:00"), oldest first.
export function busFixes(deviceId, from, to) {
  const lines = readFileSync(path.join(REPO, "data/aalto-trafficsense-device_data.csv"), "utf8").trim().split("\n").slice(1);
  const fixes = [];
  for (const line of lines) {
    const columns = line.split(",");
    const time = columns[0].replace(/"/g, "");
    if (Number(columns[1]) === deviceId && time >= from && time <= to) {
      fixes.push({ lat: Number(columns[2]), lon: Number(columns[3]), time });
    }
  }
  return fixes;
}
