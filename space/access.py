"""Who may load what: public mode (a Space, or ANATOMY_PUBLIC=1) and the visitor's own Hugging Face token.

On a public app anyone can call every endpoint, so a visitor may load only Hub ids and the embedded model
(never a server path), and every Hub call carries the visitor's own token from "Sign in with Hugging Face"
(gr.OAuthToken) or none at all, never the deployer's HF_TOKEN: otherwise an anonymous visitor could read the
deployer's gated or private models. A Hub model already in the shared cache is re-checked against the
visitor's token before each job. Locally (`python app.py`) nothing changes: paths load, HF_TOKEN is used.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr
import httpx2 as httpx

from anatomy.errors import AnatomyError
from anatomy.load import EMBEDDED
from anatomy.public import require_public_spec


def env_flag(name: str) -> bool | None:
    """A yes/no environment variable (1/true/yes/on is yes, any other value no); None when unset or empty."""
    value = os.environ.get(name, "").strip().lower()
    return value in ("1", "true", "yes", "on") if value else None


def public_mode() -> bool:
    """ANATOMY_PUBLIC=1/0 decides; unset, a Hugging Face Space (SPACE_ID is set there) is public."""
    flag = env_flag("ANATOMY_PUBLIC")
    return bool(os.environ.get("SPACE_ID")) if flag is None else flag


def refuse_implicit_tokens() -> None:
    """Public mode: no library may send HF_TOKEN (or a stored login) unless handed a token explicitly.

    The app passes the visitor's token or `False` itself, but libraries make calls of their own (transformers
    lists a repo's files with no token argument, so the deployer's token went with it); huggingface_hub's
    HF_HUB_DISABLE_IMPLICIT_TOKEN switch closes every such path at once.
    """
    from huggingface_hub import constants
    constants.HF_HUB_DISABLE_IMPLICIT_TOKEN = True


def sign_in_offered() -> bool:
    """The Sign-in button is shown on a public Space only: off a Space, gradio's mocked sign-in would hand every
    visitor the deployer's own token, the very thing public mode forbids (API callers may still send theirs)."""
    return public_mode() and bool(os.environ.get("SPACE_ID"))


def takes_visitor_tokens() -> bool:
    """Whether a handler receives the visitor's own token: on a public app (from the Sign-in button on a Space,
    from an API caller's `oauth_token` on any public app). Locally no job reads one (HF_TOKEN serves), so no
    handler declares it, and gradio's API page does not tell every endpoint's callers that it "acts on your
    behalf" with their token; publishing alone declares it everywhere (space/publish.py): it pushes as them."""
    return public_mode()


OAUTH_PARAMETERS = ("oauth_token", "oauth_profile")


def on_behalf(fn: Callable) -> Callable:
    """`fn` as gradio should see it: as written where the app takes visitor tokens; elsewhere under a signature
    without its `oauth_token` / `oauth_profile` parameters (gradio reads from the signature what to inject and
    what the API page says), called with those left at their defaults (None: signed out)."""
    signature = inspect.signature(fn)
    kept = [p for p in signature.parameters.values() if p.name not in OAUTH_PARAMETERS]
    if takes_visitor_tokens() or len(kept) == len(signature.parameters):
        return fn
    reduced = signature.replace(parameters=kept)

    @functools.wraps(fn)
    def without_oauth(*args, **kwargs):
        return fn(**reduced.bind(*args, **kwargs).arguments)
    without_oauth.__signature__ = reduced
    return without_oauth


@dataclass(frozen=True)
class Access:
    """The rules one job's model request is served under."""

    public: bool = False
    token: str | None = None  # the visitor's own token (public mode only)

    def load_kwargs(self) -> dict:
        """Extra `load_model` / `estimate_bytes` arguments: none locally; Hub ids and the visitor's token publicly."""
        return {"token": self.token or False, "local": False} if self.public else {}

    def check_spec(self, spec: str) -> None:
        if self.public:
            require_public_spec(spec)

    def authorise(self, spec: str) -> None:
        """In public mode, refuse a Hub model the visitor's own token could not download (gated, private), before
        loading it and again before each job on it once cached."""
        if not self.public or spec == EMBEDDED:
            return
        from huggingface_hub import HfApi
        from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError

        try:
            HfApi(token=self.token or False).auth_check(spec)
        except GatedRepoError:
            raise AnatomyError(f"Model '{spec}' is gated: accept its licence on the Hub, then sign in with Hugging "
                               "Face (the button at the top) so your own token opens it.") from None
        except RepositoryNotFoundError:
            raise AnatomyError(f"Model '{spec}' was not found on the Hub, or it is private: sign in with an "
                               "account that can read it.") from None
        except (HfHubHTTPError, OSError, httpx.TransportError) as err:
            raise AnatomyError(f"Cannot reach the Hub to check your access to '{spec}' ({type(err).__name__}); "
                               "try again, or use 'embedded'.") from None


def visitor(oauth_token: gr.OAuthToken | None) -> Access:
    """This request's rules: public mode takes the visitor's sign-in token (or none); locally, today's rules."""
    if not public_mode():
        return Access()
    return Access(public=True, token=oauth_token.token if oauth_token is not None else None)
