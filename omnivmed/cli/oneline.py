"""What every argparse command line of the app shares: a mistake is one line on stderr and exit status 2."""

from __future__ import annotations

import argparse
import sys
import typing


def fail(prog: str, message: str, code: int = 2) -> typing.NoReturn:
    print(f"{prog}: {message}".replace("\n", " "), file=sys.stderr)
    raise SystemExit(code)


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line naming the option (no usage block, no traceback)."""

    def error(self, message: str) -> typing.NoReturn:
        fail(self.prog, message.removeprefix("argument "))
