"""Draw the topology (docs/topology.svg and .png) with Graphviz from the same names,
addresses and ports the topology code uses: `python -m cluster.diagram` (make cluster-diagram)."""

from __future__ import annotations

import subprocess

from cluster.topology import APP_PORT, POOLER_PORT, PROJECT_ROOT, Topology


def dot_source(topology: Topology) -> str:
    def address(host: str) -> str:
        return topology.address(host).replace(topology.subnet, "10.213.N")

    bridge = address("front").rsplit(".", 1)[0] + ".1"
    lines = [
        "digraph topology {",
        '  rankdir=LR; node [shape=box, style="rounded,filled", fillcolor="#f4f4f4", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
        f'  clients [label="clients\\n(this machine: {bridge} on the bridge)", shape=ellipse, fillcolor="#ffffff"];',
        f'  front [label="front {address("front")}\\nHAProxy :80\\nbuffering, deadlines, 429 per IP,\\n'
        'health checks on /readyz", fillcolor="#dbe9f6"];',
    ]
    for app in topology.apps:
        lines.append(f'  {app} [label="{app} {address(app)}\\ngunicorn app:api :{APP_PORT}", fillcolor="#e2f0d9"];')
    lines += [
        f'  pooler [label="pooler {address("pooler")}\\nPgBouncer :{POOLER_PORT} (transaction)\\n'
        'HAProxy 127.0.0.1:5433 -> primary", fillcolor="#fff2cc"];',
        f'  etcd [label="etcd {address("etcd")}\\n:2379", fillcolor="#f8cecc"];',
        f'  db1 [label="db1 {address("db1")}\\nPatroni :8008\\nPostgreSQL :5432", fillcolor="#e1d5e7"];',
        f'  db2 [label="db2 {address("db2")}\\nPatroni :8008\\nPostgreSQL :5432", fillcolor="#e1d5e7"];',
        '  clients -> front [label="HTTP"];',
    ]
    for app in topology.apps:
        lines.append(f'  front -> {app} [label="HTTP, X-Forwarded-For"];')
        lines.append(f"  {app} -> pooler;")
    lines += [
        '  pooler -> db1 [label="primary only\\n(GET /primary = 200)"];',
        "  pooler -> db2 [style=dashed];",
        '  db1 -> db2 [label="synchronous\\nstreaming replication", dir=both, style=dotted];',
        '  db1 -> etcd [label="leader lock"]; db2 -> etcd;',
        "}",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    source = dot_source(Topology(subnet="10.213.0"))
    for fmt in ("svg", "png"):
        target = PROJECT_ROOT / "docs" / f"topology.{fmt}"
        subprocess.run(["dot", f"-T{fmt}", "-o", str(target)], input=source, text=True, check=True, timeout=60)
        print(target.relative_to(PROJECT_ROOT))


if __name__ == "__main__":
    main()
