#!/usr/bin/env python3
"""Writes the gateway config for the benchmarks (Kong declarative YAML, JSON-compatible).

    gen_config.py --mock-port PORT [--routes N] [--observe LOG_PATH] > tollgate.yaml

The measured route is `/v1/chat/completions` (strip_path false) with ai-proxy pointed at
mock-llm. With --routes N > 1, N-1 other routes come first in Kong's priority order, so the
measured one is matched last: regex routes (a regex outranks any prefix path) and prefix
routes with longer paths (a longer prefix outranks a shorter one). None of them matches
`/v1/chat/completions`, and about a third share its first 20 characters so the router cannot
reject them on the first byte.
"""

import argparse
import json
import sys


def config(mock_port: int, routes: int, observe: str | None = None) -> dict:
    upstream = f"http://127.0.0.1:{mock_port}"
    measured = {
        "name": "chat",
        "paths": ["/v1/chat/completions"],
        "strip_path": False,
        "plugins": [
            {
                "name": "ai-proxy",
                "config": {
                    "route_type": "llm/v1/chat",
                    "auth": {
                        "header_name": "Authorization",
                        "header_value": "Bearer sk-bench-provider-key",
                    },
                    "model": {"provider": "openai", "options": {"upstream_url": upstream}},
                    "logging": {"log_statistics": True},
                },
            }
        ],
    }
    others = []
    for i in range(routes - 1):
        kind = i % 3
        if kind == 0:
            # Same 20-character prefix, longer: outranks the measured prefix route.
            path = f"/v1/chat/completions/variant-{i:04d}"
        elif kind == 1:
            # Regex with a capture, sharing the `/v1/` start.
            path = f"~/v1/(?<model>m{i:04d}-[a-z0-9.-]+)/chat/completions$"
        else:
            # Regex for another tenant's tree.
            path = f"~/tenants/t{i:04d}/(?<rest>.*)$"
        others.append({"name": f"other-{i:04d}", "paths": [path], "strip_path": False})
    # --observe: the observability plugins on, globally (metrics with every switch, file-log).
    plugins = (
        [
            {
                "name": "prometheus",
                "config": {
                    "status_code_metrics": True,
                    "latency_metrics": True,
                    "bandwidth_metrics": True,
                    "ai_metrics": True,
                },
            },
            {"name": "file-log", "config": {"path": observe}},
        ]
        if observe
        else []
    )
    return {
        "_format_version": "3.0",
        "plugins": plugins,
        "services": [
            {"name": "llm", "url": upstream, "routes": [measured]},
            *(
                [{"name": "others", "url": f"{upstream}/other", "routes": others}]
                if others
                else []
            ),
        ],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mock-port", type=int, required=True)
    parser.add_argument("--routes", type=int, default=1)
    parser.add_argument("--observe", metavar="LOG_PATH", help="add prometheus and file-log")
    args = parser.parse_args()
    if args.routes < 1:
        parser.error("--routes must be at least 1")
    # JSON is valid YAML; the gateway reads either.
    json.dump(config(args.mock_port, args.routes, args.observe), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
