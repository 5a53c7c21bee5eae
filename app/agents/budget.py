"""The run's LLM budgets: tokens, cost and minutes, read back from the store so a resumed run keeps counting."""

from app.agents.config import Budget
from app.loop import spent_s
from app.roles import BudgetSpent
from app.run import ActiveRun


def spent(run: ActiveRun, budget: Budget) -> str | None:
    """Which budget is spent, as a message naming it; None while every budget lasts."""
    usage = run.store.usage(run.id)
    tokens = sum((u["tokens_in"] or 0) + (u["tokens_out"] or 0) for u in usage)
    cost = sum(u["cost"] or 0 for u in usage)
    minutes = spent_s(run.store.rounds(run.id)) / 60
    if budget.max_tokens and tokens >= budget.max_tokens:
        return f"budget max_tokens spent: {tokens} of {budget.max_tokens} tokens used"
    if budget.max_cost and cost >= budget.max_cost:
        return f"budget max_cost spent: ${cost:.4f} of ${budget.max_cost:g}"
    if budget.max_minutes and minutes >= budget.max_minutes:
        return f"budget max_minutes spent: {minutes:.1f} of {budget.max_minutes:g} minutes in rounds"
    return None


def check(run: ActiveRun, budget: Budget) -> None:
    reason = spent(run, budget)
    if reason:
        raise BudgetSpent(reason)
