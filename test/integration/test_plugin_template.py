"""The plugin template builds out of tree against the installed header,
found with pkg-config, and runs through plugin-run."""

import json
import os
import subprocess

from support import TIDEGATE_BIN

BUILD_DIR = TIDEGATE_BIN.parent.parent
SOURCE_DIR = BUILD_DIR.parent
TEMPLATE = SOURCE_DIR / "docs" / "plugin-template" / "topic_prefix.c"
PLUGIN_RUN = BUILD_DIR / "tools" / "plugin-run"


def installed_tree(tmp_path):
    """Installs the build into a scratch DESTDIR and returns the pkg-config environment."""
    destdir = tmp_path / "root"
    subprocess.run(["meson", "install", "-C", str(BUILD_DIR), "--no-rebuild", "--quiet",
                    "--destdir", str(destdir)], check=True, capture_output=True, timeout=120)
    pc_files = list(destdir.rglob("tidegate-plugin.pc"))
    assert len(pc_files) == 1, pc_files
    env = dict(os.environ)
    env["PKG_CONFIG_PATH"] = str(pc_files[0].parent)
    env["PKG_CONFIG_SYSROOT_DIR"] = str(destdir)
    return env


def build_template(tmp_path):
    env = installed_tree(tmp_path)
    cflags = subprocess.run(["pkg-config", "--cflags", "tidegate-plugin"], env=env, check=True,
                            capture_output=True, text=True).stdout.split()
    assert any(flag.startswith(f"-I{tmp_path}") for flag in cflags), cflags
    output = tmp_path / "topic_prefix.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-Wall", "-Wextra", "-Werror", *cflags,
                    "-o", str(output), str(TEMPLATE), "-ljansson"],
                   check=True, capture_output=True, timeout=120)
    return output


def run_chain(tmp_path, plugin, config, lines):
    config_path = tmp_path / "tidegate.json"
    config_path.write_text(json.dumps({"plugins": [
        {"name": "site", "plugin": str(plugin), "filters": ["lab/#"], "config": config}]}))
    return subprocess.run([str(PLUGIN_RUN), "--config", str(config_path)],
                          input="\n".join(json.dumps(line) for line in lines) + "\n",
                          capture_output=True, text=True, timeout=60)


def test_template_builds_and_runs(tmp_path):
    plugin = build_template(tmp_path)
    result = run_chain(tmp_path, plugin, {"prefix": "site-a"}, [
        {"topic": "lab/1/temp", "payload": {"t": 21.5}},
        {"topic": "other/x", "payload": "untouched"},
    ])
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(m["topic"], m["payload"], m["emitted"]) for m in out] == [
        ("site-a/lab/1/temp", {"t": 21.5}, False),
        ("other/x", "untouched", False),
    ]
    assert 'tidegate_plugin_calls_total{instance="site",plugin="topic_prefix"} 1' in result.stderr


def test_template_rejects_unknown_setting(tmp_path):
    plugin = build_template(tmp_path)
    result = run_chain(tmp_path, plugin, {"prefix": "a", "colour": "red"}, [])
    assert result.returncode == 2
    assert "instance 'site'" in result.stderr
    assert "unknown setting 'colour'" in result.stderr


def test_plugin_run_reports_bad_lines(tmp_path):
    plugin = build_template(tmp_path)
    config_path = tmp_path / "tidegate.json"
    config_path.write_text(json.dumps({"plugins": [
        {"name": "site", "plugin": str(plugin), "config": {"prefix": "p"}}]}))
    result = subprocess.run([str(PLUGIN_RUN), "--config", str(config_path)],
                            input='not json\n{"topic":"a/+","payload":1}\n{"topic":"ok","payload":1}\n',
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "line 1: not a JSON object" in result.stderr
    assert "line 2: 'topic' must be a valid MQTT topic name" in result.stderr
    assert [json.loads(line)["topic"] for line in result.stdout.splitlines()] == ["p/ok"]
