"""The shipped deployment files (deploy/): their configuration loads as the service would
load it, and their stop timeouts leave the workers time to drain."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from oraculo_trio.pipeline.rules_source import load_rule_file
from oraculo_trio.pipeline.workers import STOP_MARGIN
from oraculo_trio.settings import load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def load_yaml(path: Path) -> list:
    return list(yaml.safe_load_all(path.read_text()))


def test_the_kubernetes_replicas_claim_partitions_through_postgresql(tmp_path: Path) -> None:
    (config_map,) = load_yaml(DEPLOY / "k8s" / "configmap.yaml")
    (tmp_path / "oraculo.toml").write_text(config_map["data"]["oraculo.toml"])
    (tmp_path / "rules.toml").write_text(config_map["data"]["rules.toml"])
    pod_env = {
        "ORACULO_DATABASE_URL": "postgresql://oraculo:secret@postgres.db.svc:5432/oraculo",
        "ORACULO_CLUSTER_INSTANCE_ID": "oraculo-trio-7d9f8c6b5-x2x9z",
    }
    settings = load_settings(tmp_path / "oraculo.toml", environ=pod_env)
    assert settings.cluster.mode == "postgres"
    assert settings.http.host == "0.0.0.0"
    assert load_rule_file(tmp_path / "rules.toml")

    deployment, _budget = load_yaml(DEPLOY / "k8s" / "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    grace = settings.service.shutdown_grace + STOP_MARGIN
    assert pod["terminationGracePeriodSeconds"] > grace
    container = pod["containers"][0]
    env = {item["name"] for item in container["env"]}
    assert env == set(pod_env)
    assert container["args"][:3] == ["run", "--config", "/etc/oraculo-trio/oraculo.toml"]


def test_the_systemd_unit_lets_the_supervisor_drain_its_workers() -> None:
    unit = (DEPLOY / "oraculo-trio.service").read_text()
    directives = dict(re.findall(r"^(\w+)=(.*)$", unit, re.MULTILINE))
    assert directives["KillMode"] == "mixed"
    assert "--workers" in directives["ExecStart"]
    default_grace = load_settings(None, environ={}).service.shutdown_grace
    assert float(directives["TimeoutStopSec"]) > default_grace + STOP_MARGIN
