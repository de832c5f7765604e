"""Console log lines that leave progress bars whole.

A plain console handler writes its line straight after a half-drawn tqdm bar, so bar and message share one
line and the bar is redrawn below it in pieces. While `bars_stay_whole()` is active, each console handler of
the root logger (a StreamHandler on stdout or stderr; Hydra installs one) is swapped for a `TqdmHandler`,
which writes through `tqdm.write`: the bars are cleared, the line is printed, the bars are redrawn. Level,
format and filters are kept; file handlers (train.log) are left alone. The original handlers come back on exit."""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager

from tqdm import tqdm


class TqdmHandler(logging.StreamHandler):
    """A StreamHandler that prints through `tqdm.write` (same stream, same format)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def _is_console(handler: logging.Handler) -> bool:
    return (type(handler) is logging.StreamHandler  # not FileHandler, not another tool's own handler
            and getattr(handler, "stream", None) in (sys.stdout, sys.stderr))


def tqdm_twin(handler: logging.StreamHandler) -> TqdmHandler:
    twin = TqdmHandler(handler.stream)
    twin.setLevel(handler.level)
    twin.setFormatter(handler.formatter)
    for f in handler.filters:
        twin.addFilter(f)
    return twin


@contextmanager
def bars_stay_whole(logger: logging.Logger | None = None):
    logger = logger or logging.getLogger()
    original = list(logger.handlers)
    logger.handlers = [tqdm_twin(h) if _is_console(h) else h for h in original]
    try:
        yield
    finally:
        logger.handlers = original
