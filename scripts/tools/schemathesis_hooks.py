"""schemathesis hooks for ./dev test (SCHEMATHESIS_HOOKS=schemathesis_hooks, scripts/tools on PYTHONPATH)."""

import schemathesis


@schemathesis.hook
def before_call(context, case, kwargs):
    # A list cursor is opaque: only a next_cursor the API made (for the same sort) is one, and
    # any other value is rightly 400, so a generated one leaves a valid request out. Negative
    # cases keep theirs: it is refused either way. backend/tests/api/list.rs pages with real ones.
    meta = case.meta
    if case.query and meta is not None and meta.generation.mode.is_positive:
        case.query.pop("cursor", None)
