"""What the three sampling proposers (`hf_vlm`, `vllm_offline`, `openai_api`) share: the default prompt, the
sampling settings, their names and their checks.

One name per setting across backends (`max_new_tokens`, `logprobs`, as in Hugging Face); each backend maps
them to its engine's own names (vLLM's and OpenAI's `max_tokens`) where it calls that engine. No torch here:
`vllm_offline` and `openai_api` import this module and stay light.
"""

from __future__ import annotations

from typing import Any

from llm2labels.errors import ConfigError, int_at_least, number_at_least, require
from llm2labels.proposers.base import Proposer

#: The paper's prompt, every sampling proposer's default (`prompt: null` in conf/proposer/*.yaml).
DEFAULT_PROMPT = (
    "Analyze the image and provide a Python list containing all semantic segmentation labels for the image."
)
LOGPROB_MODES = ("raw", "processed")
RENAMED = {"max_tokens": "max_new_tokens", "logprob_mode": "logprobs"}  # earlier key -> its name now


class SamplingProposer(Proposer):
    """A proposer that samples answers to a prompt from a VLM, keeping each token's log-probability.

    Settings (keyword arguments of every backend, which overrides a default where its engine's differs):
    `prompt` (None: `default_prompt`); `template`, the text sent, "{prompt}" replaced by the prompt;
    `top_p`, `temperature`, `repetition_penalty`, `top_k`, the sampling warpers (no-ops at 1.0, 1.0, 1.0
    and 0); `max_new_tokens`, the answer's length cap; `logprobs`, which distribution the log-probs are
    from: raw (softmax of the unprocessed logits) or processed (the one sampled from). The last is kept as
    `logprob_mode`, the name the pipeline and the sample store read.
    """

    #: The prompt that `prompt=None` stands for.
    default_prompt: str = DEFAULT_PROMPT
    #: Put before every ConfigError message, naming the config option (e.g. "proposer=vllm: ").
    error_prefix: str = ""
    #: An empty prompt is allowed (a captioning model answers the image alone).
    empty_prompt_ok: bool = False
    #: The model runs behind a chat server: it applies the model's chat template (no `template` here), may
    #: decode greedily (temperature 0), and top_k / repetition_penalty may be None (not sent).
    served: bool = False

    def __init__(
        self,
        *,
        prompt: str | None = None,
        template: str = "{prompt}",
        top_p: float = 0.9,
        temperature: float = 0.3,
        repetition_penalty: float | None = 2.0,
        top_k: int | None = 50,
        max_new_tokens: int = 100,
        logprobs: str = "raw",
        **unknown: Any,
    ) -> None:
        for key in unknown:  # a key from an older config: say what it is called now
            if key in RENAMED:
                raise ConfigError(f"{self.error_prefix}{key} is now called {RENAMED[key]}")
        if unknown:
            raise TypeError(f"{type(self).__name__}() got an unexpected keyword argument {next(iter(unknown))!r}")
        self.prompt = self.default_prompt if prompt is None else prompt
        self.template, self.top_p, self.temperature = template, top_p, temperature
        self.repetition_penalty, self.top_k = repetition_penalty, top_k
        self.max_new_tokens, self.logprob_mode = max_new_tokens, logprobs

    @property
    def prompt_text(self) -> str:
        """The prompt as sent: `template` with the prompt in its "{prompt}" slot."""
        return self.template.replace("{prompt}", self.prompt)

    def sampling_rules(self) -> dict[str, bool]:
        """The settings' checks, message -> holds, in the order `require` tries them."""
        t, k, r = self.temperature, self.top_k, self.repetition_penalty
        if self.served:  # what is not sent is left to the server
            varying = {
                f"template is not used (the server applies the model's chat template), got {self.template!r}":
                    self.template == "{prompt}",
                f"temperature must be >= 0, got {t}": number_at_least(t, 0.0),
                f"repetition_penalty must be null (not sent) or > 0, got {r}": r is None or _positive(r),
                f"top_k must be null (not sent) or an int >= 1, got {k}": k is None or int_at_least(k, 1),
            }
        else:
            varying = {
                f"template must contain {{prompt}}, got {self.template!r}": "{prompt}" in self.template,
                f"temperature must be > 0, got {t}": _positive(t),
                f"repetition_penalty must be > 0 (1.0: off), got {r}": _positive(r),
                f"top_k must be an int >= 0 (0: off), got {k}": int_at_least(k, 0),
            }
        return {
            "prompt must not be empty": self.empty_prompt_ok or bool(self.prompt),
            **varying,
            f"top_p must be in (0, 1], got {self.top_p}": _positive(self.top_p) and self.top_p <= 1,
            f"max_new_tokens must be an int >= 1, got {self.max_new_tokens}": int_at_least(self.max_new_tokens, 1),
            f"logprobs must be raw or processed, got {self.logprob_mode!r}": self.logprob_mode in LOGPROB_MODES,
        }

    def check(self, before: dict[str, bool], after: dict[str, bool]) -> None:
        """Raise a one-line ConfigError for the first failing rule of `before`, the settings', `after`."""
        require({**before, **self.sampling_rules(), **after}, self.error_prefix)


def _positive(value: object) -> bool:
    """A real number > 0 (not a bool, not NaN)."""
    return number_at_least(value, 0.0) and value > 0  # type: ignore[operator]
