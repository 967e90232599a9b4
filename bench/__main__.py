"""``uv run python -m bench [--quick | --smoke] [--duration S] ...``

Runs every system under the same load, prints a markdown table and writes
the JSON (and the table) to ``bench/results/``. Exit status 1 when a system
failed its pre-timing checks.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from pathlib import Path

from bench import agent, events, latency, mcp, report, runner, tools
from bench.systems import ALL, DEFAULT_SYSTEMS, WORKLOADS

HERE = Path(__file__).resolve().parent
PRESETS = {
    # duration s per load, warm-up s, probed streams
    "full": (10, 2, 300),
    "quick": (5, 1, 150),  # about two minutes for the four systems
    "smoke": (1, 0, 10),  # seconds: keeps the bench from rotting, measures nothing
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    preset = parser.add_mutually_exclusive_group()
    preset.add_argument("--quick", action="store_const", dest="mode", const="quick", help="about two minutes in all")
    preset.add_argument("--smoke", action="store_const", dest="mode", const="smoke", help="1 s loads, no warm-up")
    parser.add_argument("--duration", type=int, help="seconds per timed load (overrides the preset)")
    parser.add_argument("--warmup", type=int, help="seconds of warm-up load before timing")
    parser.add_argument("--connections", type=int, default=32, help="connections of the throughput load (default 32)")
    parser.add_argument("--ttfb-samples", type=int, help="streams probed one by one for time to first event")
    parser.add_argument("--no-latency", action="store_true",
                        help="skip the user-felt latency section (paced streams, direct vs each policy folder)")
    parser.add_argument("--no-events", action="store_true",
                        help="skip CPU per streamed event (500-event streams, each event its own write, vs the relay)")
    parser.add_argument("--no-mcp", action="store_true",
                        help="skip the MCP hop section (CPU per tools/call, 100-tool listings, 1 MB result under PII)")
    parser.add_argument("--systems", help=f"comma list of {', '.join(ALL)} (default: all but the baseline)")
    parser.add_argument("--baseline", metavar="REF",
                        help="also measure capsem-proxyd at this git commit/tag/branch, beside the work tree")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma list of json, sse")
    parser.add_argument("--profile", action="store_true", help="py-spy capsem-proxyd under the N-connection loads")
    parser.add_argument("--no-scaling", action="store_true",
                        help="skip the stream-size (10 kB vs 1 MB) and --workers 2 measurements of capsem-proxyd")
    parser.add_argument("--no-agent", action="store_true",
                        help="skip the agent-session workload (bench/agent.py: 50-turn conversations, PII first-seen)")
    parser.add_argument("--agent-policies", metavar="LIST",
                        help=f"comma list of the agent section's policy rows ({', '.join(agent.POLICIES)}; default: "
                             "the preset's): e.g. 'debug,default' for the default configuration's added latency per turn")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to cores 0 (proxy) and 1 (load, upstream)")
    parser.add_argument("--no-install", action="store_true", help="fail instead of apt-get installing nginx/wrk")
    parser.add_argument("--output", type=Path, help="results JSON path (default bench/results/bench-<mode>-<time>.json)")
    parser.add_argument("--work", type=Path, default=HERE / ".work", help="scratch folder (default bench/.work)")
    parser.set_defaults(mode="full")
    return parser.parse_args(argv)


def plan_from(args: argparse.Namespace) -> runner.Plan:
    duration, warmup, samples = PRESETS[args.mode]
    if args.systems:
        systems = [name.strip() for name in args.systems.split(",") if name.strip()]
    else:
        systems = list(DEFAULT_SYSTEMS)
        if args.baseline:
            systems.insert(systems.index("capsem-proxyd"), "capsem-proxyd-baseline")
    workloads = [name.strip() for name in args.workloads.split(",") if name.strip()]
    agent_policies = tuple(name.strip() for name in (args.agent_policies or "").split(",") if name.strip())
    unknown = [name for name in systems if name not in ALL] + [name for name in workloads if name not in WORKLOADS]
    unknown += [name for name in agent_policies if name not in agent.POLICIES]
    if unknown:
        raise SystemExit(f"unknown system or workload: {', '.join(unknown)}")
    return runner.Plan(
        duration=max(1, args.duration if args.duration is not None else duration),
        warmup=max(0, args.warmup if args.warmup is not None else warmup),
        ttfb_samples=max(0, args.ttfb_samples if args.ttfb_samples is not None else samples),
        connections=args.connections,
        systems=systems,
        workloads=workloads,
        profile=args.profile,
        scaling=not args.no_scaling,
        pin=not args.no_pin,
        mode=args.mode,
        baseline=args.baseline,
        latency=not args.no_latency,
        agent=not args.no_agent,
        agent_policies=agent_policies or None,
        events=not args.no_events,
        mcp=not args.no_mcp,
    )


def main(argv: list[str] | None = None) -> int:
    # SIGTERM unwinds like Ctrl-C, so the runner's ``finally`` stops every child.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    args = parse_args(argv)
    plan = plan_from(args)
    log = lambda line: print(line, flush=True)  # noqa: E731
    if args.no_install and tools.missing():
        log(f"missing: {', '.join(tools.missing())} (and --no-install given)")
        return 2
    found = tools.ensure_installed(log)
    results = runner.run(plan, found, args.work.resolve(), log)
    table_rows = report.rows(results)
    checked = (report.targets(table_rows) + report.scaling_targets(results.get("scaling"))
               + events.targets(results.get("events")) + latency.targets(results.get("latency"))
               + agent.targets(results.get("agent")))
    results["rows"], results["targets"] = table_rows, checked
    table = report.markdown(results, table_rows)
    for extra in (report.export_cost_markdown(results, table_rows), report.scaling_markdown(results.get("scaling")),
                  events.markdown(results.get("events")),
                  latency.markdown(results.get("latency")), agent.markdown(results.get("agent")),
                  mcp.markdown(results.get("mcp"))):
        if extra:
            table += "\n\n" + extra
    goals = report.targets_markdown(checked)
    output = args.output or HERE / "results" / f"bench-{plan.mode}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    output.with_suffix(".md").write_text(table + "\n\n" + goals + "\n")
    log("\n" + table + "\n\n" + goals + "\n")
    for system in results["systems"].values():
        for workload in WORKLOADS:
            summary = system.get(workload, {}).get("profile")
            if summary and "self" in summary:
                log(f"py-spy, {system['label']} / {workload}, {summary['samples']} samples, most self time:")
                for item in summary["self"][:10]:
                    log(f"  {item['percent']:5.1f}%  {item['function']}")
                log("  by package: " + ", ".join(
                    f"{item['function']} {item['percent']:.0f}%" for item in summary["self_by_package"][:10]))
    log(f"results: {output}")
    return 1 if any(row["skipped"] or not row["checks_ok"] for row in table_rows) else 0


if __name__ == "__main__":
    sys.exit(main())
