"""The Helm chart (helm/herald): lint (strict, Kubernetes 1.30) and render
with the default values and a cluster-shaped values file, validate every
rendered manifest against the Kubernetes 1.30 schemas, and refuse bad
values by the chart's schema. Run by crates/gateway/tests/helm.rs with the
virtualenv scripts/test makes (helm-python-sdk, kubernetes-validate)."""

import json
import pathlib
import subprocess
import sys
import tempfile

import helm_python as helm
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "herald"
KUBE = "1.30.0"


def lint(values):
    report = helm.lint(str(CHART), values, strict=True, kube_version=f"v{KUBE}")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report.get("errors", [])
    assert not problems, f"lint: {problems}"


def render(values, monitoring=False):
    chart = helm.Chart.load(str(CHART))
    chart.validate_schema(values)
    manifests = chart.render(values=values, name="herald")
    docs = []
    for path, text in manifests.items():
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append((path, doc))
    return docs


def validate(docs):
    with tempfile.TemporaryDirectory() as tmp:
        files = []
        for i, (path, doc) in enumerate(docs):
            if doc["apiVersion"].startswith("monitoring.coreos.com"):
                continue  # CRDs of the Prometheus operator: no upstream schema
            f = pathlib.Path(tmp) / f"{i}.yaml"
            f.write_text(yaml.safe_dump(doc))
            files.append(str(f))
        out = subprocess.run(
            [str(pathlib.Path(sys.executable).parent / "kubernetes-validate"), "-k", KUBE, "--strict", *files],
            capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr
    return len(files)


def kinds(docs):
    return sorted(doc["kind"] for _, doc in docs)


def main():
    defaults = {}
    cluster = yaml.safe_load((CHART / "ci" / "cluster-values.yaml").read_text())

    lint(defaults)
    lint(cluster)

    docs = render(defaults)
    assert kinds(docs) == ["Deployment", "PodDisruptionBudget", "Secret", "Service"], kinds(docs)
    n = validate(docs)
    deployment = next(d for _, d in docs if d["kind"] == "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsUser"] == 10001
    # The grace covers preStop and Herald's own drain.
    assert pod["terminationGracePeriodSeconds"] >= 5 + 10
    env = {e["name"]: e for e in container["env"]}
    assert "HERALD_REDIS_URL" not in env  # embedded without a Redis URL

    assert "HERALD_WORKER" not in env  # the gateway runs its own workers

    docs = render(cluster)
    assert kinds(docs) == ["Deployment", "Deployment", "HorizontalPodAutoscaler", "Ingress", "PodDisruptionBudget", "Secret", "Service"], kinds(docs)
    n += validate(docs)
    deployments = {d["metadata"]["name"]: d for _, d in docs if d["kind"] == "Deployment"}
    gateway = next(d for name, d in deployments.items() if not name.endswith("-worker"))
    worker = next(d for name, d in deployments.items() if name.endswith("-worker"))
    env = {e["name"]: e for e in gateway["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"HERALD_REDIS_URL", "HERALD_DATABASE_URL", "HERALD_CONFIG"} <= set(env), env
    assert env["HERALD_WORKER"]["value"] == "false", env
    worker_pod = worker["spec"]["template"]["spec"]["containers"][0]
    assert worker_pod["args"][0] == "worker", worker_pod["args"]
    assert {"HERALD_REDIS_URL", "HERALD_DATABASE_URL"} <= {e["name"] for e in worker_pod["env"]}
    # The gateways' Service never selects worker pods.
    service = next(d for _, d in docs if d["kind"] == "Service")
    worker_labels = worker["spec"]["template"]["metadata"]["labels"]
    assert not all(worker_labels.get(k) == v for k, v in service["spec"]["selector"].items()), service["spec"]["selector"]
    hpa = next(d for _, d in docs if d["kind"] == "HorizontalPodAutoscaler")
    assert len(hpa["spec"]["metrics"]) == 2

    # Bad values fail at install.
    for bad in [{"replicaCount": "two"}, {"replicaCount": 0}, {"unknownKey": 1},
                {"redis": {"url": "http://not-redis"}}, {"service": {"port": 70000}},
                {"image": {"repository": "", "tag": "x"}}, {"worker": {"replicas": 0}}]:
        try:
            helm.Chart.load(str(CHART)).validate_schema(bad)
        except helm.HelmError:
            continue
        raise AssertionError(f"bad values accepted: {bad}")

    # The chart's alert rules are the deploy/ ones.
    assert (CHART / "files" / "alerts.yml").read_text() == (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    print(f"chart ok: {n} manifests validated against Kubernetes {KUBE}")


if __name__ == "__main__":
    main()
