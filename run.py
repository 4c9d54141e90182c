"""Entry point: `python run.py [group=option ...] [key=value ...]`, or `python run.py -m ...` for a sweep."""

import logging
import sys

import hydra
from omegaconf import DictConfig

from llm2labels.cli import user_error

log = logging.getLogger("llm2labels")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    from llm2labels.app import run

    try:
        run(cfg)
    except Exception as err:  # user errors become one line; anything else keeps its traceback
        message = user_error(err)
        if message is None:
            raise
        log.error(message)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
