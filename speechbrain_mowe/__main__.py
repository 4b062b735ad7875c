"""``python -m speechbrain_mowe``: the ``speechbrain-mowe`` command.

See :mod:`speechbrain_mowe.cli`.
"""

import sys

from speechbrain_mowe.cli import run

sys.exit(run())
