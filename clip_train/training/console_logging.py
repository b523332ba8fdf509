"""Every log line printed once.

`import lightning` gives the `lightning` logger a console handler of its own and leaves it propagating to the
root logger, where Hydra's job logging prints it again (and writes the run's log file): each Lightning line came
out twice, once plain on stderr and once formatted. When the root logger has handlers (Hydra configured
them), Lightning's own console handlers are removed so its lines take the root's path alone.
"""

import logging

LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")


def print_each_line_once() -> None:
    """Drop Lightning's console handlers when the root logger prints already; call after logging is configured."""
    if not logging.getLogger().handlers:
        return
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:  # console only: a FileHandler subclass stays
                logger.removeHandler(handler)
        logger.propagate = True
