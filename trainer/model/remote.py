"""A model folder as transformers remote code: ``modeling_omnivmed.py`` and ``auto_map`` in config.json.

The way Qwen-VL and InternVL publish their checkpoints: the folder carries its own modeling file
(hf_modeling.py, self-contained) and config.json names its classes, so
``AutoModel.from_pretrained(folder, trust_remote_code=True)`` runs the trained model without
this package. :meth:`OmniVMed.save_pretrained` calls :func:`add_remote_code`; a folder written
before it existed gets the files by calling it on the folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from omnivmed.data.fileio import atomic_write_bytes

REMOTE_MODULE = "modeling_omnivmed"
SOURCE = Path(__file__).with_name("hf_modeling.py")
AUTO_MAP = {
    "AutoConfig": f"{REMOTE_MODULE}.OmniVMedConfig",
    "AutoModel": f"{REMOTE_MODULE}.OmniVMedModel",
}
ARCHITECTURES = ["OmniVMedModel"]


def add_remote_code(folder: Path) -> None:
    """Copy the modeling file into ``folder`` and add ``auto_map`` / ``architectures`` to its config.json."""
    folder = Path(folder)
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{config_path}: not a model config ({err})") from None
    atomic_write_bytes(folder / f"{REMOTE_MODULE}.py", SOURCE.read_bytes())
    config.update(auto_map=AUTO_MAP, architectures=ARCHITECTURES)
    atomic_write_bytes(config_path, (json.dumps(config, indent=2) + "\n").encode())
