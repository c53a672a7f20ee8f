"""The one exception type users see: a short message that says what went wrong and what to do."""


class AnatomyError(ValueError):
    """Bad input or an unusable model; the message is meant for the user, not a stack trace.

    A ValueError subclass so that argparse-style callers and tests can catch it generically,
    while the CLI and the app can tell it apart from genuine bugs and show only the message.
    """
