"""Controllers: the agent network plus its rollout state."""

from qmixlab.controllers.agent_controller import AgentController, last_actions_from_actions

__all__ = ["AgentController", "last_actions_from_actions"]
