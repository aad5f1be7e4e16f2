'use strict';
/*
 * A minimal MQTT-to-WebSocket bridge: the small Node.js program a team might
 * write instead of running a gateway. MQTT.js subscribes to the broker, and
 * each message is encoded once as one JSON text and sent to every connected
 * WebSocket client (no per-client filters, no history, no slow-client limit).
 * tools/bench/compare runs it as one of the peers Tidegate is measured against.
 *
 * Settings come from the environment:
 *   BRIDGE_MQTT_URL  broker URL (default mqtt://127.0.0.1:1883)
 *   BRIDGE_FILTER    topic filter to subscribe to (default #)
 *   BRIDGE_QOS       QoS of the subscription (default 1, as Tidegate's default)
 *   BRIDGE_HOST      WebSocket listen address (default 127.0.0.1)
 *   BRIDGE_PORT      WebSocket listen port, path /ws (default 8080)
 * It prints {"event":"ready",...} on stdout once it listens and the
 * subscription is acknowledged.
 */
const mqtt = require('mqtt');
const { WebSocket, WebSocketServer } = require('ws');

const mqttUrl = process.env.BRIDGE_MQTT_URL || 'mqtt://127.0.0.1:1883';
const filter = process.env.BRIDGE_FILTER || '#';
const qos = Number(process.env.BRIDGE_QOS || 1);
const host = process.env.BRIDGE_HOST || '127.0.0.1';
const port = Number(process.env.BRIDGE_PORT || 8080);

const wss = new WebSocketServer({ host, port, path: '/ws', perMessageDeflate: false });
const broker = mqtt.connect(mqttUrl, { clientId: `node-bridge-${process.pid}`, clean: true });

let listening = false;
let subscribed = false;

function reportReady() {
  if (listening && subscribed) {
    console.log(JSON.stringify({ event: 'ready', port: wss.address().port }));
  }
}

wss.on('listening', () => {
  listening = true;
  reportReady();
});

broker.on('connect', () => {
  broker.subscribe(filter, { qos }, (err) => {
    if (err) {
      console.error(`node-bridge: subscribing to ${filter} failed: ${err.message}`);
      process.exit(1);
    }
    if (!subscribed) {
      subscribed = true;
      reportReady();
    }
  });
});

broker.on('error', (err) => console.error(`node-bridge: MQTT error: ${err.message}`));

broker.on('message', (topic, payload, packet) => {
  // A JSON payload is embedded as JSON, anything else as a UTF-8 string.
  const text = payload.toString('utf8');
  let value = text;
  let encoding = 'utf8';
  try {
    value = JSON.parse(text);
    encoding = 'json';
  } catch {
    // not JSON: sent as a string
  }
  const frame = Buffer.from(JSON.stringify({
    type: 'message', topic, ts: Date.now(), qos: packet.qos, retain: packet.retain, encoding, payload: value,
  }));
  for (const client of wss.clients) {
    if (client.readyState === WebSocket.OPEN) {
      client.send(frame, { binary: false });
    }
  }
});

function shutdown() {
  for (const client of wss.clients) {
    client.close(1001, 'bridge shutting down');
  }
  broker.end(false, () => process.exit(0));
  setTimeout(() => process.exit(0), 2000).unref();
}

process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
