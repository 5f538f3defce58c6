"""`python -m quantcore.devcluster build|up|down|crds`: the make targets' entry point."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m quantcore.devcluster", description=__doc__)
    parser.add_argument(
        "action",
        choices=["build", "up", "down", "crds"],
        help="build: binaries only; up: start and install CRDs; down: stop; crds: fetch CRDs",
    )
    parser.add_argument("--dir", type=Path, default=Path(".dev/cluster"), help="state directory")
    parser.add_argument("--kubeconfig", type=Path, default=Path(".dev/kubeconfig"))
    args = parser.parse_args(argv)

    from quantcore.devcluster import binaries, controlplane, crds

    if args.action == "build":
        started = time.monotonic()
        built = binaries.ensure_all()
        print(f"binaries ready in {time.monotonic() - started:.1f}s")
        for path in (built.etcd, built.kube_apiserver, built.kube_controller_manager, built.helm):
            print(f"  {path}")
        return 0
    if args.action == "crds":
        for path in crds.third_party_crd_paths():
            print(path)
        return 0
    if args.action == "down":
        stopped = controlplane.stop(args.dir)
        print("control plane stopped" if stopped else f"no control plane recorded in {args.dir}")
        return 0

    built = binaries.ensure_all()
    crd_paths = crds.third_party_crd_paths()
    started = time.monotonic()
    plane = controlplane.start(args.dir, built, kubeconfig_path=args.kubeconfig.absolute())
    ready = time.monotonic() - started

    from kubernetes.config import new_client_from_config

    with new_client_from_config(config_file=str(plane.kubeconfig)) as api:
        names = crds.install(api, crd_paths)
    print(f"control plane ready in {ready:.1f}s at {plane.server} (logs in {args.dir})")
    print(f"installed CRDs: {', '.join(names)}")
    print(f"export KUBECONFIG={plane.kubeconfig}")
    print(f"helm: {built.helm}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
