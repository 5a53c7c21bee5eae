"""The LLM roles an LLM policy brings to the inner loop, and the run's budgets they spend."""

from app.agents import budget, config
from app.agents.external import ExternalImplementer
from app.agents.roles import LLMEvaluator, LLMImplementer, LLMJudge
from app.run import ActiveRun


class Team:
    def __init__(self):
        self.config = config.require()
        harness = self.config.endpoint("implementer").harness
        self.implementer: LLMImplementer | ExternalImplementer = (
            ExternalImplementer(harness, self.config.secrets()) if harness else LLMImplementer(self.config)
        )
        self.reviewer = LLMJudge(self.config)
        self.advisor = LLMEvaluator(self.config)

    def stop(self, run: ActiveRun) -> str | None:
        return budget.spent(run, self.config.budget)
