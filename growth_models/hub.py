"""Publishing a checkpoint folder to the Hugging Face Hub: create_repo, then upload_folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

from huggingface_hub import HfApi

from anatomy.errors import AnatomyError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def push_folder(folder: Path, repo_id: str, private: bool = False) -> str:
    """Upload `folder` to the model repo `repo_id` (created if missing); returns the commit URL.

    The token comes from `HF_TOKEN` (or a stored login); it is passed on, never printed or logged.
    """
    if not REPO_ID.match(repo_id):
        raise AnatomyError(f"--push-to-hub {repo_id!r}: expected USER/REPO, e.g. alice/growth-transformer.")
    token = os.environ.get("HF_TOKEN") or None
    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True, private=private)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model",
                                 commit_message="Upload growth transformer checkpoint")
    except Exception as exc:  # network/auth errors: say what to do, and never echo the token
        msg = str(exc).replace(token, "***") if token else str(exc)
        raise AnatomyError(f"upload to {repo_id} failed: {msg}\nWhat to do: set HF_TOKEN to a write token "
                           "and check the network; the checkpoint is saved locally in " + str(folder)) from None
    return str(getattr(info, "commit_url", info))
