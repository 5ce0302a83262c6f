"""`python -m herd ...` (and `torchrun ... -m herd pretrain ...`): the same as the `herd` command."""

import sys

from herd.cli import main

sys.exit(main())
