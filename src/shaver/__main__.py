"""``python -m shaver``: the console script, and how torchrun launches shaver's ranks."""

import logging
import os
import sys

from shaver.cli import main

code = main()
dist = sys.modules.get("torch.distributed")
if dist is not None and dist.is_available() and dist.is_initialized():
    # A rank under torchrun leaves without finalising the interpreter: with torch 2.13 and
    # gloo, a worker thread that frees a finished collective while Python shuts down can
    # abort the process ("terminate called without an active exception") after its work is
    # done. Every result is written (atomically) by now; the barrier waits for every rank.
    dist.barrier()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
