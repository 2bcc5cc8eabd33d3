"""Benchmark: decisions/s and per-decision latency of the pure routing core (acd.routing).

A synthetic desk with 30 skills (3 languages, general, 26 product areas), one first-level queue
per language with an overflow queue for English, and a second-level queue per product area
(with an escalation step). Agents get a language, general support and 1-4 product skills at
random levels on three sites that are all open at the measured instant. 1,000 callers wait,
spread over the queues in the live view; each agent is idle, busy, paused or logged out.
Calls: 40 % no skills (entry queue), the rest one product skill at level 1-3, half of them
with tickets and a customer record. The table and view are built once (as the daemon would);
the bench times ``decide_route`` alone, then ``decide_route`` + ``explain_agents``, and shows
what building the whole view once cost (random states plus every queue's expected wait).

    .venv/bin/python bench/route.py [--agents 50 500 2000] [--decisions 20000] [--seed 1]

It must not be imported by the package.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import statistics
import time

from acd.config import Agent, Config, Queue, SecretRef, Site
from acd.config.model import (
    AmiLink,
    Daemon,
    EscalationStep,
    Hotline,
    Overflow,
    Skill,
    Sla,
    SlaPackage,
    SlaPriority,
)
from acd.routing import (
    AgentAvailability,
    CallFacts,
    CustomerFacts,
    QueueLoad,
    RoutingTable,
    RoutingView,
    TicketFacts,
    decide_route,
    explain_agents,
)

LANGUAGES = ("en", "fr", "de")
PRODUCTS = tuple(f"product-{i:02d}" for i in range(26))
NOW = dt.datetime(2026, 11, 23, 14, 0, tzinfo=dt.UTC)  # Monday: all three sites open
WAITING = 1000
_SECRET = SecretRef(env="FIRSTLINE_BENCH_SECRET")


def build_config(n_agents: int, rng: random.Random) -> Config:
    skills = [Skill(id="general", name="general")]
    skills += [Skill(id=f"lang-{lang}", name=lang) for lang in LANGUAGES]
    skills += [Skill(id=p, name=p) for p in PRODUCTS]
    queues = [
        Queue(
            id=f"first-{lang}",
            name=f"first {lang}",
            skills={"general": 3, f"lang-{lang}": 3},
            escalation=[EscalationStep(after=45, min_level=2)],
            overflow=Overflow(queue="first-overflow", expected_wait_over=120)
            if lang == "en"
            else None,
        )
        for lang in LANGUAGES
    ]
    queues.append(Queue(id="first-overflow", name="overflow", skills={"general": 1, "lang-en": 1}))
    queues += [
        Queue(
            id=f"second-{p}",
            name=p,
            level="second",
            skills={p: 4},
            escalation=[EscalationStep(after=60, min_level=3)],
        )
        for p in PRODUCTS
    ]
    sites = [
        Site(id="berlin", timezone="Europe/Berlin", hours={"mon-fri": ["08:00-18:00"]}),
        Site(id="montreal", timezone="America/Toronto", hours={"mon-fri": ["08:00-20:00"]}),
        Site(id="dublin", timezone="Europe/Dublin", hours={"mon-sun": ["00:00-24:00"]}),
    ]
    agents = []
    for i in range(n_agents):
        agent_skills = {"general": rng.randint(1, 5), f"lang-{rng.choice(LANGUAGES)}": 5}
        for product in rng.sample(PRODUCTS, rng.randint(1, 4)):
            agent_skills[product] = rng.randint(1, 5)
        agents.append(
            Agent(
                id=f"agent-{i}",
                name=f"Agent {i}",
                extension=f"{1000 + i}",
                secret=_SECRET,
                skills=agent_skills,
                site=rng.choice(sites).id,
            )
        )
    return Config(
        hotline=Hotline(numbers=["100"], languages=list(LANGUAGES), default_queue="first-en"),
        daemon=Daemon(ami=AmiLink(secret=_SECRET)),
        skills=skills,
        queues=queues,
        agents=agents,
        sites=sites,
        sla=Sla(
            priorities={
                name: SlaPriority(rank=rank, respond_within=600, resolve_within=86400)
                for name, rank in (("urgent", 40), ("high", 30), ("normal", 20), ("low", 10))
            },
            packages={
                "basic": SlaPackage(),
                "premium": SlaPackage(priority_boost=10),
                "enterprise": SlaPackage(priority_boost=10, coverage="24x7"),
            },
        ),
    )


def build_view(config: Config, table: RoutingTable, rng: random.Random) -> RoutingView:
    states = [
        AgentAvailability(logged_in=True, available=True),
        AgentAvailability(logged_in=True, available=False),
        AgentAvailability(logged_in=True, available=False, paused=True),
        AgentAvailability(logged_in=False, available=False),
    ]
    agents = {a.id: rng.choices(states, weights=(2, 5, 1, 2))[0] for a in config.agents}
    # 1,000 waiting callers, most of them in the first-level queues.
    weights = [30 if q.level == "first" else 1 for q in config.queues]
    waiting = dict.fromkeys((q.id for q in config.queues), 0)
    for queue in rng.choices(config.queues, weights=weights, k=WAITING):
        waiting[queue.id] += 1
    loads = {}
    for queue in config.queues:
        members = [agents[agent_id] for agent_id, _ in table.members(queue.id)]
        loads[queue.id] = QueueLoad(
            waiting=waiting[queue.id],
            agents_available=sum(m.available for m in members),
            agents_busy_remaining=tuple(
                rng.uniform(0, 300) for m in members if m.logged_in and not m.available
            ),
            mean_handle_time=300.0,
            samples=100,
        )
    return RoutingView(agents=agents, queues=loads)


def build_calls(config: Config, rng: random.Random, count: int) -> list[CallFacts]:
    agent_ids = [a.id for a in config.agents]
    calls = []
    for i in range(count):
        skills = {} if rng.random() < 0.4 else {rng.choice(PRODUCTS): rng.randint(1, 3)}
        customer = None
        tickets: tuple[TicketFacts, ...] = ()
        if rng.random() < 0.5:
            customer = CustomerFacts(
                rng.choice(["basic", "premium", "enterprise"]),
                rng.choice(agent_ids) if rng.random() < 0.3 else None,
            )
            tickets = tuple(
                TicketFacts(
                    f"T{i}-{k}",
                    rng.choice(["urgent", "high", "normal", "low"]),
                    rng.choice(agent_ids) if rng.random() < 0.5 else None,
                )
                for k in range(rng.randint(0, 3))
            )
        calls.append(
            CallFacts(
                uniqueid=f"1700000000.{i}",
                caller_number=f"+4930{i:07d}",
                dialed="100",
                language=rng.choice(LANGUAGES),
                required_skills=skills,
                customer=customer,
                open_tickets=tickets,
            )
        )
    return calls


def measure(n_agents: int, decisions: int, seed: int, *, explain: bool) -> dict[str, float]:
    rng = random.Random(seed)
    config = build_config(n_agents, rng)
    table = RoutingTable(config)
    started = time.perf_counter_ns()
    view = build_view(config, table, rng)
    view_us = (time.perf_counter_ns() - started) / 1000
    calls = build_calls(config, rng, 1000)
    clock = time.perf_counter_ns
    samples = []
    for i in range(decisions):
        facts = calls[i % len(calls)]
        start = clock()
        decision = decide_route(config, facts, NOW, view, table=table)
        if explain:
            explain_agents(decision, view)
        samples.append(clock() - start)
    samples.sort()
    total_s = sum(samples) / 1e9
    return {
        "per_s": decisions / total_s,
        "p50_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[int(len(samples) * 0.99)] / 1000,
        "mean_us": statistics.fmean(samples) / 1000,
        "view_us": view_us,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, nargs="+", default=[50, 500, 2000])
    parser.add_argument("--decisions", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"{WAITING} waiting callers, {1 + len(LANGUAGES) + len(PRODUCTS)} skills")
    print(
        f"{'agents':>7} {'what':<18} {'decisions/s':>12} {'p50 µs':>8} {'p99 µs':>8}"
        f" {'view build µs':>14}"
    )
    for n_agents in args.agents:
        for explain in (False, True):
            result = measure(n_agents, args.decisions, args.seed, explain=explain)
            what = "decide+explain" if explain else "decide"
            print(
                f"{n_agents:>7} {what:<18} {result['per_s']:>12,.0f} "
                f"{result['p50_us']:>8.1f} {result['p99_us']:>8.1f} {result['view_us']:>14,.0f}"
            )


if __name__ == "__main__":
    main()
