"""Spark on Kubernetes for real: ``spark-submit --master k8s://https://<api-server> --deploy-mode
cluster`` from this machine runs a driver pod of the Spark image in clover-system (service
account and Role from ``k8s/visibility/spark-rbac.yaml``, applied with ``kubectl apply -f``), which makes executor
pods that do the work; everything under the namespace's restricted Pod Security. Needs the image
(``make images``)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from clover.config import Config
from stack.cluster import containers
from stack.cluster.layout import ClusterPaths
from stack.images import build
from tests.cluster.conftest import Kubectl, Timings

ROOT = Path(__file__).resolve().parents[2]
NAMESPACE = "clover-system"
DRIVER = "clover-spark-check-driver"


def test_a_spark_application_runs_on_executor_pods(cluster_paths: ClusterPaths, kubectl: Kubectl, timings: Timings,
                                                   tmp_path: Path) -> None:  # fmt: skip
    import pyspark

    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    archive = build.archives(Config.from_env(), names=["clover-spark"])[0]
    if not archive.exists():
        pytest.fail(f"no image archive {archive.name}: build it first (make images)")
    started = time.monotonic()
    containers.import_images(cluster_paths, [archive])
    timings["import the Spark image"] = time.monotonic() - started
    kubectl("apply", "-k", str(ROOT / "k8s" / "clover-system"))
    kubectl("apply", "-f", str(ROOT / "k8s" / "visibility" / "spark-rbac.yaml"))  # the Role only, not the jobs
    templates = ROOT / "k8s" / "visibility"
    argv = [str(submit), "--master", "k8s://https://10.251.0.1:6443", "--deploy-mode", "cluster",
            "--name", "clover-spark-check",
            "--conf", f"spark.kubernetes.namespace={NAMESPACE}",
            "--conf", "spark.kubernetes.container.image=docker.io/opnfv/clover-spark:latest",
            "--conf", "spark.kubernetes.container.image.pullPolicy=IfNotPresent",
            "--conf", "spark.kubernetes.authenticate.driver.serviceAccountName=clover-spark",
            "--conf", f"spark.kubernetes.driver.podTemplateFile={templates / 'driver-template.yaml'}",
            "--conf", f"spark.kubernetes.executor.podTemplateFile={templates / 'executor-template.yaml'}",
            "--conf", "spark.kubernetes.driver.podTemplateContainerName=spark",
            "--conf", "spark.kubernetes.executor.podTemplateContainerName=spark",
            "--conf", f"spark.kubernetes.driver.pod.name={DRIVER}",
            "--conf", "spark.executor.instances=2",
            "--conf", "spark.kubernetes.driver.request.cores=0.2",
            "--conf", "spark.kubernetes.executor.request.cores=0.2",
            "--conf", "spark.driver.memory=512m", "--conf", "spark.executor.memory=512m",
            "--conf", "spark.ui.enabled=false",
            "local:///opt/clover/stack/images/sparkcheck.py", "4"]  # fmt: skip
    # Submitted as the service account clover-spark (its Role is all a submission needs), with a
    # token: Spark's Kubernetes client reads ECDSA client keys (the local cluster's) only with
    # BouncyCastle, which Spark does not ship.
    token = kubectl("-n", NAMESPACE, "create", "token", "clover-spark", "--duration=1h").strip()
    submitter = tmp_path / "kubeconfig"
    submitter.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "spark",
        "clusters": [{"name": "local", "cluster": {"server": "https://10.251.0.1:6443",
                                                   "certificate-authority": str(cluster_paths.pki / "ca.crt")}}],
        "users": [{"name": "clover-spark", "user": {"token": token}}],
        "contexts": [{"name": "spark", "context": {"cluster": "local", "user": "clover-spark",
                                                   "namespace": NAMESPACE}}],
    }))  # fmt: skip
    env = {**os.environ, "KUBECONFIG": str(submitter)}
    started = time.monotonic()
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=900, env=env)
        timings["spark-submit --deploy-mode cluster (to completion)"] = time.monotonic() - started
        log = kubectl("-n", NAMESPACE, "logs", DRIVER, check=False)
        result = [line.split() for line in log.splitlines() if line.startswith("RESULT ")]
        assert done.returncode == 0, done.stderr[-3000:] + log[-3000:]
        assert len(result) == 1 and result[0][1] == str(sum(range(100_000))), log[-3000:]
        executors = result[0][2].split(",")
        assert executors and all("-exec-" in host for host in executors), executors  # executor pods did the work
        phase = kubectl.json("-n", NAMESPACE, "get", "pod", DRIVER)["status"]["phase"]
        assert phase == "Succeeded"
    finally:
        kubectl("-n", NAMESPACE, "delete", "pod", DRIVER, "--ignore-not-found", "--wait=true", timeout=180)
        kubectl(
            "delete", "-f", str(ROOT / "k8s" / "visibility" / "spark-rbac.yaml"), "--ignore-not-found", "--wait=true"
        )
        deadline = time.monotonic() + 120  # the driver's Service and config map go with it (owner references)
        while time.monotonic() < deadline:
            left = kubectl("-n", NAMESPACE, "get", "pods,services,configmaps", "-o", "name").split()
            if left == ["configmap/kube-root-ca.crt"]:
                break
            time.sleep(1)
        assert left == ["configmap/kube-root-ca.crt"], left
