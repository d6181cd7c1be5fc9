"""The edge's TOML config file: it sets every flag, the command line wins, errors name the key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pedsam.stream.cli.main import parse
from pedsam.stream.cli.settings import edge_config
from pedsam.stream.errors import ConfigError
from pedsam.stream.fleet.links import PROFILES, LinkSpec
from pedsam.workers.certs import make_demo_pki
from tests.support import ROOT


def pedsam(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pedsam.stream", *args], capture_output=True, text=True, timeout=300,
                          cwd=cwd)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def fleet_config(tmp_path: Path) -> Path:
    pki = make_demo_pki(tmp_path / "pki", ["a.example", "b.example", "c.example"])
    return write(tmp_path / "edge.toml", f"""
link = "lte"
[model]
preset = "tiny"
seed = 3
[split]
scheme = "interleaved"
codec = "fp16"
in_flight = 3
remote_segments = 1
compression = "zstd"
[rotation]
policy = "round-robin"
frame_cap = 0.5
motion = false
[failover]
on_failure = "standby"
request_timeout = 20
verify = 0.25
[tls]
ca = "pki/ca.pem"
cert = "pki/edge.pem"
key = "pki/edge.key"
[metrics]
port = 9109
[[workers]]
address = "a.example:50051"
provider = "provider-a"
token_file = "pki/{pki.workers[0][2].name}"
[[workers]]
address = "b.example:50051"
provider = "provider-b"
token_file = "pki/{pki.workers[1][2].name}"
[[workers]]
address = "c.example:50051"
provider = "provider-c"
standby = true
""")


def edge_config_of(argv: list[str]) -> tuple[Any, Any]:
    _, values = parse(argv)
    return values, edge_config(values)


def test_config_sets_the_flags_and_the_command_line_wins(fleet_config: Path) -> None:
    args, config = edge_config_of(["run", "v.mp4", "--out", "o", "--point", "1,1",
                                   "--config", str(fleet_config), "--codec", "fp32"])
    assert args["in_flight"] == 3 and args["metrics_port"] == 9109
    assert config.model.preset == "tiny" and config.model.seed == 3
    assert config.scheme == "interleaved" and config.codec == "fp32"  # the flag beat the file
    assert config.workers == ("a.example:50051", "b.example:50051") and config.standby == ("c.example:50051",)
    assert config.rotation.policy == "round-robin" and config.rotation.budget.frame_cap == 0.5
    assert config.rotation.motion is False
    assert config.on_failure == "standby" and config.request_timeout == 20 and config.verify == 0.25
    assert config.remote_segments == 1 and config.compression == "zstd"
    assert config.links == (PROFILES["lte"],) * 3  # one for every worker, standby included
    assert config.security is not None and config.security.ca is not None and config.security.cert is not None
    tokens = [(fleet_config.parent / "pki" / f"worker-{i}.token").read_text().strip() for i in range(2)]
    assert config.security.token_for("a.example:50051") == tokens[0]
    assert config.security.token_for("b.example:50051") == tokens[1]
    assert config.security.token_for("c.example:50051") is None
    # --local-workers on the command line replaces the file's workers.
    _, local = edge_config_of(["run", "v.mp4", "--out", "o", "--config", str(fleet_config),
                               "--local-workers", "2", "--on-failure", "edge", "--remote-segments", "2",
                               "--compression", "off"])
    assert local.local_workers == 2 and local.workers == () and local.standby == ()
    assert local.remote_segments == 2 and local.compression == "off"
    _, plain = edge_config_of(["run", "v.mp4", "--out", "o", "--local-workers", "2"])
    assert plain.remote_segments is None and plain.compression == "auto"  # all segments; auto
    _, watched = edge_config_of(["run", "v.mp4", "--out", "o", "--config", str(fleet_config), "--verify", "1"])
    assert watched.verify == 1.0  # the flag beat the file


def test_wire_settings_the_parser_offers_are_the_ones_the_session_takes() -> None:
    from pedsam.stream.cli.options import WIRE_COMPRESSIONS as offered
    from pedsam.stream.core.session import WIRE_COMPRESSIONS

    assert offered == WIRE_COMPRESSIONS
    with pytest.raises(ConfigError, match="--remote-segments 3: mini has 2 windowed segments; give 1..2"):
        edge_config_of(["run", "v.mp4", "--out", "o", "--local-workers", "2", "--remote-segments", "3"])


def test_link_flag_one_spec_per_worker_or_one_for_all(fleet_config: Path) -> None:
    _, config = edge_config_of(["run", "v.mp4", "--out", "o", "--workers", "127.0.0.1:1,127.0.0.1:2",
                                "--link", "lte, 10mbit/2mbit:5ms", "--allow-single-server"])
    assert config.links == (PROFILES["lte"], LinkSpec(up_bps=10e6, down_bps=2e6, rtt=0.005))
    _, config = edge_config_of(["run", "v.mp4", "--out", "o", "--local-workers", "2", "--link", "wifi"])
    assert config.links == (PROFILES["wifi"],) * 2
    _, config = edge_config_of(["run", "v.mp4", "--out", "o", "--local-workers", "2"])
    assert config.links == ()
    with pytest.raises(ConfigError, match="--link gives 2 links for 3 workers"):
        edge_config_of(["run", "v.mp4", "--out", "o", "--config", str(fleet_config), "--link", "lte,wifi"])
    with pytest.raises(ConfigError, match="rate '5xbit' is not a number with a unit"):
        edge_config_of(["run", "v.mp4", "--out", "o", "--local-workers", "2", "--link", "5xbit:1ms"])


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[rotation]\npolicy = 'sideways'\n", "[rotation] policy = 'sideways': choose one of"),
        ("[rotation]\npolcy = 'fixed'\n", "[rotation] polcy: unknown key; [rotation] takes"),
        ("[split]\nin_flight = 'two'\n", "[split] in_flight = 'two': give a whole number"),
        ("[rotation]\nmotion = 1\n", "[rotation] motion = 1: give true or false"),
        ("[colors]\nx = 1\n", "unknown section [colors]"),
        ("[[workers]]\naddress = 'nohost'\n", "[[workers]] #1 address = 'nohost': give HOST:PORT"),
        ("[[workers]]\naddress = 'a:1'\nprovider = 'p'\n[[workers]]\naddress = 'b:1'\nprovider = 'p'\n",
         "workers a:1 and b:1 are both at provider 'p'"),
        ("[model\n", "not valid TOML"),
        ("link = 3\n", "link = 3: give a string"),
        ("[failover]\nverify = 'some'\n", "[failover] verify = 'some': give a number"),
    ],
)
def test_config_errors_point_at_the_key(tmp_path: Path, text: str, words: str) -> None:
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(ConfigError) as caught:
        edge_config_of(["run", "v.mp4", "--out", "o", "--config", str(path)])
    assert words in str(caught.value) and str(path) in str(caught.value)


def test_config_check_prints_what_would_run(fleet_config: Path, tmp_path: Path) -> None:
    done = pedsam("config", "check", str(fleet_config))
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "a.example:50051 (provider-a, token)" in out and "standby c.example:50051 (provider-c" in out
    assert "interleaved" in out and "round-robin" in out and "on failure: standby" in out
    assert "mutual TLS" in out and "metrics on port 9109" in out
    assert "links      emulated on this machine: 20mbit/50mbit:50ms, 20mbit/50mbit:50ms, 20mbit/50mbit:50ms" in out
    assert "wire       segments to workers: 1, compression zstd" in out
    assert "verify     the edge recomputes 0.25 of each worker's windows" in out
    bad = write(tmp_path / "bad.toml", "[failover]\non_failure = 'pray'\n")
    done = pedsam("config", "check", str(bad))
    assert done.returncode == 2
    [line] = done.stderr.splitlines()
    assert line.startswith("pedsam: error: ") and "[failover] on_failure = 'pray'" in line


def test_json_logs_are_one_object_per_line_without_values(tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    from PIL import Image

    from tests.support import scene

    Image.fromarray(scene(64, 96)).save(image)
    done = pedsam("--log-format", "json", "-v", "embed", str(image), "--local-workers", "2",
                  "--save", str(tmp_path / "e.npy"))
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert records and all({"time", "level", "logger", "message"} <= set(r) for r in records)
    assert any("edge session open" in r["message"] for r in records)
    assert not any(line for line in done.stderr.splitlines() if line.strip() and not line.startswith(("{", "note:")))


def test_the_sample_config_checks_out() -> None:
    done = pedsam("config", "check", str(ROOT / "samples" / "edge.toml"))
    assert done.returncode == 0, done.stderr
    assert "3 local" in done.stdout and "keyed-random" in done.stdout and "frame 0.5" in done.stdout
