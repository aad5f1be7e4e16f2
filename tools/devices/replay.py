#!/usr/bin/python3
"""Replay the demo data sets in data/ as MQTT devices.

Three device families publish to one broker, each device with its own MQTT client so
that its last will works:

- wsn: four motes of a wireless sensor network (LWSNDR multi-hop set, 10 July 2010)
  publish lab/mote<id>/telemetry every 5 s of data time.
- gps: eight phones of the TrafficSense project (Helsinki, 26 August 2016) publish
  transit/device<id>/position at the recorded fix times. While the riders' log puts a
  phone on a trip leg, its fixes carry the leg's line and line_type.
- zigbee: a Zigbee2MQTT bridge sends the captured messages under zigbee2mqtt/, then
  keeps changing its sensors' temperature, humidity, pressure and illuminance. It
  applies commands sent to zigbee2mqtt/<device>/set to its lights and switches.

Each mote and phone publishes a retained "online" to .../status when it connects and
"offline" when it stops, and has "offline" as its last will. The bridge does the same
on zigbee2mqtt/bridge/state, as Zigbee2MQTT does. All messages use QoS 1.

Times are scaled by --speed: at 30, one minute of data takes two seconds.
Requires paho-mqtt 1.6 (Debian 12: python3-paho-mqtt).
"""

import argparse
import copy
import csv
import datetime
import json
import logging
import random
import signal
import socket
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import paho.mqtt.client as mqtt

FAMILIES = ("wsn", "gps", "zigbee")
DEFAULT_SPEED = 30.0
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "data"

WSN_FILE = "suthaharan-multihop-wsn-temperature-humidity.csv"
GPS_FILE = "aalto-trafficsense-device_data.csv"
GPS_LEGS_FILE = "aalto-trafficsense-manual_log.csv"
ZIGBEE_FILE = "zigbee2mqtt-frontend-onConnect.jsonl"
FAMILY_FILES = {
    "wsn": (WSN_FILE,),
    "gps": (GPS_FILE, GPS_LEGS_FILE),
    "zigbee": (ZIGBEE_FILE,),
}

WSN_INTERVAL_S = 5.0
ZIGBEE_BASE = "zigbee2mqtt/"
# Zigbee2MQTT 1.16 publishes these bridge topics with the retain flag (see its
# lib/extension/bridge.js and legacy/bridgeLegacy.js). bridge/logging and
# bridge/response/* are not retained.
ZIGBEE_RETAINED_TOPICS = {
    "bridge/state",
    "bridge/info",
    "bridge/devices",
    "bridge/groups",
    "bridge/config",
}
# Data time between two rounds of simulated sensor changes. At the default speed of
# 30, a round goes out every 2 s.
ZIGBEE_CHANGE_INTERVAL_S = 60.0
ZIGBEE_SENSOR_FIELDS = ("temperature", "humidity", "pressure", "illuminance")

QOS = 1
KEEPALIVE_S = 30
# Bound on the messages that paho keeps per client before the broker acknowledges them.
# A family whose device reaches it pauses until there is room, so a fast replay or a
# broker outage cannot grow memory without limit and no message is dropped.
MAX_QUEUED_MESSAGES = 10000
QUEUE_FULL_RETRY_S = 0.02
OFFLINE_PUBLISH_TIMEOUT_S = 3.0
WAIT_LOG_INTERVAL_S = 10.0
CONNECT_FAILURE_LOG_INTERVAL_S = 30.0

log = logging.getLogger("replay")


class DataError(Exception):
    """Missing or malformed data file."""


# ---------------------------------------------------------------- command line


def positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid value '{text}': expected a number greater than 0")
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"invalid value '{text}': expected a number greater than 0")
    return value


def broker_address(text):
    """Parse tcp://HOST:PORT (mqtt:// is accepted too, and PORT defaults to 1883)."""
    expected = "expected tcp://HOST:PORT, for example tcp://127.0.0.1:1883"
    parsed = urllib.parse.urlsplit(text)
    if parsed.scheme not in ("tcp", "mqtt") or not parsed.hostname:
        raise argparse.ArgumentTypeError(f"invalid value '{text}': {expected}")
    if parsed.path not in ("", "/") or parsed.query or parsed.fragment or parsed.username:
        raise argparse.ArgumentTypeError(f"invalid value '{text}': {expected}")
    try:
        port = parsed.port
    except ValueError:
        port = 0
    if port is None:
        port = 1883
    if port == 0:
        raise argparse.ArgumentTypeError(f"invalid value '{text}': the port must be 1 to 65535")
    return parsed.hostname, port


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="replay.py",
        description="Replay the demo data sets (wireless sensor motes, Helsinki GPS phones, "
        "a Zigbee2MQTT bridge) as MQTT devices.",
        epilog="Without --loop, the wsn and gps families stop at the end of their data, and the "
        "program exits once every selected family has stopped. The zigbee family keeps sending "
        "sensor changes until --duration ends or the program gets SIGINT or SIGTERM.",
    )

    parser.add_argument(
        "--mqtt-url",
        type=broker_address,
        default=broker_address("tcp://127.0.0.1:1883"),
        metavar="URL",
        help="broker to publish to, as tcp://HOST:PORT (default tcp://127.0.0.1:1883)",
    )
    parser.add_argument(
        "--speed",
        type=positive_float,
        default=DEFAULT_SPEED,
        metavar="X",
        help="time factor: 1 replays in real time, 60 plays a minute of data per second "
        f"(default {DEFAULT_SPEED:g})",
    )
    parser.add_argument("--loop", action="store_true", help="start each data set over at its end")

    parser.add_argument(
        "--only",
        action="append",
        choices=FAMILIES,
        metavar="FAMILY",
        help="replay only this device family: wsn, gps or zigbee; repeatable (default all three)",
    )
    parser.add_argument(
        "--duration",
        type=positive_float,
        metavar="SECONDS",
        help="stop after this many seconds of wall-clock time (default: no limit)",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=DEFAULT_DATA_DIR,
        metavar="DIR",
        help=f"folder that contains the data files (default {DEFAULT_DATA_DIR})",
    )
    parser.add_argument(
        "--client-id-prefix",
        default="tidegate-replay",
        metavar="PREFIX",
        help="prefix of the MQTT client ids, for example PREFIX-mote1 (default tidegate-replay)",
    )
    parser.add_argument(
        "--log-level",
        choices=("error", "warn", "info", "debug"),
        default="info",
        help="log level (default info; debug logs every message)",
    )

    args = parser.parse_args(argv)
    args.families = tuple(f for f in FAMILIES if f in (args.only or FAMILIES))
    if not args.client_id_prefix:
        parser.error("argument --client-id-prefix: invalid value '': expected a non-empty prefix")
    return args


class UtcFormatter(logging.Formatter):
    """Format log lines like the gateway: 2026-12-04T21:30:00.123Z info [replay] text."""

    LEVELS = {"WARNING": "warn", "CRITICAL": "error"}

    def format(self, record):
        stamp = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        level = self.LEVELS.get(record.levelname, record.levelname.lower())
        line = f"{stamp:%Y-%m-%dT%H:%M:%S}.{stamp.microsecond // 1000:03d}Z {level} [{record.name}] {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(level_name):
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(UtcFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    levels = {"error": logging.ERROR, "warn": logging.WARNING, "info": logging.INFO, "debug": logging.DEBUG}
    root.setLevel(levels[level_name])


# ---------------------------------------------------------------- MQTT devices


def compact_json(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


class Device:
    """One simulated device: an MQTT client with a retained status topic and a last will.

    The client connects in the background and reconnects after a lost connection. On
    every connect it publishes `online_payload` to `status_topic`, retained, except on
    the first connect when `announce_first_connect` is false. It also subscribes to
    `subscriptions` on every connect, and `on_message` gets the messages.
    """

    def __init__(
        self,
        name,
        client_id,
        host,
        port,
        stop,
        status_topic,
        online_payload="online",
        offline_payload="offline",
        announce_first_connect=True,
        subscriptions=(),
        on_message=None,
    ):
        self.name = name
        self.client_id = client_id
        self.host = host
        self.port = port
        self.stop = stop
        self.status_topic = status_topic
        self.online_payload = online_payload
        self.offline_payload = offline_payload
        self.announce_first_connect = announce_first_connect
        self.subscriptions = tuple(subscriptions)
        self.connected = threading.Event()
        self.connect_count = 0
        self.published = 0
        self.dropped = 0
        self.queue_full_waits = 0
        self.failed_attempts = 0
        self.last_failure_log = 0.0

        self.client = mqtt.Client(client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311)
        self.client.max_queued_messages_set(MAX_QUEUED_MESSAGES)
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.client.will_set(status_topic, offline_payload, qos=QOS, retain=True)
        self.client.on_connect = self.on_connect
        self.client.on_disconnect = self.on_disconnect
        self.client.on_connect_fail = self.on_connect_fail
        if on_message is not None:
            self.client.on_message = on_message

    def start(self):
        self.client.connect_async(self.host, self.port, keepalive=KEEPALIVE_S)
        self.client.loop_start()

    def on_connect(self, client, userdata, flags, rc):
        if rc != mqtt.CONNACK_ACCEPTED:
            log.error(
                "%s: broker %s:%d rejected client id %s: %s",
                self.name, self.host, self.port, self.client_id, mqtt.connack_string(rc),
            )
            return
        self.connect_count += 1
        self.failed_attempts = 0
        again = "reconnected" if self.connect_count > 1 else "connected"
        log.info("%s: %s to tcp://%s:%d as %s", self.name, again, self.host, self.port, self.client_id)
        if self.announce_first_connect or self.connect_count > 1:
            client.publish(self.status_topic, self.online_payload, qos=QOS, retain=True)
        if self.subscriptions:
            client.subscribe([(topic_filter, QOS) for topic_filter in self.subscriptions])
        self.connected.set()

    def on_disconnect(self, client, userdata, rc):
        self.connected.clear()
        if rc != mqtt.MQTT_ERR_SUCCESS:
            log.warning(
                "%s: lost connection to tcp://%s:%d (%s), reconnecting",
                self.name, self.host, self.port, mqtt.error_string(rc),
            )

    def on_connect_fail(self, client, userdata):
        # paho passes no reason here, but main() logs one from its own probe. Log the
        # first failure and then one every CONNECT_FAILURE_LOG_INTERVAL_S, because paho
        # retries every few seconds.
        self.failed_attempts += 1
        now = time.monotonic()
        if self.failed_attempts == 1 or now - self.last_failure_log >= CONNECT_FAILURE_LOG_INTERVAL_S:
            self.last_failure_log = now
            log.error(
                "%s: cannot connect to tcp://%s:%d (attempt %d), retrying",
                self.name, self.host, self.port, self.failed_attempts,
            )

    def publish(self, topic, payload, retain=False):
        """Queue a QoS 1 message, waiting while MAX_QUEUED_MESSAGES are unacknowledged.

        The message is dropped and counted only if `stop` is set during the wait.
        """
        while True:
            info = self.client.publish(topic, payload, qos=QOS, retain=retain)
            if info.rc != mqtt.MQTT_ERR_QUEUE_SIZE:
                break
            self.queue_full_waits += 1
            if self.queue_full_waits == 1:
                log.warning(
                    "%s: %d messages wait for the broker's acknowledgement, so the replay "
                    "pauses until there is room (logged once per device)",
                    self.name, MAX_QUEUED_MESSAGES,
                )
            if self.stop.wait(QUEUE_FULL_RETRY_S):
                self.dropped += 1
                return
        # MQTT_ERR_NO_CONN still queues a QoS 1 message, and paho sends it on reconnect.
        self.published += 1
        log.debug("%s: %s %s", self.name, topic, payload[:200])

    def go_offline(self):
        """Publish the retained offline status if connected; return the MQTTMessageInfo or None."""
        if not self.client.is_connected():
            return None
        return self.client.publish(self.status_topic, self.offline_payload, qos=QOS, retain=True)


def wait_until_connected(devices, stop, family):
    """Block until every device is connected; return False if `stop` is set first."""
    last_log = time.monotonic()
    for device in devices:
        while not device.connected.wait(0.2):
            if stop.is_set():
                return False
            if time.monotonic() - last_log >= WAIT_LOG_INTERVAL_S:
                last_log = time.monotonic()
                log.warning("%s: still waiting for %s to connect to the broker", family, device.name)
    return True


def play_timeline(events, speed, stop, loop, family):
    """Publish (data_time_s, device, topic, payload, retain) events at their scaled times.

    Events must be sorted by data time, which counts from the first event. Returns False
    if `stop` was set before the end. When the publisher falls behind, late events go out
    at once, so the replay never skips data.
    """
    rounds = 0
    while True:
        start = time.monotonic()
        for data_time, device, topic, payload, retain in events:
            delay = start + data_time / speed - time.monotonic()
            if stop.wait(max(delay, 0.0)):
                return False
            device.publish(topic, payload, retain)
        rounds += 1
        if not loop:
            log.info("%s: end of data after %d messages", family, len(events))
            return True
        log.info("%s: end of data, starting over (round %d)", family, rounds + 1)


# ---------------------------------------------------------------- data loading


def read_csv(path):
    """Return the rows of a CSV file with a header row as (line_number, dict) pairs."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            return [(reader.line_num, row) for row in reader]
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise DataError(f"cannot read {path}: {error}") from error


def field(path, line, row, name, convert=str):
    value = row.get(name)
    if value is None or value == "":
        raise DataError(f"{path}:{line}: missing value in column '{name}'")
    try:
        return convert(value)
    except ValueError as error:
        raise DataError(f"{path}:{line}: invalid value '{value}' in column '{name}'") from error


def parse_flag(text):
    if text not in ("0", "1"):
        raise ValueError(text)
    return text == "1"


def parse_local_time(text):
    # The TrafficSense export drops trailing zeros of the milliseconds (".2", ".21").
    return datetime.datetime.strptime(text, "%Y-%m-%d %H:%M:%S.%f" if "." in text else "%Y-%m-%d %H:%M:%S")


def load_wsn(path):
    """Return (mote_id, reading, telemetry dict) sorted by reading, then mote."""
    readings = []
    for line, row in read_csv(path):
        mote_id = field(path, line, row, "mote_id", int)
        telemetry = {
            "temperature": field(path, line, row, "temperature", float),
            "humidity": field(path, line, row, "humidity", float),
            "indoor": field(path, line, row, "indoor", parse_flag),
            "event": field(path, line, row, "label", parse_flag),
            "reading": field(path, line, row, "reading", int),
        }
        readings.append((mote_id, telemetry["reading"], telemetry))
    if not readings:
        raise DataError(f"{path}: no data rows")
    readings.sort(key=lambda item: (item[1], item[0]))
    return readings


def load_legs(path):
    """Return {device_id: [(departure, arrival, line_type, line_name)]} from the riders' log."""
    legs = {}
    for line, row in read_csv(path):
        device_id = field(path, line, row, "device_id", int)
        departure = row.get("vehicle_dep_time") or ""
        arrival = row.get("vehicle_arr_time") or ""
        if not departure or not arrival:
            continue
        legs.setdefault(device_id, []).append(
            (
                field(path, line, row, "vehicle_dep_time", parse_local_time),
                field(path, line, row, "vehicle_arr_time", parse_local_time),
                field(path, line, row, "line_type"),
                (row.get("line_name") or "").strip(),
            )
        )
    return legs


def find_leg(legs, moment):
    for departure, arrival, line_type, line_name in legs:
        if departure <= moment <= arrival:
            return line_type, line_name
    return None


def load_gps(path, legs_path):
    """Return (device_id, local time, position dict) sorted by time."""
    legs = load_legs(legs_path)
    fixes = []
    for line, row in read_csv(path):
        device_id = field(path, line, row, "device_id", int)
        moment = field(path, line, row, "time", parse_local_time)
        position = {
            "lat": field(path, line, row, "lat", float),
            "lon": field(path, line, row, "lng", float),
            "accuracy_m": field(path, line, row, "accuracy", float),
            "activity": field(path, line, row, "activity_1"),
            "activity_confidence": field(path, line, row, "activity_1_conf", int),
            "activities": [
                {
                    "type": field(path, line, row, f"activity_{rank}"),
                    "confidence": field(path, line, row, f"activity_{rank}_conf", int),
                }
                for rank in (1, 2, 3)
            ],
        }
        leg = find_leg(legs.get(device_id, []), moment)
        if leg is not None:
            line_type, line_name = leg
            if line_name:
                position["line"] = line_name
            position["line_type"] = line_type
        position["time"] = row["time"]
        fixes.append((device_id, moment, position))
    if not fixes:
        raise DataError(f"{path}: no data rows")
    fixes.sort(key=lambda item: item[1])
    return fixes


def load_zigbee(path):
    """Return the captured (topic, payload) pairs, payload a str or a JSON value."""
    messages = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, text in enumerate(handle, start=1):
                if not text.strip():
                    continue
                try:
                    message = json.loads(text)
                except ValueError as error:
                    raise DataError(f"{path}:{number}: invalid JSON: {error}") from error
                if not isinstance(message, dict) or not isinstance(message.get("topic"), str) or "payload" not in message:
                    raise DataError(f"{path}:{number}: expected an object with 'topic' and 'payload'")
                messages.append((message["topic"], message["payload"]))
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read {path}: {error}") from error
    if not messages:
        raise DataError(f"{path}: no messages")
    return messages


def find_retained_names(messages):
    """Return the friendly names of the devices and groups whose state is retained.

    The names come from the configuration in the captured bridge/info message. A device's
    own `retain` option overrides `device_options.retain`, and a group has only its own.
    """
    config = {}
    for topic, payload in messages:
        if topic == "bridge/info" and isinstance(payload, dict):
            config = payload.get("config") or {}
    device_default = bool((config.get("device_options") or {}).get("retain", False))
    names = set()
    for device in (config.get("devices") or {}).values():
        if device.get("retain", device_default):
            names.add(device.get("friendly_name"))
    for group in (config.get("groups") or {}).values():
        if group.get("retain", False):
            names.add(group.get("friendly_name"))
    return names


def parse_set_command(text):
    """Parse a zigbee2mqtt/<device>/set payload into a dict, or return None if invalid."""
    if text.strip().upper() in ("ON", "OFF", "TOGGLE"):
        return {"state": text.strip().upper()}
    try:
        command = json.loads(text)
    except ValueError:
        return None
    return command if isinstance(command, dict) else None


def apply_set_command(state, command):
    """Apply the light and switch fields of `command` that `state` has; return their names.

    Values out of range are clamped to the ranges of the captured Hue bulbs: brightness
    0 to 254 and color_temp 150 to 500 mired.
    """
    applied = []
    if "state" in command and "state" in state:
        value = str(command["state"]).upper()
        if value == "TOGGLE":
            value = "OFF" if state["state"] == "ON" else "ON"
        if value in ("ON", "OFF"):
            state["state"] = value
            applied.append("state")
    for key, low, high in (("brightness", 0, 254), ("color_temp", 150, 500)):
        value = command.get(key)
        if key in state and isinstance(value, (int, float)) and not isinstance(value, bool):
            state[key] = min(max(round(value), low), high)
            applied.append(key)
    if isinstance(command.get("color"), dict) and isinstance(state.get("color"), dict):
        changes = {
            key: value for key, value in command["color"].items()
            if key in state["color"] and isinstance(value, (int, float)) and not isinstance(value, bool)
        }
        if changes:
            state["color"].update(changes)
            applied.append("color")
    return applied


def encode_zigbee_payload(payload):
    """Encode a payload as Zigbee2MQTT sends it: strings raw, other values as JSON."""
    if isinstance(payload, str):
        return payload
    return compact_json(payload)


# ---------------------------------------------------------------- families


class Family:
    """A group of devices that replays one data set in its own thread."""

    name = ""

    def __init__(self, args, stop):
        self.args = args
        self.stop = stop
        self.host, self.port = args.mqtt_url
        self.devices = {}
        self.failed = False
        self.thread = threading.Thread(target=self.run_safely, name=self.name, daemon=True)

    def make_device(self, name, status_topic, **options):
        """Create a device whose client id is the prefix and `name`, for example tidegate-replay-mote1."""
        client_id = f"{self.args.client_id_prefix}-{name}"
        return Device(name, client_id, self.host, self.port, self.stop, status_topic, **options)

    def start(self):
        for device in self.devices.values():
            device.start()
        self.thread.start()

    def run_safely(self):
        try:
            self.run()
        except Exception:
            # Caught so the failure is logged in the replayer's format. main() then
            # stops the other families and exits with status 1.
            self.failed = True
            log.exception("%s: replay failed", self.name)

    def run(self):
        raise NotImplementedError


class WsnFamily(Family):
    name = "wsn"

    def __init__(self, args, stop, readings):
        super().__init__(args, stop)
        self.events = []
        for mote_id, reading, telemetry in readings:
            device = self.devices.get(mote_id)
            if device is None:
                device = self.make_device(f"mote{mote_id}", f"lab/mote{mote_id}/status")
                self.devices[mote_id] = device
            data_time = (reading - readings[0][1]) * WSN_INTERVAL_S
            self.events.append((data_time, device, f"lab/mote{mote_id}/telemetry", compact_json(telemetry), False))

    def run(self):
        if not wait_until_connected(self.devices.values(), self.stop, self.name):
            return
        log.info(
            "%s: replaying %d readings of %d motes, one reading per mote every %.3g s",
            self.name, len(self.events), len(self.devices), WSN_INTERVAL_S / self.args.speed,
        )
        play_timeline(self.events, self.args.speed, self.stop, self.args.loop, self.name)


class GpsFamily(Family):
    name = "gps"

    def __init__(self, args, stop, fixes):
        super().__init__(args, stop)
        first = fixes[0][1]
        self.events = []
        for device_id in sorted({fix[0] for fix in fixes}):
            self.devices[device_id] = self.make_device(f"device{device_id}", f"transit/device{device_id}/status")
        for device_id, moment, position in fixes:
            data_time = (moment - first).total_seconds()
            topic = f"transit/device{device_id}/position"
            self.events.append((data_time, self.devices[device_id], topic, compact_json(position), False))

    def run(self):
        if not wait_until_connected(self.devices.values(), self.stop, self.name):
            return
        span = self.events[-1][0]
        log.info(
            "%s: replaying %d fixes of %d devices, %.0f s of data in %.0f s",
            self.name, len(self.events), len(self.devices), span, span / self.args.speed,
        )
        play_timeline(self.events, self.args.speed, self.stop, self.args.loop, self.name)


class ZigbeeFamily(Family):
    """A Zigbee2MQTT bridge: the captured messages once, then drifting sensor values.

    Device and group states are retained when their `retain` option in the captured
    configuration is true, as Zigbee2MQTT does. In this capture, `device_options.retain`
    is true.

    The sensors are the devices whose captured state has a temperature, humidity,
    pressure or illuminance field. Their values do a bounded random walk around the
    captured value, and last_seen is set to the current time, as Zigbee2MQTT does with
    last_seen set to ISO_8601. --loop has no effect here, because the changes go on until
    the program stops.

    Like Zigbee2MQTT, the bridge takes commands on zigbee2mqtt/<device>/set, either a
    JSON object or a plain ON, OFF or TOGGLE. It applies state, brightness, color_temp
    and color to a device whose captured state has that field, and publishes the new
    state. Friendly names that contain "/" are not matched, because the subscription
    is zigbee2mqtt/+/set.
    """

    name = "zigbee"

    def __init__(self, args, stop, messages):
        super().__init__(args, stop)
        # The capture starts with bridge/state "online", so the first connect needs no
        # extra announcement.
        self.bridge = self.make_device(
            "zigbee2mqtt", ZIGBEE_BASE + "bridge/state", announce_first_connect=False,
            subscriptions=[ZIGBEE_BASE + "+/set"], on_message=self.on_set_message,
        )
        self.devices["bridge"] = self.bridge
        self.messages = messages
        self.retained_names = find_retained_names(messages)
        self.random = random.Random()
        # The sensor loop and the /set handler, which runs in paho's network thread,
        # both change self.states.
        self.lock = threading.Lock()
        self.states = {}
        for topic, payload in messages:
            if not topic.startswith("bridge/") and isinstance(payload, dict):
                self.states[topic] = copy.deepcopy(payload)
        self.sensors = [
            topic for topic, state in self.states.items()
            if any(name in state for name in ZIGBEE_SENSOR_FIELDS)
        ]
        self.baselines = {topic: copy.deepcopy(self.states[topic]) for topic in self.sensors}
        self.last_sent = {}

    def run(self):
        if not wait_until_connected([self.bridge], self.stop, self.name):
            return
        for topic, payload in self.messages:
            if self.stop.is_set():
                return
            retain = topic in ZIGBEE_RETAINED_TOPICS or topic in self.retained_names
            self.bridge.publish(ZIGBEE_BASE + topic, encode_zigbee_payload(payload), retain)
            self.last_sent[topic] = time.monotonic()
        log.info(
            "%s: sent %d captured messages; changing %d sensors every %.3g s",
            self.name, len(self.messages), len(self.sensors), self.change_interval(),
        )
        if not self.sensors:
            return
        while not self.stop.wait(self.change_interval()):
            for topic in self.sensors:
                with self.lock:
                    payload = compact_json(self.next_state(topic))
                self.bridge.publish(ZIGBEE_BASE + topic, payload, topic in self.retained_names)

    def change_interval(self):
        return ZIGBEE_CHANGE_INTERVAL_S / self.args.speed

    def next_state(self, topic):
        state = self.states[topic]
        baseline = self.baselines[topic]
        if "temperature" in state:
            state["temperature"] = self.drift(state["temperature"], baseline["temperature"], 0.1, 2.0, 2)
        if "humidity" in state:
            value = self.drift(state["humidity"], baseline["humidity"], 0.3, 5.0, 2)
            state["humidity"] = min(max(value, 0.0), 100.0)
        if "pressure" in state:
            state["pressure"] = round(self.drift(state["pressure"], baseline["pressure"], 0.5, 3.0, 1))
        if "illuminance" in state:
            value = max(0, round(self.drift(state["illuminance"], baseline["illuminance"] + 10, 3.0, 20.0, 0)))
            state["illuminance"] = value
            if "illuminance_lux" in state:
                state["illuminance_lux"] = value
        if "linkquality" in state:
            state["linkquality"] = min(255, max(0, state["linkquality"] + self.random.choice((-3, 0, 0, 3))))

        self.mark_seen(topic, state)
        return state

    def mark_seen(self, topic, state):
        """Update the elapsed and last_seen fields that the captured state has."""
        now = time.monotonic()
        if "elapsed" in state:
            state["elapsed"] = round((now - self.last_sent.get(topic, now)) * 1000)
        self.last_sent[topic] = now
        if "last_seen" in state:
            stamp = datetime.datetime.now(datetime.timezone.utc)
            state["last_seen"] = f"{stamp:%Y-%m-%dT%H:%M:%S}.{stamp.microsecond // 1000:03d}Z"

    def on_set_message(self, client, userdata, message):
        name = message.topic[len(ZIGBEE_BASE):-len("/set")]
        try:
            text = message.payload.decode("utf-8")
        except UnicodeDecodeError:
            log.warning("%s: ignored %s: the payload is not UTF-8", self.name, message.topic)
            return
        command = parse_set_command(text)
        if command is None:
            log.warning("%s: ignored %s: expected a JSON object or ON, OFF or TOGGLE, got %r",
                        self.name, message.topic, text[:100])
            return

        with self.lock:
            state = self.states.get(name)
            if state is None:
                log.warning("%s: ignored %s: no device named %r", self.name, message.topic, name)
                return
            applied = apply_set_command(state, command)
            if not applied:
                log.warning("%s: ignored %s: %s has none of the fields in %r",
                            self.name, message.topic, name, text[:100])
                return
            self.mark_seen(name, state)
            payload = compact_json(state)
        log.info("%s: %s set %s", self.name, name, ", ".join(applied))
        self.bridge.publish(ZIGBEE_BASE + name, payload, name in self.retained_names)

    def drift(self, value, centre, step, max_offset, digits):
        """Move value by at most `step`, keeping it within `max_offset` of `centre`."""
        value += self.random.uniform(-step, step)
        value = min(max(value, centre - max_offset), centre + max_offset)
        return round(value, digits)


# ---------------------------------------------------------------- main


def probe_broker(host, port):
    """Log why the broker cannot be reached, if it cannot. The devices retry anyway."""
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError as error:
        log.error("cannot reach the broker at tcp://%s:%d: %s; the devices keep retrying", host, port, error)


def check_data_files(data_dir, families):
    for family in families:
        for name in FAMILY_FILES[family]:
            path = data_dir / name
            if not path.is_file():
                raise DataError(f"data file not found: {path} (set --data-dir to the folder that contains {name})")


def build_families(args, stop):
    families = []
    if "wsn" in args.families:
        families.append(WsnFamily(args, stop, load_wsn(args.data_dir / WSN_FILE)))
    if "gps" in args.families:
        fixes = load_gps(args.data_dir / GPS_FILE, args.data_dir / GPS_LEGS_FILE)
        families.append(GpsFamily(args, stop, fixes))
    if "zigbee" in args.families:
        families.append(ZigbeeFamily(args, stop, load_zigbee(args.data_dir / ZIGBEE_FILE)))
    return families


def shut_down(families):
    """Publish every device's retained offline status, then disconnect all clients."""
    devices = [device for family in families for device in family.devices.values()]
    pending = [(device, device.go_offline()) for device in devices]
    deadline = time.monotonic() + OFFLINE_PUBLISH_TIMEOUT_S
    for device, info in pending:
        if info is None:
            if device.connect_count:
                log.warning("%s: not connected, so the offline status was not published", device.name)
            continue
        try:
            info.wait_for_publish(max(deadline - time.monotonic(), 0.01))
        except (ValueError, RuntimeError) as error:
            log.error("%s: publishing offline status failed: %s", device.name, error)
            continue
        if not info.is_published():
            log.error("%s: broker did not acknowledge the offline status in time", device.name)
    # disconnect() first on every client ends their reconnect waits, so loop_stop() is quick.
    for device in devices:
        device.client.disconnect()
    for device in devices:
        device.client.loop_stop()
    published = sum(device.published for device in devices)
    dropped = sum(device.dropped for device in devices)
    log.info("stopped: %d devices published %d messages (%d dropped)", len(devices), published, dropped)


def main(argv=None):
    args = parse_args(argv)
    setup_logging(args.log_level)
    args.data_dir = args.data_dir.resolve()

    # The handlers go in first, so a signal during data loading also stops cleanly.
    stop = threading.Event()
    stop_reason = []

    def request_stop(signum, frame):
        if not stop.is_set():
            stop_reason.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)

    try:
        check_data_files(args.data_dir, args.families)
        families = build_families(args, stop)
    except DataError as error:
        print(f"replay.py: error: {error}", file=sys.stderr)
        return 2

    host, port = args.mqtt_url
    log.info(
        "replaying %s to tcp://%s:%d at speed %g%s",
        ", ".join(args.families), host, port, args.speed, " in a loop" if args.loop else "",
    )
    probe_broker(host, port)
    for family in families:
        family.start()

    deadline = None if args.duration is None else time.monotonic() + args.duration
    while not stop.is_set():
        if any(family.failed for family in families):
            break
        if not any(family.thread.is_alive() for family in families):
            log.info("every selected data set has ended")
            break
        if deadline is not None and time.monotonic() >= deadline:
            log.info("duration of %g s reached", args.duration)
            break
        stop.wait(0.2)
    if stop_reason:
        log.info("received %s, stopping", stop_reason[0])
    stop.set()
    for family in families:
        family.thread.join(timeout=5)
    shut_down(families)
    return 1 if any(family.failed for family in families) else 0


if __name__ == "__main__":
    sys.exit(main())
