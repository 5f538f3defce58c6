"""`python -m quantcore.devcluster build|up|down|crds|images|kafka-secrets`: the make targets'
entry point. `kafka-secrets --namespace NS --feed NAME` grants the test ground broker's ACLs
for a MarketFeed's topics and prints the Secrets its spec.kafka names (with `--operator-secret
NAME`, the chart operator's user instead), for `kubectl apply -f -`."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quantcore.devcluster", description=__doc__)
    parser.add_argument(
        "action",
        choices=["build", "up", "down", "crds", "images", "kafka-secrets"],
        help="build: binaries only; up: start and install CRDs; down: stop; crds: fetch CRDs; "
        "images: build the container images into archives (and load them into a running node); "
        "kafka-secrets: the test ground Kafka's users as Secrets for a namespace",
    )
    parser.add_argument("--namespace", help="kafka-secrets: where the Secrets go")
    parser.add_argument(
        "--feed", help="kafka-secrets: the MarketFeed (Secrets <feed>-kafka-feed/-stream/-ca)"
    )
    parser.add_argument(
        "--topic-prefix",
        default=None,
        help="kafka-secrets: the feed's topic prefix (default: the default topics, quantcore.*)",
    )
    parser.add_argument(
        "--operator-secret",
        default=None,
        help="kafka-secrets: print the operator's user as this Secret (the chart's"
        " operator.kafka.credentialsSecretName) and the CA as kafka-ca",
    )
    parser.add_argument("--dir", type=Path, default=Path(".dev/cluster"), help="state directory")
    parser.add_argument("--kubeconfig", type=Path, default=Path(".dev/kubeconfig"))
    parser.add_argument(
        "--no-node",
        action="store_true",
        help="up: the control plane alone on loopback (fast; pods stay Pending)",
    )
    parser.add_argument(
        "--no-deps",
        action="store_true",
        help="up: leave out the platform's dependencies (Kafka and the replay exchange in "
        "namespace quantcore-deps)",
    )
    parser.add_argument(
        "--replay-symbols",
        type=int,
        default=None,
        help="up: symbols the in-cluster replay serves (copies of the recordings; default 100)",
    )
    args = parser.parse_args(argv)

    from quantcore import ownership
    from quantcore.devcluster import (
        binaries,
        cluster,
        crds,
        images,
        kubeconfig,
        platformdeps,
        sparkoperator,
    )

    if args.action == "images":
        started = time.monotonic()
        built_images = images.build_all()
        print(f"images ready in {time.monotonic() - started:.1f}s")
        for image in built_images.values():
            print(f"  {image.ref}  {image.archive}  {image.archive_bytes / 2**20:.0f} MiB")
        found = cluster.running(args.dir)
        if found is not None and found.node:  # a running node gets the new builds at once
            pinned = cluster.load_images(args.dir, list(built_images.values()))
            print(f"loaded into the node of {args.dir}:")
            for pin in pinned.values():
                print(f"  {pin}")
        return 0

    if args.action == "build":
        started = time.monotonic()
        built = binaries.ensure_all()
        node = None if args.no_node else binaries.ensure_node()
        print(f"binaries ready in {time.monotonic() - started:.1f}s")
        paths = [built.etcd, built.kube_apiserver, built.kube_controller_manager, built.helm]
        paths.append(built.kube_scheduler)
        if node is not None:
            paths += [node.kubelet, node.kube_proxy, node.containerd, node.ctr, node.coredns]
        for path in paths:
            print(f"  {path}")
        return 0
    if args.action == "crds":
        for path in crds.third_party_crd_paths():
            print(path)
        return 0
    if args.action == "kafka-secrets":
        return _kafka_secrets(args)
    if args.action == "down":
        stopped = cluster.stop(args.dir)
        print("cluster stopped" if stopped else f"no cluster recorded in {args.dir}")
        return 0

    try:  # refused before anything is built or started
        ownership.claim(args.dir, "--dir (make: CLUSTER_DIR=)")
        kubeconfig.check_writable(args.kubeconfig.absolute())
    except ownership.NotOurs as refused:
        print(refused, file=sys.stderr)
        return 2
    crd_paths = crds.third_party_crd_paths()
    node_images: list[images.BuiltImage] = []
    if not args.no_node:
        node_images = list(images.build_all().values())
    started = time.monotonic()
    try:
        running = cluster.start(
            args.dir,
            with_node=not args.no_node,
            kubeconfig_path=args.kubeconfig.absolute(),
            images=node_images,
        )
    except ownership.NotOurs as refused:
        print(refused, file=sys.stderr)
        return 2
    ready = time.monotonic() - started

    from kubernetes.config import new_client_from_config

    with new_client_from_config(config_file=str(running.kubeconfig)) as api:
        names = crds.install(api, crd_paths)
    if running.node:
        operator = next(image for image in node_images if image.name == "spark-operator")
        sparkoperator.install(running.kubeconfig, binaries.ensure_helm(), operator.ref)
        print(f"spark-operator installed from its chart ({operator.ref})")
        if not args.no_deps:
            by_name = {image.name: image for image in node_images}
            deps_started = time.monotonic()
            try:
                deps = platformdeps.deploy(
                    running,
                    kafka_image=by_name["kafka"].ref,
                    runtime_image=by_name["runtime"].ref,
                    replay_symbols=args.replay_symbols or platformdeps.DEFAULT_REPLAY_SYMBOLS,
                    log=lambda line: print(f"  {line}", flush=True),
                )
            except platformdeps.PlatformDepsError as error:
                print(f"platform dependencies failed: {error}", file=sys.stderr)
                return 1
            print(
                f"platform dependencies ready in {time.monotonic() - deps_started:.1f}s "
                f"in namespace {deps.namespace}: kafka {deps.kafka_bootstrap} "
                f"(host {deps.kafka_host_bootstrap}), replay {deps.replay_rest_url} "
                f"{deps.replay_ws_url} ({deps.replay_symbols} symbols; host {deps.replay_host_url}), "
                f"S3 {deps.s3_endpoint} bucket {deps.s3_bucket} (host {deps.s3_host_endpoint})"
            )
    what = "cluster with a node" if running.node else "control plane"
    print(f"{what} ready in {ready:.1f}s at {running.server} (logs in {args.dir})")
    print(f"installed CRDs: {', '.join(names)}")
    print(f"export KUBECONFIG={running.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def _kafka_secrets(args: argparse.Namespace) -> int:
    import json

    from quantcore.devcluster import platformdeps
    from quantcore.events import Topics

    deps = platformdeps.recorded(args.dir)
    if deps is None or not deps.kafka_security or not args.namespace:
        print(
            "kafka-secrets needs a test ground with its Kafka (up) and --namespace", file=sys.stderr
        )
        return 2
    if args.operator_secret:
        secrets = [
            platformdeps.kafka_operator_secret(deps, args.namespace, args.operator_secret),
            platformdeps.kafka_ca_secret(deps, args.namespace, "kafka-ca"),
        ]
    elif args.feed:
        platformdeps.grant_kafka(deps, Topics.with_prefix(args.topic_prefix))
        secrets = platformdeps.kafka_client_secrets(deps, args.namespace, args.feed)
    else:
        print("kafka-secrets needs --feed or --operator-secret", file=sys.stderr)
        return 2
    print(json.dumps({"apiVersion": "v1", "kind": "List", "items": secrets}, indent=2))
    return 0
