"""Who may call whom: every NetworkPolicy the chart renders is evaluated against every pod the
release runs (its Deployments, its Jobs and the training runs' Job pods) with Kubernetes' rules, and
the result must be exactly the intended matrix, for the default and the GPU values."""

from __future__ import annotations

import pytest

from tests.deploy.pods import Pod, pods
from tests.deploy.tools import CHART, NAMESPACE, by_kind, render

MONITORING = Pod("prometheus", {"app.kubernetes.io/name": "prometheus"}, namespace="monitoring")
OTHER_NS = Pod("stranger", {"app.kubernetes.io/name": "likeness", "app.kubernetes.io/instance": "likeness",
                            "app.kubernetes.io/component": "orchestrator"}, namespace="elsewhere")
CASES = {
    "default": (),
    "default+jobs": ("--set", "services.training.kubernetesJobs=true"),
    "gpu": ("-f", str(CHART / "values-gpu.yaml")),
}


def matches(selector: dict, labels: dict) -> bool:
    """A LabelSelector (matchLabels and matchExpressions); `{}` selects everything."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or ():
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def peer_admits(peer: dict, source: Pod) -> bool:
    namespace_labels = {"kubernetes.io/metadata.name": source.namespace}
    if "ipBlock" in peer:
        return False  # no pod IPs in this model; the chart uses none
    if "namespaceSelector" in peer:
        ns_ok = matches(peer["namespaceSelector"], namespace_labels)
    else:
        ns_ok = source.namespace == NAMESPACE  # a bare podSelector means the policy's namespace
    return ns_ok and matches(peer.get("podSelector", {}), source.labels)


def port_matches(rule_ports: list[dict] | None, port: tuple[str, int]) -> bool:
    if not rule_ports:
        return True
    return any(p.get("port") in port and p.get("protocol", "TCP") == "TCP" for p in rule_ports)


def allowed(policies: list[dict], source: Pod, target: Pod, port: tuple[str, int]) -> bool:
    """Kubernetes' ingress semantics: a pod no policy selects is open; a selected pod admits what
    any selecting policy's rules admit (the union), nothing else."""
    selecting = [p for p in policies if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])
                 and p["metadata"].get("namespace", NAMESPACE) == target.namespace
                 and matches(p["spec"]["podSelector"], target.labels)]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get("ingress") or ():
            peers = rule.get("from")
            if port_matches(rule.get("ports"), port) and (not peers or any(peer_admits(x, source) for x in peers)):
                return True
    return False


def component(pod: Pod) -> str:
    return pod.labels.get("app.kubernetes.io/component", pod.name)


def intended(source: Pod, target: Pod, port_name: str, jobs: bool) -> bool:
    """The design: callers (default: this namespace) -> orchestrator; orchestrator -> every model
    service; training and, with Jobs, its runs -> embedding and detection (checkpoint evaluation);
    every Likeness pod -> MinIO; only the monitoring namespace -> metrics ports; nothing else."""
    src, dst = component(source), component(target)
    in_release = (source.namespace == NAMESPACE
                  and source.labels.get("app.kubernetes.io/instance") == "likeness")
    if port_name == "metrics":
        return source.namespace == "monitoring"
    if dst == "minio":
        return in_release
    if dst == "orchestrator":
        return source.namespace == NAMESPACE
    if dst in ("detection", "embedding"):
        callers = {"orchestrator", "training"} | ({"training-run"} if jobs else set())
        return in_release and src in callers
    if dst in ("generation", "restoration", "training"):
        return in_release and src == "orchestrator"
    return False  # minio-buckets and the training runs serve nothing


@pytest.mark.parametrize("case", sorted(CASES))
def test_network_policies_admit_exactly_the_intended_callers(case):
    objects = render(*CASES[case])
    jobs = case != "default"
    policies = list(by_kind(objects, "NetworkPolicy").values())
    release = pods(objects, with_runs=jobs)
    names = {component(p) for p in release}
    assert ({"training-run"} <= names) == jobs
    if case != "gpu":
        assert {"minio", "minio-buckets"} <= names
    sources = [*release, MONITORING, OTHER_NS]
    wrong = []
    for target in release:
        targets = target.ports or (("any", 8080),)  # a pod without ports: probe an arbitrary one
        for port in targets:
            for source in sources:
                if source is target:
                    continue
                want = intended(source, target, port[0], jobs)
                if allowed(policies, source, target, port) != want:
                    wrong.append(f"{source.namespace}/{component(source)} -> {component(target)}:{port[0]} "
                                 f"{'should' if want else 'should not'} be admitted")
    assert not wrong, "\n".join(wrong)


def test_every_pod_of_the_release_is_covered_by_default_deny():
    objects = render("--set", "services.training.kubernetesJobs=true")
    deny = by_kind(objects, "NetworkPolicy")["likeness-default-deny"]
    for pod in pods(objects, with_runs=True):
        assert matches(deny["spec"]["podSelector"], pod.labels), pod.name
    # a training run's Job pod is isolated too: nothing may call it
    run = next(p for p in pods(objects, with_runs=True) if component(p) == "training-run")
    orchestrator = next(p for p in pods(objects, with_runs=True) if component(p) == "orchestrator")
    assert not allowed(list(by_kind(objects, "NetworkPolicy").values()), orchestrator, run, ("any", 8080))


def test_the_evaluator_follows_kubernetes_rules():
    """The matrix is only as good as `allowed`: pin its semantics on hand-made policies."""
    a = Pod("a", {"app": "a"})
    b = Pod("b", {"app": "b"}, ports=(("grpc", 5000),))
    c = Pod("c", {"app": "c"})
    assert allowed([], a, b, ("grpc", 5000)), "no policy selects b: open"
    only_a = {"metadata": {"name": "p"}, "spec": {"podSelector": {"matchLabels": {"app": "b"}},
              "policyTypes": ["Ingress"], "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "a"}}}],
                                                       "ports": [{"port": "grpc"}]}]}}
    assert allowed([only_a], a, b, ("grpc", 5000)) and not allowed([only_a], c, b, ("grpc", 5000))
    assert not allowed([only_a], a, b, ("metrics", 6000)), "other port"
    deny = {"metadata": {"name": "d"}, "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    assert allowed([deny, only_a], a, b, ("grpc", 5000)), "policies add up"
    assert not allowed([deny], a, b, ("grpc", 5000))
    far = Pod("a", {"app": "a"}, namespace="elsewhere")
    assert not allowed([only_a], far, b, ("grpc", 5000)), "a bare podSelector is this namespace only"
    expr = {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a", "c"]}]}
    assert matches(expr, a.labels) and not matches(expr, b.labels)
