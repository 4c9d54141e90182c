"""`grouper=llm`: synsets and a hierarchy from a local Hugging Face chat LLM (the paper's Llama-2 stage).

The model sees the ranked labels in its own chat template and answers with JSON (`prompts.py` fits the
labels into `context_tokens`, retries unreadable answers and merges chunks; `answers.py` reads the answers).
Only the `max_labels` best-ranked labels are grouped; labels beyond them stay singletons. `model: tiny`
builds a tiny random Llama offline (`tiny_lm.py`), whose gibberish exercises the retry and fallback paths.
Weights load lazily on the first call, so the object stays cheap and picklable until then.
"""

from __future__ import annotations

import copy
from typing import Any

from llm2labels.errors import require
from llm2labels.grouping.prompts import ChatGrouper, Message

TINY = ("tiny", "tiny:llama")  # model ids that build llm2labels.grouping.tiny_lm's random model
DTYPE_NAMES = ("float32", "bfloat16", "float16", "auto")


def load_causal_lm(model_id: str, revision: str | None, dtype: str, trust_remote_code: bool) -> tuple[Any, Any]:
    """(model, tokenizer) via `from_pretrained`: the local cache first, the hub only when reachable, else a
    one-line MissingWeightsError (`hf_hub.load_pretrained`, as for the VLM proposers)."""
    from llm2labels.proposers.hf_hub import load_pretrained

    return load_pretrained(model_id, revision, dtype, trust_remote_code, kind="causal_lm")


class LLMGrouper(ChatGrouper):
    """Group ranked labels with a causal LM run in this process (greedy when temperature is 0)."""

    name = "llm"

    def __init__(self, model: str = "meta-llama/Llama-2-7b-chat-hf", dtype: str = "bfloat16", device: str = "auto",
                 revision: str | None = None, trust_remote_code: bool = False, seed: int = 0,
                 **chat: Any) -> None:
        """`chat`: the settings every chat grouper shares (`ChatGrouper`: context, answer length, temperature,
        retries, chunking, prompts)."""
        super().__init__(**chat)
        problems = {
            "model must be a Hugging Face model id or tiny": bool(model),
            f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {dtype}": dtype in DTYPE_NAMES,
        }
        require(problems, "grouper=llm: ")
        self.model_id, self.seed = model, seed
        self.dtype, self.device, self.revision, self.trust_remote_code = dtype, device, revision, trust_remote_code
        self._model: Any = None
        self._tokenizer: Any = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickle the settings, not loaded weights (a worker reloads on its first call)."""
        return {**self.__dict__, "_model": None, "_tokenizer": None}

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model_id, "context_tokens": self.context_tokens,
                "max_new_tokens": self.max_new_tokens, "temperature": self.temperature}

    def setup(self) -> None:
        """Load the model and tokenizer (done by the first call if not before)."""
        if self._model is not None:
            return
        import torch

        device = self.device if self.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
        if self.model_id in TINY:
            from llm2labels.grouping.tiny_lm import build_tiny_lm

            model, tokenizer = copy.deepcopy(build_tiny_lm("llama"))
            if self.dtype != "auto":
                model = model.to(getattr(torch, self.dtype))
        else:
            model, tokenizer = load_causal_lm(self.model_id, self.revision, self.dtype, self.trust_remote_code)
        self._model, self._tokenizer = model.to(device).eval(), tokenizer

    @property
    def tokenizer(self) -> Any:
        self.setup()
        return self._tokenizer

    def render(self, messages: list[Message]) -> str:
        """The chat template's text; a template that rejects a system role gets it inside the user turn,
        and a tokenizer without a template (a base model) gets plain "Role: content" lines."""
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            turns = "".join(f"{m['role'].capitalize()}: {m['content']}\n\n" for m in messages)
            return (tok.bos_token or "") + turns + "Assistant:"
        try:
            return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        except Exception:  # noqa: BLE001 - jinja's TemplateError ("System role not supported") and kin
            if messages[0]["role"] != "system":
                raise
            first = {"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}
            return tok.apply_chat_template([first, *messages[2:]], tokenize=False, add_generation_prompt=True)

    def count_tokens(self, text: str) -> int:
        # The rendered template already holds BOS and the role markers: add no special tokens again.
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def chat(self, messages: list[Message]) -> str:
        return self.generate(self.render(messages))

    def generate(self, prompt: str) -> str:
        """The model's continuation of `prompt` (at most max_new_tokens), special tokens removed."""
        import torch
        from transformers import GenerationConfig

        tok, model = self.tokenizer, self._model
        inputs = tok(prompt, add_special_tokens=False, return_tensors="pt").to(model.device)
        sample = self.temperature > 0
        config = GenerationConfig(  # explicit, so a checkpoint's sampling defaults do not leak in
            max_new_tokens=self.max_new_tokens, do_sample=sample, temperature=self.temperature if sample else None,
            top_p=None, top_k=None, eos_token_id=model.generation_config.eos_token_id,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        cuda = [model.device.index or 0] if model.device.type == "cuda" else []
        with torch.inference_mode(), torch.random.fork_rng(devices=cuda):
            torch.manual_seed(self.seed)
            out = model.generate(**inputs, generation_config=config)
        return tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
