"""The ``omnivmed-serve`` command: a trained model folder as an OpenAI-compatible chat-completions server.

argparse; torch loads only after the options and the host's key are checked. The first line on
stdout is the base URL (``--port 0`` picks a free port). Bad input: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
import typing
from pathlib import Path

from omnivmed.cli.oneline import OneLineParser
from omnivmed.cli.oneline import fail as one_line
from omnivmed.serve import API_KEY_ENV

PROG = "omnivmed-serve"

DESCRIPTION = f"""\
Serve a trained model folder (OUT/stageN/model) as an OpenAI-compatible endpoint: GET /v1/models,
POST /v1/chat/completions with text, image_url and video_url parts (data: URLs, base64). The model is
listed as NAME (images are images), NAME:volume (a request's images are one volume's slices) and
NAME:video (they are one clip's frames). Binds 127.0.0.1 unless --host says otherwise; another host
needs {API_KEY_ENV} in the environment, the key every request must send (Authorization: Bearer)."""

EXAMPLES = """\
example:
  omnivmed-serve runs/omnivmed/stage3/model --port 8000
  # then, as any endpoint: base_url http://127.0.0.1:8000/v1, model "stage3" (or "stage3:video" for clips)"""


def fail(message: str) -> typing.NoReturn:
    """One line on stderr, exit status 2."""
    one_line(PROG, message)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog=PROG, description=DESCRIPTION, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter,
        allow_abbrev=False,
    )  # fmt: skip
    parser.add_argument("model", type=Path, metavar="MODEL_DIR", help="a stage's model folder (OUT/stageN/model)")
    parser.add_argument("--host", default="127.0.0.1", help=f"address to bind (default 127.0.0.1; another needs {API_KEY_ENV})")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free one)")
    parser.add_argument("--name", help="the model id clients ask for (default: the stage folder's name, e.g. stage3)")
    parser.add_argument("--device", default="auto", help="auto (default: cuda when there is one), cpu, cuda, cuda:1, ...")
    parser.add_argument("--dtype", default="auto", choices=("auto", "fp32", "bf16", "fp16"), help="weights (default auto: bf16 on a GPU, fp32 on the CPU)")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    from omnivmed.serve import ModelServer, RequestError, check_binding

    api_key = os.environ.get(API_KEY_ENV) or None
    try:
        check_binding(args.host, api_key)
    except RequestError as err:
        fail(str(err))
    if not 0 <= args.port < 65536:
        fail(f"--port {args.port} is not a port number")
    if not (args.model / "config.json").is_file():
        fail(f"{args.model}: not a model folder (no config.json; a stage writes OUT/stageN/model)")
    from omnivmed.trainer.config import ConfigError
    from omnivmed.trainer.inference import Runner

    try:
        runner = Runner.load(args.model, device=args.device, dtype=args.dtype)
        server = ModelServer(runner, host=args.host, port=args.port, api_key=api_key, name=args.name)
    except (ConfigError, FileNotFoundError) as err:
        fail(str(err))
    except (ValueError, OSError, RuntimeError) as err:  # a folder that is not a model, a port in use
        fail(f"{args.model}: {err}" if not isinstance(err, OSError) or err.filename else f"{args.host}:{args.port}: {err}")
    print(server.base_url, flush=True)
    print(f"{PROG}: serving {', '.join(server.model_ids)}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.httpd.server_close()


if __name__ == "__main__":
    main()
