"""How much of Redis the stored results may take, decided before anything is stored.

WHY a budget: a result (`prediction:{request_id}`) is written for every request, so at a steady rate the
results held are rate x lifetime. What reads a result decides its lifetime: the consumer's redelivery check
and `./run.sh prediction` / the console's Try-it (seconds after the answer), and the feedback join, which
credits feedback to the variant that served it (an A/B experiment's feedback, minutes after the answer;
later feedback is counted as organic). So PREDICTION_TTL_SECONDS defaults to 3 minutes, and
RESULT_BYTES x PREDICTION_BUDGET_RPS x PREDICTION_TTL_SECONDS must fit in PREDICTION_SHARE of
REDIS_MAXMEMORY_MB: `up` refuses a configuration where it does not, naming the settings, and `status` shows
the budget beside what Redis uses.

Eviction (`maxmemory-policy volatile-ttl`, both modes): should Redis fill up anyway (a burst above the rate),
it evicts the keys nearest their expiry first, i.e. results (minutes) long before a retired feature set
(days); the current feature sets, the live rating histories and the experiment's counters have no expiry and
are never evicted, so the stream never loses what it serves from.
"""

from __future__ import annotations

from mlops.settings import Settings

RESULT_BYTES = 1_100  # a top-10 result in Redis, key and overhead included (measured: 1,069 B; score: 744 B)
PREDICTION_SHARE = 0.5  # of REDIS_MAXMEMORY_MB; the rest is the feature sets', the live histories' and slack
EVICTION_POLICY = "volatile-ttl"
MIB = 1024 * 1024


def budget_bytes(settings: Settings) -> int:
    """What the results held at PREDICTION_BUDGET_RPS take: bytes per result x rate x lifetime."""
    return RESULT_BYTES * settings.prediction_budget_rps * settings.prediction_ttl_seconds


def problem(settings: Settings) -> str | None:
    """Why this configuration cannot hold its results within Redis's memory, or None when it can."""
    allowed = PREDICTION_SHARE * settings.redis_maxmemory_mb * MIB
    need = budget_bytes(settings)
    if need <= allowed:
        return None
    rate, ttl = settings.prediction_budget_rps, settings.prediction_ttl_seconds
    return (f"stored results need {need / MIB:,.0f} MiB ({RESULT_BYTES:,} B x PREDICTION_BUDGET_RPS {rate:,} "
            f"req/s x PREDICTION_TTL_SECONDS {ttl:,} s), "
            f"more than {PREDICTION_SHARE:.0%} of REDIS_MAXMEMORY_MB {settings.redis_maxmemory_mb:,}: lower the "
            "lifetime or the rate, or give Redis more memory")  # fmt: skip


def memory_line(settings: Settings, memory: dict, stats: dict) -> str:
    """`status`'s Redis line: used of maxmemory, the policy, keys evicted so far, and the results' budget."""
    used = int(memory.get("used_memory", 0)) / MIB
    limit = int(memory.get("maxmemory", 0)) / MIB
    policy = memory.get("maxmemory_policy", "?")
    cap = f"of {limit:,.0f} MiB" if limit else "(no maxmemory: unbounded)"
    return (f"{used:,.1f} MiB {cap}, {policy}, {int(stats.get('evicted_keys', 0)):,} keys evicted; results' "
            f"budget {budget_bytes(settings) / MIB:,.0f} MiB ({RESULT_BYTES:,} B x {settings.prediction_budget_rps:,} "
            f"req/s x {settings.prediction_ttl_seconds:,} s)")  # fmt: skip
