"""The projector: vision features into the LLM's embedding space (2-layer MLP with GELU, LLaVA-1.5's)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class Projector(nn.Module):
    def __init__(self, vision_hidden: int, llm_hidden: int):
        super().__init__()
        self.vision_hidden, self.llm_hidden = vision_hidden, llm_hidden
        self.fc1 = nn.Linear(vision_hidden, llm_hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(llm_hidden, llm_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def save_pretrained(self, path: Path, state_dict: dict | None = None) -> None:
        """Write config and weights; ``state_dict`` (e.g. gathered from FSDP shards) instead of the module's own."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        config = {"type": "mlp2x_gelu", "vision_hidden": self.vision_hidden, "llm_hidden": self.llm_hidden}
        (path / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        state = self.state_dict() if state_dict is None else state_dict
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(path / WEIGHTS_NAME))

    @classmethod
    def from_pretrained(cls, path: Path) -> "Projector":
        path = Path(path)
        try:
            config = json.loads((path / CONFIG_NAME).read_text())
            projector = cls(config["vision_hidden"], config["llm_hidden"])
        except (OSError, KeyError, json.JSONDecodeError) as err:
            raise ValueError(f"{path / CONFIG_NAME}: not a projector config ({err})") from None
        projector.load_state_dict(load_file(str(path / WEIGHTS_NAME)))
        return projector
