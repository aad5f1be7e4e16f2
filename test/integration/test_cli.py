"""Command line, environment and config file handling. No broker is needed."""

import json
import re

import pytest

from support import free_port, run_cli, schema_validator

# Each case: arguments, then patterns that stderr must contain. The option may
# be named as on the command line (--log-level) or as the config key
# (log_level).
BAD_ARGUMENTS = [
    (["--listen", "nope"], [r"listen", r"nope"]),
    (["--listen", "127.0.0.1:99999"], [r"listen", r"99999"]),
    (["--log-level", "loud"], [r"log[-_]level", r"loud"]),
    (["--max-message-bytes", "-1"], [r"max[-_]message[-_]bytes", r"-1"]),
    (["--max-message-bytes", "12abc"], [r"max[-_]message[-_]bytes", r"12abc"]),
    (["--send-queue-bytes", "lots"], [r"send[-_]queue[-_]bytes", r"lots"]),
    (["--ws-ping-interval", "soon"], [r"ws[-_]ping[-_]interval", r"soon"]),
    (["--frobnicate"], [r"--frobnicate"]),
]


@pytest.mark.parametrize("args,patterns", BAD_ARGUMENTS, ids=lambda v: " ".join(v) if isinstance(v[0], str) and v[0].startswith("--") else None)
def test_bad_argument_exits_2(args, patterns):
    result = run_cli(*args)
    assert result.returncode == 2, f"exit {result.returncode}, stderr {result.stderr!r}"
    for pattern in patterns:
        assert re.search(pattern, result.stderr), f"stderr does not contain {pattern!r}: {result.stderr!r}"


def test_missing_option_value_exits_2():
    result = run_cli("--log-level")
    assert result.returncode == 2, f"exit {result.returncode}, stderr {result.stderr!r}"
    assert re.search(r"log[-_]level", result.stderr), result.stderr


def test_bad_env_value_exits_2():
    result = run_cli(env={"TIDEGATE_LOG_LEVEL": "loud"})
    assert result.returncode == 2, f"exit {result.returncode}, stderr {result.stderr!r}"
    assert re.search(r"(?i)log[-_]level", result.stderr), result.stderr
    assert "loud" in result.stderr


# Each case: config file content, then patterns that stderr must contain.
BAD_CONFIGS = [
    ({"max_message_bytes": "big"}, [r"max_message_bytes", r"big"]),
    ({"log_level": 3}, [r"log_level", r"\b3\b"]),
    ({"subscribe": "#"}, [r"subscribe"]),
    ({"subscribe": [1]}, [r"subscribe"]),
    ({"listen": "nope"}, [r"listen", r"nope"]),
    ({"colour": "blue"}, [r"colour"]),
]


def write_config(tmp_path, content):
    path = tmp_path / "tidegate.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize("option", ["--config", "--check-config"])
@pytest.mark.parametrize("content,patterns", BAD_CONFIGS, ids=lambda v: json.dumps(v) if isinstance(v, dict) else None)
def test_bad_config_file_exits_2(tmp_path, option, content, patterns):
    path = write_config(tmp_path, content)
    result = run_cli(option, str(path))
    assert result.returncode == 2, f"exit {result.returncode}, stderr {result.stderr!r}"
    # Drop the file name so digits in the tmp path cannot match a value.
    message = result.stderr.replace(str(path), "FILE")
    for pattern in patterns:
        assert re.search(pattern, message), f"stderr does not contain {pattern!r}: {result.stderr!r}"


@pytest.mark.parametrize("content", ["{", "[]", '"text"', ""], ids=["truncated", "array", "string", "empty"])
def test_config_not_json_object_exits_2(tmp_path, content):
    path = write_config(tmp_path, content)
    result = run_cli("--check-config", str(path))
    assert result.returncode == 2, f"exit {result.returncode}, stderr {result.stderr!r}"
    assert result.stderr.strip(), "no error message on stderr"


def test_missing_config_file_exits_2(tmp_path):
    path = tmp_path / "absent.json"
    result = run_cli("--config", str(path))
    assert result.returncode == 2, f"exit {result.returncode}, stderr {result.stderr!r}"
    assert str(path) in result.stderr


GOOD_CONFIG = {
    "mqtt_url": "tcp://127.0.0.1:1883",
    "mqtt_client_id": "tidegate-check",
    "subscribe": ["sensors/#", "chat/+"],
    "publish_allow": ["chat/#"],
    "listen": "127.0.0.1:8080",
    "log_level": "debug",
    "max_message_bytes": 4096,
    "send_queue_bytes": 65536,
    "ws_ping_interval": 5,
    "ws_idle_timeout": 30,
}


def test_check_config_good_file_exits_0(tmp_path):
    path = write_config(tmp_path, GOOD_CONFIG)
    result = run_cli("--check-config", str(path))
    assert result.returncode == 0, f"exit {result.returncode}, stderr {result.stderr!r}"


def print_config(*args, env=None):
    result = run_cli(*args, "--print-config", env=env)
    assert result.returncode == 0, f"exit {result.returncode}, stderr {result.stderr!r}"
    try:
        config = json.loads(result.stdout)
    except ValueError as exc:
        pytest.fail(f"--print-config output is not JSON: {result.stdout!r}: {exc}")
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in schema_validator("config.schema.json").iter_errors(config)]
    assert errors == [], f"--print-config output violates schemas/config.schema.json: {errors}"
    return config


def test_print_config_defaults():
    listen = f"127.0.0.1:{free_port()}"
    config = print_config("--listen", listen, "--mqtt-url", "tcp://127.0.0.1:1883")
    assert config["listen"] == listen
    assert config["mqtt_url"] == "tcp://127.0.0.1:1883"
    assert config["mqtt_client_id"] == "tidegate"
    assert config["subscribe"] == ["#"]
    assert config["publish_allow"] == []
    assert config["log_level"] == "info"
    assert config["max_message_bytes"] == 65536
    assert config["send_queue_bytes"] == 1048576
    assert config["ws_ping_interval"] == 20
    assert config["ws_idle_timeout"] == 60


def test_print_config_matches_schema_defaults():
    """Every key of the config schema is printed, with the schema's default value."""
    schema_properties = schema_validator("config.schema.json").schema["properties"]
    config = print_config("--listen", "127.0.0.1:8080", "--mqtt-url", "tcp://127.0.0.1:1883")
    assert sorted(config) == sorted(schema_properties)
    for key, value in config.items():
        assert value == schema_properties[key]["default"], key


def test_print_config_from_options():
    config = print_config(
        "--subscribe", "a/#",
        "--subscribe", "b/+",
        "--publish-allow", "chat/#",
        "--log-level", "warn",
        "--max-message-bytes", "2048",
        "--send-queue-bytes", "10000",
        "--mqtt-client-id", "gw-7",
    )
    assert config["subscribe"] == ["a/#", "b/+"]
    assert config["publish_allow"] == ["chat/#"]
    assert config["log_level"] == "warn"
    assert config["max_message_bytes"] == 2048
    assert config["send_queue_bytes"] == 10000
    assert config["mqtt_client_id"] == "gw-7"


def test_print_config_from_file(tmp_path):
    path = write_config(tmp_path, GOOD_CONFIG)
    config = print_config("--config", str(path))
    for key in ("subscribe", "publish_allow", "log_level", "max_message_bytes", "send_queue_bytes", "ws_ping_interval", "ws_idle_timeout", "mqtt_client_id"):
        assert config[key] == GOOD_CONFIG[key], key


def test_print_config_from_env():
    config = print_config(env={"TIDEGATE_LOG_LEVEL": "debug", "TIDEGATE_MAX_MESSAGE_BYTES": "1234"})
    assert config["log_level"] == "debug"
    assert config["max_message_bytes"] == 1234


def test_version_and_help():
    version = run_cli("--version")
    assert version.returncode == 0, version.stderr
    assert re.search(r"\d+\.\d+\.\d+", version.stdout), f"no x.y.z version in {version.stdout!r}"
    usage = run_cli("--help")
    assert usage.returncode == 0, usage.stderr
    for option in ("--mqtt-url", "--subscribe", "--publish-allow", "--listen", "--max-message-bytes", "--check-config"):
        assert option in usage.stdout, f"--help does not mention {option}"
