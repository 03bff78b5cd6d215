"""What a million tokens cost on this machine, from its price per hour (`cost_per_hour`) and the row's rate,
and from the energy measured per token and the price of a kWh (`energy_price_per_kwh`).

    cost per million tokens = cost_per_hour / (tokens/s x 3600) x 1e6

The rate is the machine's: aggregate tok/s of a row of fixed calls (every sequence of a call), output tok/s of
a load row; good tokens are goodput (requests/s within the SLOs) x mean output tokens per request. A cost falls
as its rate rises, so the cost's interval is the rate's interval turned over: the low cost comes from the high
rate. Every cell stays empty (never zero) where no price is set or the rate is missing.
"""
from __future__ import annotations

NAN = float("nan")
SECONDS_PER_HOUR = 3600.0
JOULES_PER_KWH = 3.6e6
MILLION = 1e6


def per_million(price_per_hour: float, tokens_per_s: float) -> float:
    """Price of a million tokens made at `tokens_per_s` on a machine that costs `price_per_hour`."""
    if not price_per_hour or not tokens_per_s == tokens_per_s or tokens_per_s <= 0:
        return NAN
    return price_per_hour / (tokens_per_s * SECONDS_PER_HOUR) * MILLION


def cost_with_interval(price_per_hour: float, rate: float, low: float, high: float) -> tuple[float, float, float]:
    """(cost, cost_ci_low, cost_ci_high) from a rate and its interval: the low cost is the high rate's."""
    return per_million(price_per_hour, rate), per_million(price_per_hour, high), per_million(price_per_hour, low)


def energy_per_million(joules_per_token: float, price_per_kwh: float) -> float:
    """Electricity for a million tokens: J/token x 1e6 / 3.6e6 J per kWh x price per kWh."""
    if not price_per_kwh or not joules_per_token == joules_per_token or joules_per_token < 0:
        return NAN
    return joules_per_token * MILLION / JOULES_PER_KWH * price_per_kwh


def number(row: dict, key: str) -> float:
    try:
        value = float(row.get(key, NAN))
    except (TypeError, ValueError):
        return NAN
    return value


class Cost:
    """Cost columns of every row (fixed calls and load rows alike), from the config's prices and the row's rates."""

    columns = (
        "cost_per_million_tokens", "cost_per_million_tokens_ci_low", "cost_per_million_tokens_ci_high",
        "cost_per_million_good_tokens", "cost_per_million_good_tokens_ci_low", "cost_per_million_good_tokens_ci_high",
        "energy_cost_per_million_tokens", "currency",
    )
    help = {  # column -> one line for docs/columns.md (scripts/reference.py); a group shares its line
        **dict.fromkeys(("cost_per_million_tokens", "cost_per_million_tokens_ci_low", "cost_per_million_tokens_ci_high"),
                        "price of a million (1e6) tokens, in `currency`: `cost_per_hour` / (tok/s × 3600) × 1e6, "
                        "tok/s = aggregate tok/s (fixed calls) or output tok/s (load rows); the interval is the rate's, "
                        "turned over (the low cost from the high rate); empty without `cost_per_hour`"),
        **dict.fromkeys(("cost_per_million_good_tokens", "cost_per_million_good_tokens_ci_low",
                         "cost_per_million_good_tokens_ci_high"),
                        "load rows: the same per million tokens of requests that met the SLOs (goodput × mean output "
                        "tokens per request), interval from goodput's"),
        "energy_cost_per_million_tokens": "electricity of 1e6 tokens in `currency`: `joules_per_token` × 1e6 / 3.6e6 "
                                          "J/kWh × `energy_price_per_kwh`; empty where no energy was measured or no "
                                          "price is set",
        "currency": "the currency of the cost columns (config key `currency`); empty when no price is set",
    }

    @staticmethod
    def summarize(calls, ctx=None, row=None) -> dict:
        """Reads what earlier metrics filled: rates and their intervals, goodput, joules per token."""
        config, row = getattr(ctx, "config", None), row or {}
        out = dict.fromkeys(Cost.columns, NAN) | {"currency": ""}
        hourly = float(getattr(config, "cost_per_hour", 0) or 0)
        kwh = float(getattr(config, "energy_price_per_kwh", 0) or 0)
        if not (hourly or kwh):
            return out
        load = number(row, "output_tokens_per_s") == number(row, "output_tokens_per_s")
        stem = "output_tokens_per_s" if load else "aggregate_tokens_per_s_median"
        base = "output_tokens_per_s" if load else "aggregate_tokens_per_s"
        cost = cost_with_interval(hourly, number(row, stem), number(row, f"{base}_ci_low"),
                                  number(row, f"{base}_ci_high"))
        out.update(zip(Cost.columns[:3], cost))
        if load:
            tokens = number(row, "new_tokens")
            good = [number(row, k) * tokens for k in ("goodput", "goodput_ci_low", "goodput_ci_high")]
            out.update(zip(Cost.columns[3:6], cost_with_interval(hourly, *good)))
        out["energy_cost_per_million_tokens"] = energy_per_million(number(row, "joules_per_token"), kwh)
        if any(out[c] == out[c] for c in Cost.columns[:-1]):
            out["currency"] = str(getattr(config, "currency", "") or "")
        return out
