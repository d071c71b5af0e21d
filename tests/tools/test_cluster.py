"""The local cluster launcher with real processes: etcd, central, site nodes (what exists of them)."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import eventually
from tools.province.cluster import (
    Cluster,
    ClusterError,
    ManagedProcess,
    down,
    endpoints_of,
    read_cluster_json,
    read_state,
    status,
    wait_ready,
    write_state,
)
from tools.province.netutil import free_port
from tools.province.status import province_status, status_table
from vcc.config import load_province, parse_province
from vcc.rpc import wait_serving

pytestmark = pytest.mark.cluster

EXAMPLE = Path(__file__).parents[2] / "deploy" / "province.example.yaml"


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


needs_central = pytest.mark.skipif(not _has("central.main"), reason="central.main is not there yet")
needs_sites = pytest.mark.skipif(not _has("site_node.main"), reason="site_node.main is not there yet")


def python_process(tmp_path: Path, code: str) -> ManagedProcess:
    return ManagedProcess(
        name="probe", cmd=[sys.executable, "-c", code], log_path=tmp_path / "logs" / "probe.log", cwd=tmp_path
    )


async def test_a_process_that_dies_is_reported_with_its_log(tmp_path: Path) -> None:
    proc = python_process(tmp_path, "import sys; print('cannot open the trunk board'); sys.exit(3)")
    proc.spawn()
    with pytest.raises(ClusterError) as failure:
        await wait_ready(proc, f"127.0.0.1:{free_port()}", timeout_s=30)
    message = str(failure.value)
    assert "probe exited (code 3)" in message
    assert "cannot open the trunk board" in message


async def test_a_process_that_never_serves_times_out_with_its_log(tmp_path: Path) -> None:
    proc = python_process(tmp_path, "import time; print('still loading', flush=True); time.sleep(60)")
    proc.spawn()
    try:
        with pytest.raises(ClusterError, match="not serving") as failure:
            await wait_ready(proc, f"127.0.0.1:{free_port()}", timeout_s=1.0)
        assert "still loading" in str(failure.value)
    finally:
        await proc.terminate(grace_s=5)
    assert not proc.alive()


async def test_terminate_falls_back_to_sigkill(tmp_path: Path) -> None:
    proc = python_process(
        tmp_path,
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('deaf' + 'ened', flush=True); time.sleep(60)",
    )
    proc.spawn()
    await _logged(proc, "deafened")
    await proc.terminate(grace_s=0.3)
    assert not proc.alive()
    assert proc.exit_code == -9


async def test_a_process_that_exits_by_itself_is_told_from_one_that_was_stopped(tmp_path: Path) -> None:
    alone = python_process(tmp_path, "import sys; print('segfault in the board driver'); sys.exit(7)")
    alone.spawn()
    assert await alone.wait_exit(30)
    how = alone.exited_by_itself()
    assert how is not None and "exited unasked (code 7)" in how and "segfault in the board driver" in how
    stopped = python_process(tmp_path, "import time; print('up', flush=True); time.sleep(60)")
    stopped.spawn()
    assert stopped.exited_by_itself() is None  # still running
    await _logged(stopped, "up")
    await stopped.terminate(grace_s=5)
    assert stopped.exited_by_itself() is None


async def _logged(proc: ManagedProcess, text: str) -> None:
    async def check() -> bool:
        return text in proc.log_tail()

    await eventually(check, what=f"{proc.name} logged {text!r}")


def example_config(tmp_path: Path) -> Path:
    """The deploy example with free ports, so tests do not collide with anything."""
    data = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))

    def move(part: dict[str, Any]) -> None:
        # Every listening address (gRPC, metrics, desk, SIP): the example's fixed ports are shared.
        for key, value in part.items():
            if isinstance(value, dict):
                move(value)
            elif key.endswith("listen") and isinstance(value, str) and value:
                part[key] = f"127.0.0.1:{free_port()}"

    move(data["central"])
    for site in data["sites"]:
        move(site)
    path = tmp_path / "province.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def test_cluster_json_has_the_shape_of_spec_6(tmp_path: Path) -> None:
    """{"central": {"address", "dashboard"}, "sites": {id: {"address"}}} beside the processes; a
    rewrite that only knows the processes (vcc chaos restart-site) keeps the addresses."""
    raw = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    raw["central"]["dashboard_listen"] = "127.0.0.1:7999"
    # As `vcc cluster up` runs it: with the province CA, so the web pages are HTTPS.
    raw["tls"] = {"ca_file": str(tmp_path / "certs" / "ca.crt")}
    config = parse_province(raw, "example")
    proc = python_process(tmp_path, "pass")
    write_state(tmp_path, [proc], config_path=tmp_path / "province.yaml", endpoints=endpoints_of(config))
    state = read_cluster_json(tmp_path)
    assert state["central"] == {
        "address": config.central.listen,
        "dashboard": "https://127.0.0.1:7999/",
        **(
            {"metrics": f"http://{config.central.metrics_listen}/metrics"}
            if config.central.metrics_listen
            else {}
        ),
    }
    assert state["sites"] == {
        s.id: {
            "address": s.listen,
            **({"sip": s.sip.listen} if s.sip is not None else {}),
            **({"desktop": f"https://{s.desktop_listen}/"} if s.desktop_listen else {}),
            **({"metrics": f"http://{s.metrics_listen}/metrics"} if s.metrics_listen else {}),
        }
        for s in config.sites
    }
    # The example province has the SIP side, the desktops and metrics: scripts find them here.
    assert all({"address", "sip", "desktop", "metrics"} <= set(site) for site in state["sites"].values())
    assert [p["name"] for p in state["processes"]] == ["probe"]

    write_state(tmp_path, [], config_path=tmp_path / "province.yaml")
    again = read_cluster_json(tmp_path)
    assert (again["central"], again["sites"], again["processes"]) == (state["central"], state["sites"], [])

    # No dashboard configured: no dashboard key (a key is there once its feature is).
    del raw["central"]["dashboard_listen"]
    assert endpoints_of(parse_province(raw, "example"))["central"] == {
        "address": config.central.listen,
        "metrics": f"http://{config.central.metrics_listen}/metrics",
    }


@needs_central
async def test_etcd_and_central_start_stop_and_are_recorded(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cluster = await Cluster.start(example_config(tmp_path), run, sites=[], seed_customers=10)
    async with cluster:
        # The run folder holds the config the processes read, pointed at the cluster's own etcd.
        config = load_province(run / "province.yaml")
        assert config.etcd.endpoints == [cluster.addresses.etcd]
        assert cluster.addresses.central == config.central.listen
        await wait_serving(cluster.addresses.central, timeout_s=5)
        assert {p.name: p.alive for p in status(run)} == {"central": True, "etcd": True}
        # Scripts find central and the sites in cluster.json, without searching the process list.
        where = read_cluster_json(run)
        assert where["central"]["address"] == cluster.addresses.central
        assert where["sites"] == endpoints_of(config)["sites"]
        assert all(site["address"] for site in where["sites"].values())
        assert (run / "logs" / "central.log").exists()
        assert (run / "logs" / "etcd.log").exists()

        with pytest.raises(ClusterError, match="already runs"):
            await Cluster.start(example_config(tmp_path), run, sites=[])

        await cluster.stop_central()
        assert not cluster.central or not cluster.central.alive()
        await cluster.start_central()
        await wait_serving(cluster.addresses.central, timeout_s=5)

        # `vcc cluster down` works from another process: only the state file is needed.
        stopped = await down(run, grace_s=10)
        assert stopped == ["central", "etcd"]
        assert not any(p.alive() for p in read_state(run))
    assert not any(p.alive for p in status(run))


async def test_an_unknown_site_is_a_config_error(tmp_path: Path) -> None:
    from vcc.config import ConfigError

    with pytest.raises(ConfigError, match="'xx'"):
        await Cluster.start(example_config(tmp_path), tmp_path / "run", sites=["xx"], central=False)
    assert not (tmp_path / "run" / "cluster.json").exists()


@needs_central
@needs_sites
async def test_whole_cluster_status_kill_and_restart_a_site(tmp_path: Path) -> None:
    async with await Cluster.start(example_config(tmp_path), tmp_path / "run") as cluster:
        for address in cluster.addresses.sites.values():
            await wait_serving(address, timeout_s=5)

        async def central_sees_every_site() -> bool:
            view = await province_status(cluster.config, deadline_s=3)
            assert view.source == "central"
            assert [(s.site_id, s.up) for s in view.sites] == [("gz", True), ("sz", True), ("fs", True)]
            return True

        await eventually(central_sees_every_site, what="central lists every site up")

        await cluster.kill_site("fs")
        assert not cluster.site_alive("fs")
        assert cluster.sites["fs"].exit_code == -9
        await cluster.stop_central()
        # Central away: `vcc status` asks the sites themselves.
        view = await province_status(cluster.config, deadline_s=3)
        assert view.source == "sites"
        assert [(s.site_id, s.up) for s in view.sites] == [("gz", True), ("sz", True), ("fs", False)]
        table = status_table(view)
        assert table.caption is not None and "central unreachable" in str(table.caption)

        await cluster.restart_site("fs")
        await wait_serving(cluster.addresses.sites["fs"], timeout_s=5)
    assert not any(p.alive for p in status(tmp_path / "run"))


@needs_central
@needs_sites
def test_cli_cluster_up_status_down(tmp_path: Path) -> None:
    run = tmp_path / "run"

    def vcc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "tools", *args], capture_output=True, text=True, timeout=120, check=False
        )

    up = vcc("cluster", "up", "--config", str(EXAMPLE), "--run-dir", str(run), "--fresh-ports")
    try:
        assert up.returncode == 0, up.stderr
        assert "vcc cluster down" in up.stdout
        listed = vcc("cluster", "status", "--run-dir", str(run))
        assert listed.returncode == 0, listed.stdout
        assert "site gz" in listed.stdout
    finally:
        done = vcc("cluster", "down", "--run-dir", str(run))
    assert done.returncode == 0, done.stderr
    assert "stopped:" in done.stdout
    assert not any(p.alive for p in status(run))


def test_status_says_when_nothing_answers(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tools",
            "status",
            "--config",
            str(example_config(tmp_path)),
            "--deadline",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "unreachable" in done.stdout
    assert "Traceback" not in done.stderr


@needs_central
@needs_sites
async def test_a_site_that_cannot_start_is_named_and_nothing_is_left_running(tmp_path: Path) -> None:
    config = example_config(tmp_path)
    taken = load_province(config).site("sz").listen
    host, port = taken.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind((host, int(port)))
        squatter.listen()
        with pytest.raises(ClusterError, match=r"site sz exited") as failure:
            await Cluster.start(config, tmp_path / "run")
    assert "last lines of" in str(failure.value)
    assert not any(p.alive for p in status(tmp_path / "run"))
