"""The one exception type users see: a short message that says what went wrong and what to do."""


class AnatomyError(ValueError):
    """Bad input or an unusable model; the message is meant for the user, not a stack trace.

    A ValueError subclass so that argparse-style callers and tests can catch it generically,
    while the CLI and the app can tell it apart from genuine bugs and show only the message.
    """


def shown(value: object, limit: int = 60) -> str:
    """User input quoted inside a message: one line whatever it holds (repr escapes newlines, control and
    right-to-left characters), cut to about `limit` characters so a huge input gives a short message."""
    text = repr(str(value))
    return text if len(text) <= limit else f"{text[:limit - 5]}...' ({len(str(value)):,} characters)"
