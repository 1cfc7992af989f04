"""The judge's settings: the vision-language model the metrics ask (`u2s_hf.scoring.judge`), beside the evaluation
config (`evaluation.EvaluationConfig`, whose `judge` it is). A module of its own because the scoring functions
import it and `evaluation` imports them."""

from __future__ import annotations

from dataclasses import dataclass

from .config import ModelSettings

# The paper's judge (InternVL3.5-8B) in transformers' native format.
PAPER_JUDGE = "OpenGVLab/InternVL3_5-8B-HF"


@dataclass(frozen=True)
class JudgeConfig(ModelSettings):
    """The vision-language model the metrics ask: VLMScore, text reading and apparent demographic groups."""

    backend: str = "vlm"
    model: str | None = PAPER_JUDGE

    def validate(self):
        self._check_model("Judge", "vlm")

    @classmethod
    def named(cls, model: str, base_url: str | None = None) -> JudgeConfig:
        """The judge `model`, loaded in this process, or served at `base_url` (an OpenAI-compatible server)."""
        return cls(backend="server", model=model, base_url=base_url) if base_url else cls(model=model)
