"""The example plugins under plugins/, run through the offline runner plugin-run.

No broker is needed. The runner and the plugins come from $TIDEGATE_BUILD_DIR,
by default the build folder of $TIDEGATE_BIN (build/ without it):
TIDEGATE_BUILD_DIR/tools/plugin-run loads the plugins from
TIDEGATE_BUILD_DIR/plugins.
"""

import csv
import json
import math
import os
import subprocess
from pathlib import Path

import pytest

from support import REPO, WAIT, clean_env

BUILD_DIR = Path(os.environ.get("TIDEGATE_BUILD_DIR") or (
    Path(os.environ["TIDEGATE_BIN"]).resolve().parent.parent if os.environ.get("TIDEGATE_BIN")
    else REPO / "build"))
PLUGIN_RUN = BUILD_DIR / "tools" / "plugin-run"
PLUGIN_DIR = BUILD_DIR / "plugins"
DATA = REPO / "data"
INSTANCE = "inst1"

# The mean Earth radius (IUGG) in metres, as the geofence plugin uses it.
EARTH_RADIUS_M = 6371008.8


# ---------------------------------------------------------------------------
# Running the chain


class Run:
    """The outcome of one plugin-run: exit code, output messages and stderr."""

    def __init__(self, proc):
        self.returncode = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr
        self.messages = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]

    def counter(self, name):
        """Return the summary counter tidegate_plugin_<name>_total of the instance."""
        prefix = f"plugin-run: tidegate_plugin_{name}_total{{instance=\"{INSTANCE}\","
        for line in self.stderr.splitlines():
            if line.startswith(prefix):
                return int(line.rsplit(" ", 1)[1])
        raise AssertionError(f"no counter {name} in stderr: {self.stderr!r}")


def require_runner():
    if not PLUGIN_RUN.exists():
        pytest.fail(f"plugin runner not found: {PLUGIN_RUN} (build it, or set TIDEGATE_BUILD_DIR)")


def write_config(tmp_path, plugin, config, on_error="pass"):
    path = tmp_path / f"{plugin}.json"
    entry = {"name": INSTANCE, "plugin": plugin, "filters": ["#"], "on_error": on_error, "config": config}
    path.write_text(json.dumps({"plugins": [entry]}))
    return path


def run_plugin(tmp_path, plugin, config, messages, on_error="pass", input_file=None):
    """Run messages (a list of input objects) or input_file through one instance."""
    require_runner()
    config_path = write_config(tmp_path, plugin, config, on_error)
    argv = [str(PLUGIN_RUN), "--plugin-dir", str(PLUGIN_DIR), "--config", str(config_path)]
    stdin = None
    if input_file is not None:
        argv += ["--input", str(input_file)]
    else:
        stdin = "".join(json.dumps(m) + "\n" for m in messages)
    proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=WAIT,
                          env=clean_env(), cwd=tmp_path)
    return Run(proc)


def run_ok(tmp_path, plugin, config, messages, **kwargs):
    run = run_plugin(tmp_path, plugin, config, messages, **kwargs)
    assert run.returncode == 0, f"plugin-run exited {run.returncode}: {run.stderr}"
    return run


def passed(topic, payload, qos=0, retain=False):
    """The output line of a message that passed the chain with a JSON payload."""
    return {"topic": topic, "encoding": "json", "payload": payload, "qos": qos, "retain": retain,
            "emitted": False}


def emitted(topic, payload, qos=0, retain=False):
    """The output line of a message a plugin emitted."""
    return {"topic": topic, "encoding": "json", "payload": payload, "qos": qos, "retain": retain,
            "emitted": True}


# ---------------------------------------------------------------------------
# Config errors: every plugin rejects unknown keys and wrong types at start


BAD_CONFIGS = [
    ("unit_convert", {"fieldz": {"t": {"scale": 2}}}, "fieldz"),
    ("unit_convert", {"fields": {"t": {"scale": "1.8"}}}, "fields.t.scale"),
    ("unit_convert", {"fields": {"t": {"scale": 2, "factor": 3}}}, "fields.t.factor"),
    ("unit_convert", {"fields": []}, "fields"),
    ("deadband", {"field": "t", "threshold": 0.5, "interval": 5}, "interval"),
    ("deadband", {"field": "t", "threshold": "0.5"}, "threshold"),
    ("deadband", {"field": "t", "threshold": 0.5, "max_interval_ms": 1.5}, "max_interval_ms"),
    ("deadband", {"threshold": 0.5}, "field"),
    ("select_fields", {"keep": ["a"], "drop_empty": True}, "drop_empty"),
    ("select_fields", {"keep": "temperature"}, "keep"),
    ("select_fields", {"keep": ["a"], "drop_if_empty": "yes"}, "drop_if_empty"),
    ("select_fields", {"keep": ["a"], "rename": {"b": "c"}}, "rename.b"),
    ("threshold_alert", {"field": "t", "above": 40, "below": 30, "alert_topic": "a"}, "below"),
    ("threshold_alert", {"field": "t", "above": 40, "clear_below": "38", "alert_topic": "a"}, "clear_below"),
    ("threshold_alert", {"field": "t", "above": 40, "clear_below": 41, "alert_topic": "a"}, "clear_below"),
    ("threshold_alert", {"field": "t", "above": 40, "alert_topic": "alerts/#"}, "alert_topic"),
    ("geofence", {"zones": [{"name": "z", "lat": 60, "lon": 24, "radius": 400}]}, "zones[0].radius"),
    ("geofence", {"zones": [{"name": "z", "lat": 60, "lon": 24, "radius_m": 400}], "event_topic": 5}, "event_topic"),
    ("geofence", {"zones": [{"name": "z", "lat": 95, "lon": 24, "radius_m": 400}]}, "zones[0].lat"),
    ("geofence", {"zones": [{"name": "z", "lat": 60, "lon": 24, "radius_m": 400}], "time_unit": "h"}, "time_unit"),
]


@pytest.mark.parametrize("plugin,config,key", BAD_CONFIGS,
                         ids=[f"{plugin}-{key}" for plugin, _, key in BAD_CONFIGS])
def test_bad_config_exits_2(tmp_path, plugin, config, key):
    run = run_plugin(tmp_path, plugin, config, [])
    assert run.returncode == 2, f"exit {run.returncode}, stderr {run.stderr!r}"
    assert run.messages == []
    assert f"'{INSTANCE}'" in run.stderr, run.stderr
    assert f'"{key}"' in run.stderr, run.stderr
    assert "expected" in run.stderr, run.stderr


def test_config_not_object_exits_2(tmp_path):
    run = run_plugin(tmp_path, "deadband", ["field"], [])
    assert run.returncode == 2, run.stderr
    assert "expected an object" in run.stderr


# ---------------------------------------------------------------------------
# unit_convert

UNIT_CONFIG = {"fields": {"temperature": {"scale": 1.8, "offset": 32},
                          "voltage": {"scale": 0.001},
                          "sensor.temp": {"offset": 273.15}}}


def test_unit_convert_scales_fields(tmp_path):
    messages = [
        {"topic": "lab/1", "payload": {"temperature": 22, "voltage": 2905, "name": "lab"}, "qos": 1},
        {"topic": "lab/2", "payload": {"sensor": {"temp": 20.5, "id": 7}}, "retain": True},
        {"topic": "lab/3", "payload": {"temperature": -40.0}},
    ]
    run = run_ok(tmp_path, "unit_convert", UNIT_CONFIG, messages)
    assert run.messages == [
        passed("lab/1", {"temperature": 71.6, "voltage": 2.905, "name": "lab"}, qos=1),
        passed("lab/2", {"sensor": {"temp": 293.65, "id": 7}}, retain=True),
        passed("lab/3", {"temperature": -40.0}),
    ]


def test_unit_convert_writes_short_reals(tmp_path):
    run = run_ok(tmp_path, "unit_convert", UNIT_CONFIG, [{"topic": "t", "payload": {"temperature": 22}}])
    # The text, not the parsed value: 71.6 and not 71.599999999999994.
    assert '"payload":{"temperature":71.6}' in run.stdout


def test_unit_convert_leaves_others_unchanged(tmp_path):
    messages = [
        {"topic": "a", "payload": "22 degrees"},
        {"topic": "a", "payload": {"humidity": 40}},
        {"topic": "a", "payload": {"temperature": "hot", "voltage": None}},
        {"topic": "a", "payload": [22, 23]},
        {"topic": "a", "payload": {"sensor": 5}},
        # jansson cannot parse an integer beyond 64 bits, so this payload is not touched.
        {"topic": "a", "payload": {"temperature": 22, "serial": 2**64}},
    ]
    run = run_ok(tmp_path, "unit_convert", UNIT_CONFIG, messages)
    assert run.messages[0] == {"topic": "a", "encoding": "utf8", "payload": "22 degrees", "qos": 0,
                               "retain": False, "emitted": False}
    assert run.messages[1:] == [passed("a", m["payload"]) for m in messages[1:]]
    assert run.counter("errors") == 0


def test_unit_convert_overflow_fails_call(tmp_path):
    messages = [{"topic": "a", "payload": {"temperature": 1e308}}]
    run = run_ok(tmp_path, "unit_convert", UNIT_CONFIG, messages)
    assert run.messages == [passed("a", {"temperature": 1e308})]
    assert run.counter("errors") == 1
    assert "temperature" in run.stderr

    run = run_ok(tmp_path, "unit_convert", UNIT_CONFIG, messages, on_error="drop")
    assert run.messages == []
    assert run.counter("errors") == 1


# ---------------------------------------------------------------------------
# deadband

DEADBAND_CONFIG = {"field": "temperature", "threshold": 0.5, "max_interval_ms": 60000}


def reading(topic, value, received_ms):
    return {"topic": topic, "payload": {"temperature": value}, "received_ms": received_ms}


def test_deadband_forwards_moves(tmp_path):
    messages = [
        reading("room/1", 20.0, 1000),    # first reading: passes
        reading("room/1", 20.25, 2000),   # moved 0.25: dropped
        reading("room/1", 19.75, 3000),   # moved 0.25 the other way: dropped
        reading("room/1", 20.5, 4000),    # moved 0.5 from 20.0: passes
        reading("room/1", 20.0, 5000),    # moved 0.5 down: passes
        reading("room/1", 21.5, 6000),    # passes
    ]
    run = run_ok(tmp_path, "deadband", DEADBAND_CONFIG, messages)
    assert run.messages == [passed("room/1", {"temperature": v}) for v in (20.0, 20.5, 20.0, 21.5)]
    assert run.counter("drops") == 2


def test_deadband_interval_expiry(tmp_path):
    messages = [
        reading("room/1", 20.0, 1000),
        reading("room/1", 20.0, 60999),    # 59999 ms after the last forwarded: dropped
        reading("room/1", 20.1, 61000),    # 60000 ms: passes although it barely moved
        reading("room/1", 20.1, 100000),   # the interval counts from 61000: dropped
        reading("room/1", 20.2, 121000),   # passes
        reading("room/1", 20.2, 50000),    # the clock went back: dropped
    ]
    run = run_ok(tmp_path, "deadband", DEADBAND_CONFIG, messages)
    assert run.messages == [passed("room/1", {"temperature": v}) for v in (20.0, 20.1, 20.2)]


def test_deadband_without_interval_never_repeats(tmp_path):
    config = {"field": "temperature", "threshold": 1}
    messages = [reading("r", 5, 0), reading("r", 5, 10**9), reading("r", 5.5, 2 * 10**9)]
    run = run_ok(tmp_path, "deadband", config, messages)
    assert run.messages == [passed("r", {"temperature": 5})]


def test_deadband_topics_independent(tmp_path):
    messages = [reading("a", 10, 0), reading("b", 10.2, 1), reading("a", 10.2, 2), reading("b", 11, 3)]
    run = run_ok(tmp_path, "deadband", DEADBAND_CONFIG, messages)
    assert run.messages == [passed("a", {"temperature": 10}), passed("b", {"temperature": 10.2}),
                            passed("b", {"temperature": 11})]


def test_deadband_passes_other_payloads(tmp_path):
    config = {"field": "sensor.temperature", "threshold": 0.5}
    messages = [
        {"topic": "r", "payload": {"sensor": {"temperature": 20}}},
        {"topic": "r", "payload": "offline"},
        {"topic": "r", "payload": {"sensor": {"humidity": 40}}},
        {"topic": "r", "payload": {"sensor": {"temperature": "n/a"}}},
        {"topic": "r", "payload": {"sensor": {"temperature": 20.25}}},
    ]
    run = run_ok(tmp_path, "deadband", config, messages)
    assert [m["payload"] for m in run.messages] == [m["payload"] for m in messages[:4]]
    assert run.messages[1]["encoding"] == "utf8"
    assert run.counter("errors") == 0


def test_deadband_evicts_beyond_max_topics(tmp_path):
    config = dict(DEADBAND_CONFIG, max_topics=2)
    messages = [reading("a", 1, 0), reading("b", 1, 0), reading("a", 1, 1),   # a is now the newest
                reading("c", 1, 2),                                           # evicts b
                reading("a", 1, 3),                                           # a is still known
                reading("b", 1, 4)]                                           # b starts over
    run = run_ok(tmp_path, "deadband", config, messages)
    assert [m["topic"] for m in run.messages] == ["a", "b", "c", "b"]


def test_deadband_default_bound_is_10000_topics(tmp_path):
    messages = [reading(f"t/{i}", 1, 0) for i in range(10001)]   # t/0 is evicted by t/10000
    messages += [reading("t/10000", 1, 1), reading("t/1", 1, 1), reading("t/0", 1, 1)]
    run = run_ok(tmp_path, "deadband", DEADBAND_CONFIG, messages)
    assert len(run.messages) == 10002
    assert run.messages[-1] == passed("t/0", {"temperature": 1})


# ---------------------------------------------------------------------------
# select_fields

SELECT_CONFIG = {"keep": ["temperature", "humidity", "battery"], "rename": {"temperature": "temp_c"},
                 "drop_if_empty": True}


def test_select_fields_zigbee2mqtt(tmp_path):
    source = DATA / "zigbee2mqtt-frontend-onConnect.jsonl"
    lines = [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    expected = []
    for line in lines:
        payload = line["payload"]
        if isinstance(payload, str):
            expected.append({"topic": line["topic"], "encoding": "utf8", "payload": payload, "qos": 0,
                             "retain": False, "emitted": False})
        elif not isinstance(payload, dict):
            expected.append(passed(line["topic"], payload))
        else:
            kept = {SELECT_CONFIG["rename"].get(k, k): payload[k] for k in SELECT_CONFIG["keep"] if k in payload}
            if kept:
                expected.append(passed(line["topic"], kept))
    sensors = [m for m in expected if isinstance(m["payload"], dict) and "temp_c" in m["payload"]]
    assert len(sensors) >= 3, "the data file should hold several temperature sensors"

    run = run_ok(tmp_path, "select_fields", SELECT_CONFIG, None, input_file=source)
    assert run.messages == expected
    assert run.counter("drops") == len(lines) - len(expected)


def test_select_fields_order_and_paths(tmp_path):
    config = {"keep": ["battery", "update.state", "temperature"], "rename": {"update.state": "update"}}
    payload = {"temperature": 26.93, "update": {"state": "idle"}, "battery": 45, "linkquality": 60}
    run = run_ok(tmp_path, "select_fields", config, [{"topic": "z/1", "payload": payload}])
    assert run.messages == [passed("z/1", {"battery": 45, "update": "idle", "temperature": 26.93})]
    # Key order follows "keep", not the payload.
    assert list(run.messages[0]["payload"]) == ["battery", "update", "temperature"]


def test_select_fields_empty_result(tmp_path):
    messages = [{"topic": "z/1", "payload": {"linkquality": 60}}, {"topic": "z/1", "payload": {"battery": None}}]
    run = run_ok(tmp_path, "select_fields", {"keep": ["battery"]}, messages)
    assert run.messages == [passed("z/1", {}), passed("z/1", {"battery": None})]

    run = run_ok(tmp_path, "select_fields", {"keep": ["battery"], "drop_if_empty": True}, messages)
    assert run.messages == [passed("z/1", {"battery": None})]


def test_select_fields_passes_non_objects(tmp_path):
    messages = [{"topic": "bridge/state", "payload": "online"}, {"topic": "bridge/groups", "payload": []},
                {"topic": "raw", "payload": "{not json"}]
    run = run_ok(tmp_path, "select_fields", SELECT_CONFIG, messages)
    assert [m["payload"] for m in run.messages] == ["online", [], "{not json"]


# ---------------------------------------------------------------------------
# threshold_alert

ALERT_CONFIG = {"field": "temperature", "above": 40, "clear_below": 38, "alert_topic": "alerts/{topic}"}


def test_threshold_alert_hysteresis(tmp_path):
    values = [39, 40, 40.5, 41, 39, 38, 37.9, 39, 40.2, 39.9, 37]
    messages = [{"topic": "oven/1", "payload": {"temperature": v}, "qos": 1} for v in values]
    run = run_ok(tmp_path, "threshold_alert", ALERT_CONFIG, messages)

    expected = []
    for v in values:
        expected.append(passed("oven/1", {"temperature": v}, qos=1))
        if v in (40.5, 40.2):
            expected.append(emitted("alerts/oven/1", {"state": "alert", "value": v, "topic": "oven/1"}, qos=1))
        if v in (37.9, 37):
            expected.append(emitted("alerts/oven/1", {"state": "clear", "value": v, "topic": "oven/1"}, qos=1))
    assert run.messages == expected
    assert run.counter("emitted") == 4


def test_threshold_alert_topics_independent(tmp_path):
    config = dict(ALERT_CONFIG, alert_topic="alerts/{topic}/state", retain=True)
    messages = [{"topic": "a", "payload": {"temperature": 45}}, {"topic": "b", "payload": {"temperature": 39}},
                {"topic": "b", "payload": {"temperature": 41}}, {"topic": "a", "payload": {"temperature": 39}}]
    run = run_ok(tmp_path, "threshold_alert", config, messages)
    alerts = [m for m in run.messages if m["emitted"]]
    assert alerts == [
        emitted("alerts/a/state", {"state": "alert", "value": 45, "topic": "a"}, retain=True),
        emitted("alerts/b/state", {"state": "alert", "value": 41, "topic": "b"}, retain=True),
    ]


def test_threshold_alert_without_hysteresis(tmp_path):
    config = {"field": "t", "above": 10, "alert_topic": "alerts"}
    messages = [{"topic": "s", "payload": {"t": v}} for v in (11, 10, 9.5, 10.5)]
    run = run_ok(tmp_path, "threshold_alert", config, messages)
    states = [(m["payload"]["state"], m["payload"]["value"]) for m in run.messages if m["emitted"]]
    # 10 is neither above 10 nor below 10, so the alert stays until 9.5.
    assert states == [("alert", 11), ("clear", 9.5), ("alert", 10.5)]


def test_threshold_alert_ignores_other_payloads(tmp_path):
    messages = [
        {"topic": "s", "payload": {"temperature": 41}},
        {"topic": "s", "payload": "overheat"},
        {"topic": "s", "payload": {"humidity": 10}},
        {"topic": "s", "payload": {"temperature": "37"}},
        {"topic": "s", "payload": {"temperature": 42}},   # still in alert: no message
        {"topic": "s", "payload": {"temperature": 30}},
    ]
    run = run_ok(tmp_path, "threshold_alert", ALERT_CONFIG, messages)
    assert [m["payload"] for m in run.messages if not m["emitted"]] == [m["payload"] for m in messages]
    states = [m["payload"]["state"] for m in run.messages if m["emitted"]]
    assert states == ["alert", "clear"]
    assert run.counter("errors") == 0


# ---------------------------------------------------------------------------
# geofence, on real fixes of device 1 of the Helsinki public transport data set

def haversine_m(lat1, lon1, lat2, lon2):
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = math.radians(lat2 - lat1)
    dlambda = math.radians(lon2 - lon1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.atan2(math.sqrt(a), math.sqrt(1 - a))


def bearing_deg(lat1, lon1, lat2, lon2):
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dlambda = math.radians(lon2 - lon1)
    y = math.sin(dlambda) * math.cos(phi2)
    x = math.cos(phi1) * math.sin(phi2) - math.sin(phi1) * math.cos(phi2) * math.cos(dlambda)
    return (math.degrees(math.atan2(y, x)) + 360) % 360


def time_ms(text):
    """Milliseconds of a "YYYY-MM-DD HH:MM:SS.fff" time, taken as UTC like the plugin does."""
    from datetime import datetime, timezone
    return round(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp() * 1000)


def helsinki_track():
    """Fixes of device 1 from 09:07 to 09:23, as payloads with the CSV's own column names."""
    with open(DATA / "aalto-trafficsense-device_data.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f)
                if r["device_id"] == "1" and "2016-08-26 09:07" <= r["time"] < "2016-08-26 09:23"]
    return [{"time": r["time"], "lat": float(r["lat"]), "lng": float(r["lng"]), "accuracy": float(r["accuracy"])}
            for r in rows]


# The device slowed almost to a stop near this point at 09:16:18. Ruoholahti
# is reached at 09:22 and not left before 09:23. The third zone, around Helsinki
# central railway station, is never reached.
TRACK_ZONES = [
    {"name": "pause", "lat": 60.168811, "lon": 24.804468, "radius_m": 300},
    {"name": "ruoholahti", "lat": 60.163, "lon": 24.913, "radius_m": 400},
    {"name": "central", "lat": 60.1719, "lon": 24.9414, "radius_m": 300},
]
TRACK_CONFIG = {"zones": TRACK_ZONES, "event_topic": "geofence/{topic}", "lon_field": "lng"}


def test_geofence_helsinki_track(tmp_path):
    track = helsinki_track()
    assert len(track) == 83
    messages = [{"topic": "devices/1", "payload": fix} for fix in track]
    run = run_ok(tmp_path, "geofence", TRACK_CONFIG, messages)

    events = [(m["payload"]["event"], m["payload"]["zone"], m["payload"]["time_ms"]) for m in run.messages
              if m["emitted"]]
    assert events == [
        ("enter", "pause", time_ms("2016-08-26 09:15:46.718")),
        ("leave", "pause", time_ms("2016-08-26 09:17:00.718")),
        ("enter", "ruoholahti", time_ms("2016-08-26 09:22:06.714")),
    ]

    # The same events from the zone geometry computed here.
    computed = []
    inside = set()
    for fix in track:
        for zone in TRACK_ZONES:
            now = haversine_m(zone["lat"], zone["lon"], fix["lat"], fix["lng"]) <= zone["radius_m"]
            if now != (zone["name"] in inside):
                computed.append(("enter" if now else "leave", zone["name"], time_ms(fix["time"])))
                (inside.add if now else inside.discard)(zone["name"])
    assert events == computed

    leave = next(m for m in run.messages if m["emitted"] and m["payload"]["event"] == "leave")
    assert leave == emitted("geofence/devices/1", {"event": "leave", "zone": "pause", "topic": "devices/1",
                                                   "lat": 60.169424, "lon": 24.81368,
                                                   "time_ms": time_ms("2016-08-26 09:17:00.718")})


def test_geofence_adds_speed_and_heading(tmp_path):
    track = helsinki_track()
    messages = [{"topic": "devices/1", "payload": fix} for fix in track]
    run = run_ok(tmp_path, "geofence", TRACK_CONFIG, messages)
    forwarded = [m for m in run.messages if not m["emitted"]]
    assert len(forwarded) == len(track)

    assert forwarded[0] == passed("devices/1", track[0])
    for previous, fix, out in zip(track, track[1:], forwarded[1:]):
        payload = out["payload"]
        assert {k: payload[k] for k in fix} == fix
        distance = haversine_m(previous["lat"], previous["lng"], fix["lat"], fix["lng"])
        seconds = (time_ms(fix["time"]) - time_ms(previous["time"])) / 1000
        assert payload["speed_mps"] == pytest.approx(distance / seconds, abs=0.006), fix["time"]
        heading = bearing_deg(previous["lat"], previous["lng"], fix["lat"], fix["lng"])
        assert payload["heading_deg"] == pytest.approx(heading, abs=0.051), fix["time"]

    # From 09:07:12.809 to 09:07:23.805 the device went 96 m south: about 8.7 m/s, heading 173.
    assert forwarded[1]["payload"]["speed_mps"] == pytest.approx(8.7, abs=0.01)
    assert forwarded[1]["payload"]["heading_deg"] == pytest.approx(172.9, abs=0.05)


def test_geofence_uses_received_ms(tmp_path):
    zones = [{"name": "depot", "lat": 60.0, "lon": 25.0, "radius_m": 50}]
    # 0.001 degree of latitude north is about 111 m.
    messages = [
        {"topic": "bus/7", "payload": {"lat": 60.0, "lon": 25.0}, "received_ms": 1_000_000},
        {"topic": "bus/7", "payload": {"lat": 60.001, "lon": 25.0}, "received_ms": 1_010_000},
        {"topic": "bus/7", "payload": {"lat": 60.001, "lon": 25.0}, "received_ms": 1_010_000},
    ]
    run = run_ok(tmp_path, "geofence", {"zones": zones}, messages)
    distance = haversine_m(60.0, 25.0, 60.001, 25.0)
    assert run.messages[0] == passed("bus/7", {"lat": 60.0, "lon": 25.0})
    assert run.messages[1] == emitted("geofence/bus/7", {"event": "enter", "zone": "depot", "topic": "bus/7",
                                                         "lat": 60.0, "lon": 25.0, "time_ms": 1_000_000})
    assert run.messages[2]["payload"]["speed_mps"] == pytest.approx(distance / 10, abs=0.006)
    assert run.messages[2]["payload"]["heading_deg"] == 0.0
    assert run.messages[3]["payload"]["event"] == "leave"
    # No time passed and no movement: neither field is added.
    assert run.messages[4] == passed("bus/7", {"lat": 60.001, "lon": 25.0})
    assert len(run.messages) == 5


@pytest.mark.parametrize("stamp,unit,config_field", [
    ("2016-08-26T06:07:12.809Z", "ms", "time"),
    ("2016-08-26T09:07:12.809+03:00", "ms", "time"),
    ("2016-08-26 09:07:12.809+0300", "ms", "time"),
    (1472191632809, "ms", "ts"),
    (1472191632.809, "s", "ts"),
])
def test_geofence_time_field_formats(tmp_path, stamp, unit, config_field):
    zones = [{"name": "z", "lat": 60.0, "lon": 25.0, "radius_m": 10}]
    config = {"zones": zones, "time_field": config_field, "time_unit": unit}
    messages = [{"topic": "t", "payload": {"lat": 60.0, "lon": 25.0, config_field: stamp}, "received_ms": 5}]
    run = run_ok(tmp_path, "geofence", config, messages)
    assert run.messages[1]["payload"]["time_ms"] == 1472191632809


def test_geofence_passes_payloads_without_position(tmp_path):
    zones = [{"name": "z", "lat": 60.0, "lon": 25.0, "radius_m": 10}]
    messages = [
        {"topic": "t", "payload": "60.0,25.0"},
        {"topic": "t", "payload": {"lat": 60.0}},
        {"topic": "t", "payload": {"lat": 60.0, "lon": "25.0"}},
        {"topic": "t", "payload": {"position": {"lat": 60.0}}},
    ]
    run = run_ok(tmp_path, "geofence", {"zones": zones}, messages)
    assert [m["payload"] for m in run.messages] == [m["payload"] for m in messages]
    assert not any(m["emitted"] for m in run.messages)
    assert run.counter("errors") == 0


def test_geofence_dotted_fields(tmp_path):
    zones = [{"name": "z", "lat": 60.0, "lon": 25.0, "radius_m": 10}]
    config = {"zones": zones, "lat_field": "gps.lat", "lon_field": "gps.lon"}
    messages = [{"topic": "t", "payload": {"gps": {"lat": 60.0, "lon": 25.0}}, "received_ms": 0}]
    run = run_ok(tmp_path, "geofence", config, messages)
    assert [m["payload"].get("event") for m in run.messages] == [None, "enter"]


BAD_FIXES = [
    ({"lat": 91.0, "lon": 25.0}, "out of range"),
    ({"lat": 60.0, "lon": 180.5}, "out of range"),
    ({"lat": 60.0, "lon": 25.0, "time": "yesterday"}, "ISO 8601"),
    ({"lat": 60.0, "lon": 25.0, "time": "2016-08-26 25:00:00"}, "ISO 8601"),
    ({"lat": 60.0, "lon": 25.0, "time": True}, "ISO 8601"),
    ({"lat": 60.0, "lon": 25.0, "time": "2016-08-26T09:07:12+0"}, "ISO 8601"),
]


@pytest.mark.parametrize("payload,reason", BAD_FIXES, ids=["lat", "lon", "time-text", "time-hour", "time-bool", "time-zone"])
def test_geofence_bad_fix_fails_call(tmp_path, payload, reason):
    zones = [{"name": "z", "lat": 60.0, "lon": 25.0, "radius_m": 10}]
    messages = [{"topic": "t", "payload": payload}]
    run = run_ok(tmp_path, "geofence", {"zones": zones}, messages)
    # on_error "pass": the message goes on unchanged and emits nothing.
    assert run.messages == [passed("t", payload)]
    assert run.counter("errors") == 1
    assert reason in run.stderr

    run = run_ok(tmp_path, "geofence", {"zones": zones}, messages, on_error="drop")
    assert run.messages == []
    assert run.counter("errors") == 1


def test_geofence_failed_fix_keeps_state(tmp_path):
    zones = [{"name": "z", "lat": 60.0, "lon": 25.0, "radius_m": 10}]
    messages = [
        {"topic": "t", "payload": {"lat": 60.0, "lon": 25.0}, "received_ms": 0},
        {"topic": "t", "payload": {"lat": 60.1, "lon": 25.0, "time": "never"}, "received_ms": 1000},
        {"topic": "t", "payload": {"lat": 60.0, "lon": 25.0}, "received_ms": 2000},
    ]
    run = run_ok(tmp_path, "geofence", {"zones": zones}, messages)
    # The failed fix neither left the zone nor became the previous fix.
    assert [m["payload"].get("event") for m in run.messages if m["emitted"]] == ["enter"]
    assert run.messages[-1] == passed("t", {"lat": 60.0, "lon": 25.0, "speed_mps": 0.0})
