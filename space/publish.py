"""Publishing a finished run from the app: a signed-in visitor pushes this session's run to their own Hub repo.

The push is `anatomy.hub.push`, the CLI's, with the visitor's own token (gr.OAuthToken, from "Sign in with
Hugging Face" or an API caller's `oauth_token`) handed to it explicitly: never the deployer's HF_TOKEN or
stored login, and never logged. The repo is in the visitor's namespace: a bare name becomes
`<username>/<name>`, another owner is refused. The run pushed is the session's latest run of the tab's
experiment, read from the server-side session state (`gr.State`); the client sends a repo name, never a path.
"""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr
from huggingface_hub import HfApi

from anatomy import hub
from anatomy.errors import AnatomyError, shown

from . import previous
from .access import public_mode
from .jobs import one_line, user_errors

DEFAULT_NAME = "anatomy-results"
SIGN_IN = ("Sign in with Hugging Face to publish (the button at the top of the Space); or download the run folder "
           "(.zip) and push it with `python -m anatomy push RUN OWNER/NAME`.")
WAY_OUT = ("your run stays in this session: try again, or download the run folder (.zip) and push it with "
           "`python -m anatomy push RUN OWNER/NAME`")


def username(token: str, profile: gr.OAuthProfile | None) -> str:
    """Who signed in: the profile of a browser sign-in, else (an API caller sends a token only) the token's owner."""
    if profile is not None:
        return profile.username
    try:
        return HfApi(token=token).whoami()["name"]
    except hub.HUB_ERRORS as err:
        raise hub.hub_failure(err, "your account", "asking the Hub who signed in", WAY_OUT) from None


def own_repo(text: str, user: str) -> str:
    """`text` (NAME or OWNER/NAME) as a repo id in `user`'s namespace; another owner, or no repo id, refused."""
    text = (text or "").strip()
    owner, _, name = text.rpartition("/")
    if owner and owner.lower() != user.lower():
        raise AnatomyError(f"The app publishes to your own namespace only ({user}/...), not to {shown(owner)}: give "
                           f"a repo name such as {DEFAULT_NAME}.")
    try:
        return hub.check_repo_id(f"{user}/{name}")
    except AnatomyError:
        raise AnatomyError(f"{shown(text)} is not a repo name: give letters, digits, '-', '_' or '.', such as "
                           f"{DEFAULT_NAME}.") from None


def publish_run(folder, repo: str, token: gr.OAuthToken | None, profile: gr.OAuthProfile | None) -> str:
    """Push `folder` (a finished run or study of this session) to the visitor's `repo`; one line saying where."""
    if token is None or not token.token:
        raise AnatomyError(SIGN_IN)
    repo_id = own_repo(repo, username(token.token, profile))
    repo_id = hub.check_target(repo_id, folder, token=token.token, way_out=WAY_OUT)
    url = hub.push(folder, repo_id, token=token.token, way_out=WAY_OUT)
    return one_line(f"Published `{hub.target_path(folder)}/` to [{repo_id}](https://huggingface.co/datasets/"
                    f"{repo_id}) ([commit]({url})).")


def handler(experiment: str, tab: str) -> Callable:
    """The Publish button of the `experiment` tab (labelled `tab`): this session's latest run of it."""
    @user_errors
    def publish(repo: str, state: dict | None, oauth_token: gr.OAuthToken | None = None,
                oauth_profile: gr.OAuthProfile | None = None) -> str:
        if oauth_token is None:  # before the session's runs: signed out is the first thing to say
            raise AnatomyError(SIGN_IN)
        return publish_run(previous.run_folder(state, experiment, tab), repo, oauth_token, oauth_profile)
    publish.__name__ = f"publish_{experiment}"
    return publish


def build(experiment: str, tab: str, state: gr.State, api_name: str) -> gr.Row:
    """The "Publish to the Hub" row under a tab's outputs, hidden until a run succeeds (the caller shows it)."""
    with gr.Row(visible=False) as row:
        repo = gr.Textbox(DEFAULT_NAME, label="Publish this run to the Hub: a dataset repo in your namespace",
                          scale=4, max_lines=1)
        button = gr.Button("Publish to the Hub", scale=0, min_width=170)
    status = gr.Markdown(elem_id=f"{api_name}-published")
    # on a public app the endpoint is left off the API page, so the MCP server offers no publish tool (the button
    # and API clients that name it still work, with the visitor's own sign-in)
    button.click(handler(experiment, tab), [repo, state], status, api_name=api_name, show_progress_on=[status],
                 api_visibility="undocumented" if public_mode() else "public")
    return row
