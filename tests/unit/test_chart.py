"""The Helm chart rendered offline: lint, least-privilege RBAC derived from the operator's
own list, one source of truth for the CRDs, the values schema, and NetworkPolicies that
select what the operator's planner actually creates.
"""

from __future__ import annotations

import importlib.util
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from quantcore.devcluster import versions
from quantcore.operator import api, planner, rbac
from tests.chart import CHART, ROOT, of_kind, render, run_helm, set_args, template_text

Triple = tuple[str, str, str]


def triples(rules: list[dict[str, Any]]) -> set[Triple]:
    return {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def operator_triples() -> set[Triple]:
    return triples(rbac.rules())


def operator_rules(objects: list[dict[str, Any]], fullname: str = "qc-quantcore") -> set[Triple]:
    """Everything bound to the operator's service account, across ClusterRoles and Roles."""
    bound = {
        (b["roleRef"]["kind"], b["roleRef"]["name"], b["metadata"].get("namespace"))
        for b in [*of_kind(objects, "ClusterRoleBinding"), *of_kind(objects, "RoleBinding")]
        if any(s["name"] == fullname for s in b["subjects"])
    }
    out: set[Triple] = set()
    for role in [*of_kind(objects, "ClusterRole"), *of_kind(objects, "Role")]:
        key = (role["kind"], role["metadata"]["name"], role["metadata"].get("namespace"))
        if key in bound:
            out |= triples(role["rules"])
    return out


def test_lint_is_clean_with_every_option() -> None:
    run_helm("lint", "--strict", str(CHART))
    run_helm(
        "lint",
        "--strict",
        str(CHART),
        "--set",
        "sampleMarketFeed.enabled=true,serviceMonitor.enabled=true",
        "--set-json",
        'operator.watchNamespaces=["a","b"]',
    )


def test_rbac_file_is_generated_from_the_operators_list() -> None:
    spec = importlib.util.spec_from_file_location("rbac_rules", ROOT / "charts" / "rbac_rules.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    on_disk = (CHART / "files" / "rbac.yaml").read_text()
    assert on_disk == module.render(), "charts/quantcore/files/rbac.yaml is stale: make chart-rbac"


def test_cluster_wide_operator_gets_exactly_what_it_uses() -> None:
    objects = render()
    assert operator_rules(objects) == operator_triples()


def test_namespaced_operator_gets_roles_only_where_it_watches() -> None:
    objects = render({"operator.watchNamespaces": ["alpha", "beta"]})
    roles = of_kind(objects, "Role")
    operator_roles = [r for r in roles if r["metadata"]["name"] == "qc-quantcore-operator"]
    assert sorted(r["metadata"]["namespace"] for r in operator_roles) == ["alpha", "beta"]
    # Cluster-wide, only the read-only discovery of CRDs and namespaces remains.
    cluster = triples([rule for c in of_kind(objects, "ClusterRole") for rule in c["rules"]])
    assert {verb for _, _, verb in cluster} <= {"get", "list", "watch"}
    assert {(g, r) for g, r, _ in cluster} == {
        ("apiextensions.k8s.io", "customresourcedefinitions"),
        ("", "namespaces"),
    }
    assert operator_rules(objects) == operator_triples()
    args = of_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=alpha" in args
    assert "--namespace=beta" in args


def test_no_wildcards_and_secrets_are_create_only() -> None:
    objects = render({"operator.watchNamespaces": ["alpha"]})
    secret_verbs: set[str] = set()
    for role in [*of_kind(objects, "ClusterRole"), *of_kind(objects, "Role")]:
        for group, resource, verb in triples(role["rules"]):
            assert "*" not in (group, resource, verb), role["metadata"]["name"]
            if resource == "secrets":
                secret_verbs.add(verb)
            assert verb not in {"escalate", "bind", "impersonate"}
    # The managed Redis's passwords Secret is created once; no Secret is ever read or changed.
    assert secret_verbs == {"create"}


def test_crds_come_from_the_repository_crds_folder() -> None:
    link = CHART / "crds"
    assert link.is_symlink(), "charts/quantcore/crds must link to the one crds/ folder"
    assert link.resolve() == (ROOT / "crds").resolve()
    rendered = render(include_crds=True)
    crd_names = {c["metadata"]["name"] for c in of_kind(rendered, "CustomResourceDefinition")}
    assert f"{api.PLURAL}.{api.GROUP}" in crd_names


def test_packaged_chart_carries_the_crds_byte_for_byte(tmp_path: Path) -> None:
    run_helm("package", str(CHART), "--destination", str(tmp_path))
    (archive,) = tmp_path.glob("quantcore-*.tgz")
    with tarfile.open(archive) as tar:
        packed = {
            Path(m.name).name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile() and "/crds/" in m.name
        }
        names = tar.getnames()
    source = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    assert source, "crds/ is empty"
    assert packed == source
    assert "quantcore/files/rbac.yaml" in names


def test_sample_marketfeed_is_a_valid_spec_with_the_release_images() -> None:
    objects = render(
        {"sampleMarketFeed.enabled": True, "image.tag": "1.2.3", "sparkImage.tag": "1.2.3"}
    )
    (feed,) = of_kind(objects, api.KIND)
    spec = api.MarketFeedSpec.model_validate(feed["spec"])
    assert spec.image == "ghcr.io/quantcore/quantcore:1.2.3"
    assert spec.spark.image == "ghcr.io/quantcore/quantcore-spark:1.2.3"
    assert not of_kind(render(), api.KIND), "the sample is off by default"


def test_image_digest_wins_over_tag() -> None:
    digest = "sha256:" + "a" * 64
    objects = render({"image.digest": digest})
    container = of_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == f"ghcr.io/quantcore/quantcore@{digest}"


def _operator_env(values: dict[str, Any] | None = None) -> dict[str, Any]:
    (deployment,) = of_kind(render(values), "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_operator_logs_json_with_its_namespace_and_pod_unless_told_text() -> None:
    env = _operator_env()
    assert env["QUANTCORE_LOG_FORMAT"] == "json"
    assert env["QUANTCORE_NAMESPACE"] == {
        "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}
    }
    assert env["QUANTCORE_POD"] == {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}
    assert _operator_env({"operator.logFormat": "text"})["QUANTCORE_LOG_FORMAT"] == "text"


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"securityContext.readOnlyRootFilesystem": False}, "readOnlyRootFilesystem"),
        ({"securityContext.allowPrivilegeEscalation": True}, "allowPrivilegeEscalation"),
        ({"podSecurityContext.runAsNonRoot": False}, "runAsNonRoot"),
        ({"image.tag": "latest"}, "tag"),
        ({"operator.replicas": 2}, "replicas"),
        ({"operator.logFormat": "xml"}, "logFormat"),
        ({"operator.watchNamespaces": ["Not_A_Namespace"]}, "watchNamespaces"),
        ({"networkPolicies.exchange.cidrs": ["example.com"]}, "cidrs"),
        ({"serving.serviceAccount.name": "Quantcore_Serving"}, "name"),
        ({"unknownKey": 1}, "unknownKey"),
    ],
)
def test_values_schema_rejects(values: dict[str, Any], complaint: str) -> None:
    result = run_helm(
        "template",
        "qc",
        str(CHART),
        "--kube-version",
        versions.KUBERNETES,
        *set_args(values),
        check=False,
    )
    assert result.returncode != 0, f"{values} was accepted"
    assert complaint in result.stderr, result.stderr


def test_service_monitor_is_optional_and_scrapes_every_feed() -> None:
    assert not of_kind(render(), "ServiceMonitor")
    monitors = of_kind(render({"serviceMonitor.enabled": True}), "ServiceMonitor")
    (monitor,) = [m for m in monitors if m["metadata"]["name"].endswith("-workloads")]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchExpressions"][0]
    assert selector == {"key": planner.FEED_LABEL, "operator": "Exists"}
    # The job label is the component, which the alert rules and dashboards select by.
    assert monitor["spec"]["jobLabel"] == planner.COMPONENT_LABEL


# ---- NetworkPolicies against what the planner creates ------------------------------------


def planned_pods() -> dict[str, list[dict[str, Any]]]:
    """component -> pod specs (with labels) of a sample MarketFeed's plan."""
    feed = planner.sample_feed(serving={"autoscaling": {"minReplicas": 2, "maxReplicas": 4}})
    out: dict[str, list[dict[str, Any]]] = {}
    for obj in planner.plan(feed, None, ["BTCUSDT", "ETHUSDT", "SOLUSDT"]).objects:
        if obj["kind"] in {"Deployment", "StatefulSet"}:
            template = obj["spec"]["template"]
            labels = template["metadata"]["labels"]
            out.setdefault(labels[planner.COMPONENT_LABEL], []).append(
                {"labels": labels, "spec": template["spec"]}
            )
        elif obj["kind"] == "SparkApplication":
            for role in ("driver", "executor"):
                labels = obj["spec"][role]["labels"]
                out.setdefault(labels[planner.COMPONENT_LABEL], []).append(
                    {"labels": labels, "spec": {"containers": []}}
                )
    return out


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        if expr["operator"] == "Exists" and expr["key"] not in labels:
            return False
        if expr["operator"] == "In" and labels.get(expr["key"]) not in expr["values"]:
            return False
    return True


def policies() -> dict[str, dict[str, Any]]:
    return {p["metadata"]["name"]: p for p in of_kind(render(), "NetworkPolicy")}


def test_values_follow_the_planners_labels() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())["workloads"]
    assert values["feedLabel"] == planner.FEED_LABEL
    assert values["componentLabel"] == planner.COMPONENT_LABEL
    assert set(values["components"].values()) == set(planned_pods()), (
        "every planned pod role needs its NetworkPolicy"
    )


def test_every_planned_pod_is_selected_by_its_policy_and_the_default_deny() -> None:
    nps = policies()
    role_policy = {
        "feed": "qc-quantcore-feed-shard",
        "stream": "qc-quantcore-stream",
        "redis": "qc-quantcore-redis",
        "serve": "qc-quantcore-serving",
    }
    for component, pods in planned_pods().items():
        for pod in pods:
            assert selects(nps["qc-quantcore-default-deny"]["spec"]["podSelector"], pod["labels"])
            chosen = [n for n, p in nps.items() if selects(p["spec"]["podSelector"], pod["labels"])]
            assert role_policy[component] in chosen, f"{component} pod not selected: {chosen}"
            others = set(role_policy.values()) - {role_policy[component]}
            assert not others & set(chosen), f"{component} pod picked up {others & set(chosen)}"


def test_named_ports_in_policies_exist_on_the_planned_containers() -> None:
    pods = planned_pods()
    ports_of = {
        component: {
            p["name"]
            for pod in group
            for c in pod["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for component, group in pods.items()
    }
    assert {"metrics"} <= ports_of["feed"]
    assert {"grpc", "metrics"} <= ports_of["serve"]
    assert {"redis"} <= ports_of["redis"]


def test_redis_is_reachable_only_from_stream_and_serving() -> None:
    redis = policies()["qc-quantcore-redis"]["spec"]
    assert redis["egress"] == []
    (rule,) = redis["ingress"]
    sources = [peer["podSelector"]["matchLabels"][planner.COMPONENT_LABEL] for peer in rule["from"]]
    assert sorted(sources) == ["serve", "stream"]
    assert rule["ports"] == [{"port": "redis", "protocol": "TCP"}]


def test_feed_shards_reach_public_exchange_addresses_and_kafka_only() -> None:
    feed = policies()["qc-quantcore-feed-shard"]["spec"]
    exchange, kafka = feed["egress"]
    block = exchange["to"][0]["ipBlock"]
    assert block["cidr"] == "0.0.0.0/0"
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} <= set(block["except"])
    assert {p["port"] for p in exchange["ports"]} == {443, 9443}
    assert {p["port"] for p in kafka["ports"]} == {9092, 9093}
    scrapes, operator = feed["ingress"]
    assert scrapes["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert operator["ports"] == [{"port": "metrics", "protocol": "TCP"}]


def test_the_operator_reaches_the_feed_shards_metrics_port_and_they_admit_it() -> None:
    """The handover asks each shard's /live (quantcore.operator.shardlive) on that port."""
    objects = render({"operator.watchNamespaces": ["alpha", "beta"]})
    nps = {p["metadata"]["name"]: p for p in of_kind(objects, "NetworkPolicy")}
    (deployment,) = of_kind(objects, "Deployment")
    operator_labels = deployment["spec"]["template"]["metadata"]["labels"]
    operator_ns = deployment["metadata"]["namespace"]
    shard = planned_pods()["feed"][0]
    # Egress: a rule to the shard pods of every watched namespace, on the metrics port.
    egress = nps["qc-quantcore-operator"]["spec"]["egress"]
    to_shards = [r for r in egress if r.get("ports") == [{"port": "metrics", "protocol": "TCP"}]]
    assert len(to_shards) == 1
    peers = to_shards[0]["to"]
    assert {
        p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in peers
    } == {
        "alpha",
        "beta",
    }
    assert all(selects(p["podSelector"], shard["labels"]) for p in peers)
    # Ingress: the shard policy in each namespace admits the operator's pods on that port.
    for ns in ("alpha", "beta"):
        policy = next(
            p
            for p in of_kind(objects, "NetworkPolicy")
            if p["metadata"]["name"] == "qc-quantcore-feed-shard"
            and p["metadata"]["namespace"] == ns
        )
        admitted = [
            rule
            for rule in policy["spec"]["ingress"]
            for peer in rule.get("from", [])
            if selects(peer["podSelector"], operator_labels)
            and peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
            == operator_ns
        ]
        assert [r["ports"] for r in admitted] == [[{"port": "metrics", "protocol": "TCP"}]]


def test_serving_accepts_grpc_from_listed_clients_only_when_listed() -> None:
    peers = [{"namespaceSelector": {"matchLabels": {"team": "trading"}}}]
    objects = render({"networkPolicies.servingClients.peers": peers})
    serving = next(
        p for p in of_kind(objects, "NetworkPolicy") if p["metadata"]["name"].endswith("-serving")
    )
    grpc = serving["spec"]["ingress"][0]
    assert grpc["from"] == peers
    assert grpc["ports"] == [{"port": "grpc", "protocol": "TCP"}]


def test_policies_follow_the_watched_namespaces() -> None:
    objects = render({"operator.watchNamespaces": ["alpha", "beta"]})
    namespaces = {
        p["metadata"]["namespace"]
        for p in of_kind(objects, "NetworkPolicy")
        if p["metadata"]["name"].endswith("-default-deny")
    }
    assert namespaces == {"alpha", "beta"}
    spark_accounts = {
        (s["metadata"]["namespace"], s["metadata"]["name"])
        for s in of_kind(objects, "ServiceAccount")
        if s["metadata"]["name"] == "spark"
    }
    assert spark_accounts == {("alpha", "spark"), ("beta", "spark")}


def test_policies_can_be_turned_off() -> None:
    assert not of_kind(render({"networkPolicies.enabled": False}), "NetworkPolicy")


def test_spark_service_account_is_the_one_marketfeeds_use_by_default() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert (
        values["spark"]["serviceAccount"]["name"]
        == api.Spark.model_fields["service_account"].default
    )
    assert "default-deny" in template_text()


def test_serving_service_account_only_when_asked_with_its_annotations_and_no_rights() -> None:
    def serving_accounts(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [s for s in of_kind(objects, "ServiceAccount") if s["metadata"]["name"] == name]

    name = "quantcore-serving"
    assert not serving_accounts(render())
    role = {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/qc-serving-lake"}
    objects = render(
        {
            "operator.watchNamespaces": ["alpha", "beta"],
            "serving.serviceAccount.create": True,
            "serving.serviceAccount.annotations": role,
        }
    )
    accounts = serving_accounts(objects)
    # One per namespace where MarketFeeds live, carrying the IRSA annotation; no API token
    # (IRSA's own token is projected by EKS's webhook regardless).
    assert {a["metadata"]["namespace"] for a in accounts} == {"alpha", "beta"}
    for account in accounts:
        assert account["metadata"]["annotations"] == role
        assert account["automountServiceAccountToken"] is False
    # Serving never calls the API server: nothing is bound to the account.
    bindings = [*of_kind(objects, "RoleBinding"), *of_kind(objects, "ClusterRoleBinding")]
    assert not [b for b in bindings if any(s["name"] == name for s in b["subjects"])]
    # A MarketFeed can name it.
    default = yaml.safe_load((CHART / "values.yaml").read_text())["serving"]["serviceAccount"]
    serving = api.Serving.model_validate({"insecure": True, "serviceAccount": default["name"]})
    assert serving.service_account == name


def test_serving_policy_admits_scrapes_on_the_port_serving_serves_metrics_on() -> None:
    serving = policies()["qc-quantcore-serving"]["spec"]
    metrics_rule = [
        r for r in serving["ingress"] if {"port": "metrics", "protocol": "TCP"} in r["ports"]
    ]
    assert metrics_rule, serving["ingress"]
    # The named port resolves, on the serving pod, to the port `quantcore serve` is told.
    (pod,) = planned_pods()["serve"][:1]
    (container,) = pod["spec"]["containers"]
    named = {p["name"]: p["containerPort"] for p in container["ports"]}
    args = container["args"]
    assert int(args[args.index("--metrics-port") + 1]) == named["metrics"]
    assert selects(serving["podSelector"], pod["labels"])


def test_operator_gets_its_own_kafka_user_from_a_secret_and_the_ca_alone() -> None:
    assert "QUANTCORE_KAFKA_USERNAME" not in _operator_env()  # none given: PLAINTEXT
    values = {"operator.kafka": {"credentialsSecretName": "op-kafka", "caSecretName": "kafka-ca"}}
    env = _operator_env(values)
    assert env["QUANTCORE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert env["QUANTCORE_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512"
    assert env["QUANTCORE_KAFKA_USERNAME"] == {
        "secretKeyRef": {"name": "op-kafka", "key": "username"}
    }
    assert env["QUANTCORE_KAFKA_PASSWORD"] == {
        "secretKeyRef": {"name": "op-kafka", "key": "password"}
    }
    assert env["QUANTCORE_KAFKA_CA_FILE"] == "/etc/quantcore/kafka-ca/ca.crt"
    (deployment,) = of_kind(render(values), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["kafka-ca"]["secret"] == {
        "secretName": "kafka-ca",
        "items": [{"key": "ca.crt", "path": "ca.crt"}],
    }
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["kafka-ca"] == {
        "name": "kafka-ca", "mountPath": "/etc/quantcore/kafka-ca", "readOnly": True
    }  # fmt: skip


PRIVATE = {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"}


def test_the_stream_job_reaches_its_object_store_at_public_addresses_only() -> None:
    stream = policies()["qc-quantcore-stream"]["spec"]
    (store,) = [r for r in stream["egress"] if r.get("ports") == [{"port": 443, "protocol": "TCP"}]]
    (peer,) = store["to"]
    assert peer["ipBlock"]["cidr"] == "0.0.0.0/0"
    assert set(peer["ipBlock"]["except"]) >= PRIVATE


def test_listed_api_server_peers_replace_any_destination() -> None:
    """Offline (`helm template`) nothing can be looked up, so only listed peers narrow the API
    server rule; at install the endpoints' addresses do (tests/cluster/test_network_policies)."""
    api = [{"ipBlock": {"cidr": "192.0.2.10/32"}}]
    objects = render({"networkPolicies.apiServer.peers": api})
    nps = {p["metadata"]["name"]: p for p in of_kind(objects, "NetworkPolicy")}
    for name in ("qc-quantcore-operator", "qc-quantcore-stream"):
        rules = [r for r in nps[name]["spec"]["egress"] if r.get("to") == api]
        assert [r["ports"] for r in rules] == [
            [{"port": 443, "protocol": "TCP"}, {"port": 6443, "protocol": "TCP"}]
        ]
        # No rule leaves 443 open to any destination.
        open_443 = [
            r
            for r in nps[name]["spec"]["egress"]
            if "to" not in r and any(p["port"] == 443 for p in r["ports"])
        ]
        assert open_443 == []


def test_exchange_and_object_store_peers_join_their_public_addresses() -> None:
    mirror = [{"podSelector": {"matchLabels": {"app": "mirror"}}}]
    s3 = [{"ipBlock": {"cidr": "10.1.2.3/32"}}]
    objects = render(
        {"networkPolicies.exchange.peers": mirror, "networkPolicies.objectStore.peers": s3}
    )
    nps = {p["metadata"]["name"]: p for p in of_kind(objects, "NetworkPolicy")}
    feed_exchange = nps["qc-quantcore-feed-shard"]["spec"]["egress"][0]
    assert feed_exchange["to"][1:] == mirror
    assert set(feed_exchange["to"][0]["ipBlock"]["except"]) >= PRIVATE
    stream = nps["qc-quantcore-stream"]["spec"]["egress"]
    assert any(r["to"][1:] == s3 for r in stream if r.get("to") and len(r["to"]) > 1)
