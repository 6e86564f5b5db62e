"""schemathesis hooks for ./dev test (SCHEMATHESIS_HOOKS=schemathesis_hooks, scripts/tools on PYTHONPATH)."""

import uuid

import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    # A list cursor is opaque: only a next_cursor the API made (for the same sort) is one, and
    # any other value is rightly 400, so a generated one leaves a valid request out. Negative
    # cases keep theirs: it is refused either way. backend/tests/api/list.rs pages with real ones.
    meta = case.meta
    positive = meta is not None and meta.generation.mode.is_positive
    if case.query and positive:
        case.query.pop("cursor", None)
    # A generated Idempotency-Key repeats across cases (hypothesis reuses its values), and the
    # same key with the same body replays the first answer for 24 hours by design, even for a
    # task deleted since: the stateful checks then read the replayed id as a resource gone
    # (ST302). A fresh key per positive call keeps them to one request each; replays are
    # covered by backend/tests/api/tasks.rs, and negative cases keep their malformed keys.
    if case.headers and positive:
        for name in list(case.headers):
            if name.lower() == "idempotency-key":
                case.headers[name] = str(uuid.uuid4())
