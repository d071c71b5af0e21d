"""deploy/ validated: the compose file against the vendored compose spec, the Kubernetes manifests
against the schemas kubernetes-validate bundles, the systemd units with `systemd-analyze verify`,
the Prometheus config and alert rules (with promtool's own rule tests when it is installed), and
the province configs they ship with vcc's own parser. Each validator is also shown a broken copy
and must refuse it."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from vcc.config import load_province

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
UNITS = DEPLOY / "systemd"
PROMETHEUS = DEPLOY / "prometheus"
COMPOSE_SCHEMA = Path(__file__).parent / "schemas" / "compose-spec.json"
KUBERNETES_VERSION = "1.31"
NOT_RESOURCES = ("kustomization.yaml", "province.yaml")


# --- compose ---------------------------------------------------------------------------------------


def compose_errors(doc: Any) -> list[str]:
    schema = json.loads(COMPOSE_SCHEMA.read_text())
    # The schema names draft-07 without the trailing '#' that jsonschema's lookup expects.
    validator = jsonschema.Draft7Validator(schema)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(doc)]


def test_the_compose_file_follows_the_compose_spec() -> None:
    doc = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    assert compose_errors(doc) == []
    services = doc["services"]
    # The province's layout: three database nodes, three etcd members with TLS, two replicas, a
    # site per city of its province config, and the schema migrated before any replica starts.
    assert sorted(s for s in services if s.startswith("cockroach-") and s != "cockroach-init") == [
        "cockroach-1",
        "cockroach-2",
        "cockroach-3",
    ]
    etcd = [s for s in services if re.fullmatch(r"etcd-\d", s)]
    assert len(etcd) == 3
    env = (DEPLOY / "compose" / "etcd.env").read_text()
    assert "ETCD_CLIENT_CERT_AUTH=true" in env and "ETCD_PEER_CLIENT_CERT_AUTH=true" in env
    assert all(services[s]["environment"]["ETCD_CERT_FILE"].startswith("/certs/") for s in etcd)
    assert sorted(s for s in services if s.startswith("central-")) == ["central-1", "central-2"]
    province = load_province(DEPLOY / "compose" / "province.yaml")
    assert {f"site-{s.id}" for s in province.sites} <= set(services)
    for name in ("central-1", "central-2", *(f"site-{s.id}" for s in province.sites)):
        wait = services[name]["depends_on"]["vcc-migrate"]
        assert wait == {"condition": "service_completed_successfully"}, name
    assert province.central.schema_mode == "require"
    assert services["vcc-migrate"]["command"][:2] == ["central", "migrate"]


def test_the_compose_province_runs_vcc_with_tls_from_vcc_certs(tmp_path: Path) -> None:
    """`tls` for vcc itself: every vcc service mounts the folder `vcc certs province` makes (its
    own pair found beside the CA), and the etcd members serve that CA's etcd-server pair, which
    names what vcc checks (etcd.vcc.internal) and the members' hosts (their peers check them)."""
    from typer.testing import CliRunner

    from tools.cli import app

    doc = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    services = doc["services"]
    province = load_province(DEPLOY / "compose" / "province.yaml")
    assert province.tls is not None and province.tls.ca_file == "/etc/vcc/certs/ca.crt"
    etcd = sorted(s for s in services if re.fullmatch(r"etcd-\d", s))
    assert sorted(e.split(":")[0] for e in province.etcd.endpoints) == etcd
    vcc = [n for n, s in services.items() if s.get("image", "").startswith("vcc:")]
    assert {"vcc-migrate", "central-1", "central-2"} <= set(vcc)
    for name in vcc:
        assert "./certs/vcc:/etc/vcc/certs:ro" in services[name]["volumes"], name
    out = tmp_path / "certs"
    made = CliRunner().invoke(
        app,
        ["certs", "province", "--config", str(DEPLOY / "compose" / "province.yaml"), "--out", str(out),
         "--central-replicas", "2", *(a for host in etcd for a in ("--host", host))],
    )  # fmt: skip
    assert made.exit_code == 0, made.output
    for name in ("central-1", "central-2", *(f"site-{s.id}" for s in province.sites)):
        assert (out / f"{name}.crt").is_file() and (out / f"{name}.key").is_file(), name
    for member in etcd:
        env = services[member]["environment"]
        assert "./certs/vcc:/certs:ro" in services[member]["volumes"]
        for key in ("ETCD_CERT_FILE", "ETCD_KEY_FILE", "ETCD_PEER_CERT_FILE", "ETCD_PEER_KEY_FILE"):
            assert (out / env[key].removeprefix("/certs/")).is_file(), (member, key)
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((out / "etcd-server.crt").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"etcd.vcc.internal", *etcd} <= set(names.get_values_for_type(x509.DNSName))


def test_the_compose_check_refuses_a_broken_file() -> None:
    doc = yaml.safe_load((DEPLOY / "compose" / "compose.yaml").read_text())
    broken = copy.deepcopy(doc)
    broken["services"]["site-gz"]["restrat"] = "always"
    broken["services"]["central-1"]["depends_on"]["vcc-migrate"]["condition"] = "service_finished"
    errors = compose_errors(broken)
    assert any("restrat" in e for e in errors) and any("service_finished" in e for e in errors), errors


# --- kubernetes ------------------------------------------------------------------------------------


def manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name in NOT_RESOURCES:
            continue
        found += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return found


def test_the_kubernetes_manifests_validate_against_the_bundled_schemas() -> None:
    resources = manifests()
    for name, doc in resources:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert doc["metadata"].get("namespace", "vcc") == "vcc", name
    # Everything kustomize applies is listed, and nothing listed is missing.
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {n for n, _ in resources}
    by_kind: dict[tuple[str, str], dict[str, Any]] = {
        (d["kind"], d["metadata"]["name"]): d for _, d in resources
    }
    assert by_kind[("StatefulSet", "cockroachdb")]["spec"]["replicas"] == 3
    etcd = by_kind[("StatefulSet", "etcd")]
    assert etcd["spec"]["replicas"] == 3
    args = etcd["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--client-cert-auth" in args and "--peer-client-cert-auth" in args
    assert all(a.split("=", 1)[1].startswith("https://") for a in args if a.startswith("--listen-"))
    assert by_kind[("StatefulSet", "central")]["spec"]["replicas"] == 2
    migrate = by_kind[("Job", "vcc-migrate")]["spec"]["template"]["spec"]["containers"][0]
    assert migrate["args"][:2] == ["central", "migrate"]
    province = load_province(K8S / "province.yaml")
    assert province.central.schema_mode == "require"
    for site in province.sites:
        node = by_kind[("StatefulSet", f"site-{site.id}")]
        container = node["spec"]["template"]["spec"]["containers"][0]
        assert container["args"][-2:] == ["--site", site.id]
        # The site listens on its pod's stable name, which its headless Service gives it.
        assert site.listen.startswith(f"site-{site.id}-0.site-{site.id}.vcc.svc")
        assert ("Service", f"site-{site.id}") in by_kind


def test_the_kubernetes_check_refuses_a_broken_manifest() -> None:
    _, site = next(
        (n, d) for n, d in manifests() if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "site-gz"
    )
    broken = copy.deepcopy(site)
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    wrong_type = copy.deepcopy(site)
    wrong_type["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, KUBERNETES_VERSION, strict=True)


# --- systemd ---------------------------------------------------------------------------------------

SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
needs_systemd = pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed here")


def verify_units(tmp_path: Path, texts: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """systemd-analyze verify on instances of the units, with ExecStart pointed at this vcc (verify
    checks that the program exists)."""
    vcc = Path(sys.executable).parent / "vcc"
    paths = []
    for name, text in texts.items():
        path = tmp_path / name.replace("@.", "@test.")
        path.write_text(text.replace("/opt/vcc/bin/vcc", str(vcc)))
        paths.append(str(path))
    assert SYSTEMD_ANALYZE is not None
    return subprocess.run(
        [SYSTEMD_ANALYZE, "verify", *paths],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "SYSTEMD_LOG_COLOR": "0"},
        check=False,
    )


def unit_texts() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(UNITS.glob("*.service"))}


@needs_systemd
def test_the_systemd_units_verify(tmp_path: Path) -> None:
    texts = unit_texts()
    assert set(texts) == {"vcc-site@.service", "vcc-central@.service", "vcc-central-migrate.service"}
    done = verify_units(tmp_path, texts)
    # Unknown keys and bad values are only warnings for systemd: any output is a failure here.
    assert done.returncode == 0 and done.stderr.strip() == "", done.stderr
    for name in ("vcc-site@.service", "vcc-central@.service"):
        unit = texts[name]
        for line in (
            "Type=notify",
            "WatchdogSec=",
            "Restart=on-failure",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
        ):
            assert line in unit, (name, line)


@needs_systemd
def test_the_systemd_check_refuses_a_broken_unit(tmp_path: Path) -> None:
    texts = unit_texts()
    broken = (
        texts["vcc-site@.service"]
        .replace("WatchdogSec=10", "WatchdogSecs=10")
        .replace("Type=notify", "Type=notifyy")
    )
    done = verify_units(tmp_path, {"vcc-site@.service": broken})
    assert "WatchdogSecs" in done.stderr and "notifyy" in done.stderr, done.stderr


# --- prometheus ------------------------------------------------------------------------------------

PROMTOOL = os.environ.get("VCC_PROMTOOL") or shutil.which("promtool")
EXPORTERS = [
    ROOT / "site_node" / "metrics.py",
    ROOT / "central" / "metrics.py",
    ROOT / "proto" / "vcc" / "metrics.py",
]


def exported_names() -> set[str]:
    """Every metric name vcc exports (counters also as NAME_total, histograms with their series)."""
    names: set[str] = set()
    for path in EXPORTERS:
        text = path.read_text()
        for kind, name in re.findall(r'(Counter|Gauge|Histogram)\w*\(\s*"(vcc_\w+)"', text):
            names.add(name)
            if kind == "Counter":
                names.add(f"{name}_total")
            if kind == "Histogram":
                names |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"}
    return names


def test_the_alert_rules_watch_what_vcc_exports() -> None:
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    # The three the operators asked for, at least.
    assert {"VccCityDown", "VccServiceLevelBelowTarget", "VccOutboxGrowing"} <= set(alerts)
    exported = exported_names()
    assert "vcc_site_outbox_pending" in exported and "vcc_central_db_retries_total" in exported
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"], name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        used = set(re.findall(r"\bvcc_\w+", rule["expr"]))
        # Each rule reads vcc's figures, or Prometheus's own `up` of a vcc job.
        assert used or 'up{job="vcc-' in rule["expr"], name
        assert used <= exported, (name, used - exported)
    operations = (ROOT / "docs" / "OPERATIONS.md").read_text()
    for name in alerts:
        assert name in operations, f"docs/OPERATIONS.md does not say what {name} means"
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert {j["job_name"] for j in config["scrape_configs"]} == {"vcc-central", "vcc-site"}
    assert config["rule_files"] == ["alerts.yml"]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian package prometheus)")
def test_promtool_accepts_the_config_and_the_rules_fire_as_their_tests_say(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    for args in (["check", "config", "prometheus.yml"], ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run(
            [PROMTOOL, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stdout + done.stderr
    # A rule that no longer fires when it should is caught by those tests.
    shutil.copy(PROMETHEUS / "alerts_test.yml", tmp_path / "alerts_test.yml")
    broken = (
        (PROMETHEUS / "alerts.yml")
        .read_text()
        .replace("vcc_site_outbox_pending > 100", "vcc_site_outbox_pending > 1e9")
    )
    (tmp_path / "alerts.yml").write_text(broken)
    done = subprocess.run(
        [PROMTOOL, "test", "rules", "alerts_test.yml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0 and "VccOutboxGrowing" in done.stdout + done.stderr
