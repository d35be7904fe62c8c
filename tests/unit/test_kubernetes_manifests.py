"""examples/kubernetes/ checked on paper: every document parses and has what its kind requires, and the files
agree with each other and with provision (no cluster runs in CI)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from provision.config import TOP_KEYS, env_name

FOLDER = Path(__file__).resolve().parents[2] / "examples" / "kubernetes"
API_VERSIONS = {
    "Secret": "v1",
    "ConfigMap": "v1",
    "Service": "v1",
    "StatefulSet": "apps/v1",
    "Deployment": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
    "Cluster": "postgresql.cnpg.io/v1",
}
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(FOLDER.glob("*.yaml")):
        found += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    return found


def pod_specs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec", {})
    if doc["kind"] in ("StatefulSet", "Deployment", "Job"):
        return [spec["template"]["spec"]]
    if doc["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]["spec"]]
    return []


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for pod in pod_specs(doc) for c in pod.get("initContainers", []) + pod["containers"]]


def test_the_folder_has_the_shared_server_both_ways_and_the_one_shots() -> None:
    kinds = {doc["kind"] for _, doc in documents()}
    assert {"StatefulSet", "Service", "Cluster", "Job", "CronJob", "Deployment"} <= kinds


@pytest.mark.parametrize(("file", "doc"), documents(), ids=lambda v: v if isinstance(v, str) else v["kind"])
def test_each_document_has_what_its_kind_requires(file: str, doc: dict[str, Any]) -> None:
    assert doc.get("apiVersion") == API_VERSIONS[doc["kind"]], file
    assert DNS_LABEL.fullmatch(doc["metadata"]["name"]), doc["metadata"]["name"]
    if doc["kind"] in ("StatefulSet", "Deployment"):
        selector = doc["spec"]["selector"]["matchLabels"]
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), "the selector matches the pod template"
    if doc["kind"] == "StatefulSet":
        assert doc["spec"]["serviceName"] and doc["spec"]["volumeClaimTemplates"]
    if doc["kind"] in ("Job", "CronJob"):
        assert pod_specs(doc)[0]["restartPolicy"] in ("Never", "OnFailure")
    if doc["kind"] == "CronJob":
        assert len(doc["spec"]["schedule"].split()) == 5
    for pod in pod_specs(doc):
        volumes = {v["name"] for v in pod.get("volumes", [])}
        claims = {c["metadata"]["name"] for c in doc["spec"].get("volumeClaimTemplates", [])}
        for container in pod.get("initContainers", []) + pod["containers"]:
            assert DNS_LABEL.fullmatch(container["name"]) and container["image"]
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes | claims, f"{container['name']}: no volume {mount['name']}"
    if doc["kind"] == "Cluster":
        roles = {r["name"]: r for r in doc["spec"]["managed"]["roles"]}
        assert roles["ci"]["login"] and roles["ci"]["createdb"] and not roles["ci"]["superuser"]
        assert doc["spec"]["bootstrap"]["initdb"]["database"] == "provision_registry"


def test_the_files_agree_with_each_other_and_with_provision() -> None:
    docs = documents()
    secrets = {
        d["metadata"]["name"]: {**d.get("stringData", {}), **d.get("data", {})}
        for _, d in docs
        if d["kind"] == "Secret"
    }
    config_maps = {d["metadata"]["name"]: d["data"] for _, d in docs if d["kind"] == "ConfigMap"}
    services = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "Service"}
    workloads = [d for _, d in docs if d["kind"] in ("StatefulSet", "Deployment")]
    for service in services.values():
        assert any(
            service["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
            for w in workloads
        )
    for _, doc in docs:
        for pod in pod_specs(doc):
            for volume in pod.get("volumes", []):
                if "configMap" in volume:
                    assert volume["configMap"]["name"] in config_maps
        for container in containers(doc):
            env = {e["name"]: e for e in container.get("env", [])}
            for item in env.values():
                ref = item.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secrets[ref["name"]], f"{ref} is not in a Secret of these files"
                assert "PASSWORD" not in item["name"] or "valueFrom" in item, "passwords only from Secrets"
                if item["name"].startswith("PROVISION_") and item["name"] != "PROVISION_CONFIG":
                    assert item["name"] in {env_name(k) for k in TOP_KEYS}, item["name"]
            if "PROVISION_HOST" in env:
                assert env["PROVISION_HOST"]["value"] in services, "clients point at the shared server's Service"
            command = container.get("command", [])
            words = shlex.split(command[-1]) if command[:2] == ["sh", "-c"] else command
            if words and words[0] == "provision":
                assert words[1] in ("fresh", "lease"), words
                assert "--password" not in words
    provision_yaml = yaml.safe_load(config_maps["app-provision"]["provision.yaml"])
    assert provision_yaml["target"] == "server" and set(provision_yaml) <= set(TOP_KEYS)
    for database in provision_yaml["databases"].values():
        assert database["sql"] in config_maps["app-provision"], "the SQL is mounted beside the config"
