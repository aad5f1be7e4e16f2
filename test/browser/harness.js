// Test harness: a Mosquitto broker, the Tidegate gateway and headless Chromium, each on a free
// 127.0.0.1 port, started per test and stopped by PID.

import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from "node:fs";
import { createServer, connect as connectTcp } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

import mqtt from "mqtt";
import { chromium } from "playwright-core";

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const GATEWAY_BIN = process.env.TIDEGATE_BIN || path.join(REPO, "build/gateway/tidegate");
export const WWW_DIR = path.join(REPO, "gateway/www");
export const SCREENSHOT_DIR = path.join(REPO, "test-results/browser");
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const START_TIMEOUT_MS = 15000;
const STOP_TIMEOUT_MS = 10000;

/** Returns the gateway's --help text, to find out which options this build has. */
export function gatewayHelp() {
  const result = spawnSync(GATEWAY_BIN, ["--help"], { encoding: "utf8" });
  return result.status === 0 ? result.stdout : "";
}

/** Returns a free TCP port on 127.0.0.1 (bound to port 0, then released). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function canConnect(port) {
  return new Promise((resolve) => {
    const socket = connectTcp({ host: "127.0.0.1", port });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** Waits until `check` resolves true, polling every 50 ms, or throws after timeoutMs. */
export async function waitFor(check, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) {
      return;
    }
    await sleep(50);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

// A child process with its output kept for failure messages.
class Child {
  constructor(name, command, args, options = {}) {
    this.name = name;
    this.output = "";
    this.process = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], ...options });
    this.exited = new Promise((resolve) => {
      this.process.once("exit", (code, signal) => resolve({ code, signal }));
      // A binary that cannot be started (missing, not executable, being rebuilt) emits
      // "error" and no "exit".
      this.process.once("error", (error) => {
        this.output += `\nfailed to start ${command}: ${error.message}`;
        resolve({ code: null, signal: null, error });
      });
    });
    for (const stream of [this.process.stdout, this.process.stderr]) {
      stream.on("data", (chunk) => {
        this.output = (this.output + chunk.toString()).slice(-20000);
      });
    }
  }

  get running() {
    return this.process.pid !== undefined && this.process.exitCode === null && this.process.signalCode === null;
  }

  /** Sends SIGTERM, then SIGKILL after STOP_TIMEOUT_MS; returns the exit status. */
  async stop() {
    if (!this.running) {
      return this.exited;
    }
    this.process.kill("SIGTERM");
    const timer = setTimeout(() => this.process.kill("SIGKILL"), STOP_TIMEOUT_MS);
    const status = await this.exited;
    clearTimeout(timer);
    return status;
  }
}

/**
 * Starts Mosquitto and the gateway in a new temporary folder. options.dashboards is a
 * dashboards file object (written to the folder and passed with --dashboards), and
 * options.publishAllow the --publish-allow filters (default chat/#).
 */
export async function startStack(options = {}) {
  const dir = mkdtempSync(path.join(tmpdir(), "tidegate-browser-"));
  const stack = new Stack(dir, options);
  try {
    await stack.startBroker();
    await stack.startGateway();
  } catch (error) {
    await stack.stop();
    throw error;
  }
  return stack;
}

class Stack {
  constructor(dir, options) {
    this.dir = dir;
    this.options = options;
    this.broker = null;
    this.gateway = null;
    this.clients = [];
    this.help = gatewayHelp();
  }

  async startBroker() {
    this.mqttPort = await freePort();
    const config = path.join(this.dir, "mosquitto.conf");
    writeFileSync(config, `listener ${this.mqttPort} 127.0.0.1\nallow_anonymous true\npersistence false\n`);
    this.broker = new Child("mosquitto", "mosquitto", ["-c", config]);
    await waitFor(() => canConnect(this.mqttPort), START_TIMEOUT_MS, `Mosquitto on port ${this.mqttPort}`);
  }

  /** Starts the gateway on the same port and database as before, or on a new free port. */
  async startGateway() {
    if (!this.httpPort) {
      this.httpPort = await freePort();
    }
    const args = [
      "--mqtt-url", `tcp://127.0.0.1:${this.mqttPort}`,
      "--listen", `127.0.0.1:${this.httpPort}`,
      "--db", path.join(this.dir, "tidegate.db"),
      "--mqtt-client-id", `tidegate-browser-${process.pid}`,
    ];
    for (const filter of this.options.publishAllow || ["chat/#"]) {
      args.push("--publish-allow", filter);
    }
    args.push(...(this.options.extraArgs || []));
    if (this.help.includes("--www") && !this.options.builtinAssets) {
      // Serve the files of the work tree, including ones not yet built into the binary.
      args.push("--www", WWW_DIR);
    }
    if (this.options.dashboards !== undefined) {
      const file = path.join(this.dir, "dashboards.json");
      writeFileSync(file, JSON.stringify(this.options.dashboards));
      args.push("--dashboards", file);
    }
    this.gateway = new Child("tidegate", GATEWAY_BIN, args, { cwd: this.dir });
    await waitFor(async () => {
      if (!this.gateway.running) {
        const status = await this.gateway.exited;
        const reason = status.error ? `could not be started: ${status.error.message}` : `exited at start with status ${status.code}`;
        throw new Error(`the gateway ${GATEWAY_BIN} ${reason}\n${this.gateway.output}`);
      }
      try {
        const response = await fetch(`${this.url}/readyz`);
        return response.status === 200;
      } catch {
        return false;
      }
    }, START_TIMEOUT_MS, "the gateway's /readyz");
  }

  get url() {
    return `http://127.0.0.1:${this.httpPort}`;
  }

  /** Returns a connected MQTT client of the broker. */
  async mqttClient() {
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${this.mqttPort}`, { reconnectPeriod: 0, clientId: `browser-test-${this.clients.length}-${process.pid}` });
    this.clients.push(client);
    return client;
  }

  async stop() {
    for (const client of this.clients) {
      await client.endAsync().catch(() => {});
    }
    if (this.gateway) {
      await this.gateway.stop();
    }
    if (this.broker) {
      await this.broker.stop();
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Launches headless Chromium; a browser download does not work here, so it is Debian's. */
export function launchBrowser() {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"],
  });
}

/**
 * Opens a page that records console errors, page errors and failed requests in
 * page.problems.
 */
export async function openPage(browser, url, { width = 1400, height = 1000 } = {}) {
  const page = await browser.newPage({ viewport: { width, height } });
  page.problems = [];
  page.on("console", (message) => {
    if (message.type() === "error") {
      page.problems.push(`console error: ${message.text()}`);
    }
  });
  page.on("pageerror", (error) => page.problems.push(`page error: ${error.message}`));
  page.on("requestfailed", (request) => {
    // A WebSocket closed by a gateway restart is expected in some tests and is not reported
    // here; any other failed request is.
    page.problems.push(`request failed: ${request.url()} ${request.failure()?.errorText}`);
  });
  page.on("response", (response) => {
    if (response.status() >= 400) {
      page.problems.push(`HTTP ${response.status()}: ${response.url()}`);
    }
  });
  await page.goto(url);
  await page.waitForFunction(() => window.tidegate && window.tidegate.ready && window.tidegate.client.state === "open", null, { timeout: 10000 });
  return page;
}

/** Saves a screenshot under test-results/browser/. */
export async function screenshot(page, name) {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  await page.screenshot({ path: path.join(SCREENSHOT_DIR, `${name}.png`), fullPage: true });
}

/** Saves a screenshot of one element (a Playwright locator) under test-results/browser/. */
export async function screenshotOf(locator, name) {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  await locator.screenshot({ path: path.join(SCREENSHOT_DIR, `${name}.png`) });
}

/** Returns the snapshot() of the widget with the given id ("w0" is the first widget). */
export function widgetSnapshot(page, id) {
  return page.evaluate((widgetId) => {
    const widget = window.tidegate.widgets.find((candidate) => candidate.id === widgetId);
    return widget ? widget.snapshot() : null;
  }, id);
}
