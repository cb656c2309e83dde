"""The worker API's public import path: a training loop's `from scaleprof import session` is
`scaleprof.worker.session` itself (the same module object, so there is one active session, one set of
functions and one state). See scaleprof/worker/session.py."""

import sys

from scaleprof.worker import session as _session
from scaleprof.worker.session import *  # noqa: F403  (the names, for readers and type checkers)

sys.modules[__name__] = _session
