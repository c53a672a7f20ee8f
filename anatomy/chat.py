"""A model's chat template, rendered where a hostile one can be ended.

A chat template is Jinja code shipped in a model's tokenizer_config.json. transformers renders it in a sandbox
that caps each `range()` at 100,000 items, but not two nested loops, and a render cannot be interrupted in a
thread: one template held a model's lock (and every visitor of that model) forever. So the template is
rendered by transformers' own renderer in a child process under a time limit, a memory limit and an output
limit, and only the rendered text comes back; the parent tokenises it as `apply_chat_template` does
(`add_special_tokens=False`). `python -m anatomy.chat` is that child: a JSON request on stdin, the text on
stdout.
"""

from __future__ import annotations

import json
import subprocess
import sys

from transformers import PreTrainedTokenizerBase

from .errors import AnatomyError

RENDER_S = 5.0  # a real template renders in milliseconds; the child's own start (importing the renderer) ~1 s
RENDER_BYTES = 1 << 20  # the most rendered text accepted (prompts are capped far below this)
MEMORY_BYTES = 1 << 30  # the child's address space: the renderer needs ~200 MB


def render(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]],
           add_generation_prompt: bool = True) -> str:
    """`messages` through the tokenizer's chat template, rendered in a child process with limits."""
    try:
        template = tokenizer.get_chat_template()
    except ValueError as err:  # several named templates and none called "default", or none at all
        raise AnatomyError(f"The model's chat template cannot be chosen ({err}): send the prompt raw.") from None
    special = {k: v for k, v in tokenizer.special_tokens_map.items() if isinstance(v, (str, list))}
    request = json.dumps({"template": template, "messages": messages, "special": special,
                          "add_generation_prompt": add_generation_prompt})
    refuse = "untick the chat template to send the prompt raw, or pick another model"
    try:
        done = subprocess.run([sys.executable, "-m", "anatomy.chat"], input=request.encode(), capture_output=True,
                              timeout=RENDER_S, check=False)
    except subprocess.TimeoutExpired:
        raise AnatomyError(f"The model's chat template did not finish rendering within {RENDER_S:g} s (it loops): "
                           f"{refuse}.") from None
    if done.returncode != 0:
        reason = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["it ran out of memory"]
        raise AnatomyError(f"The model's chat template failed to render ({reason[0][:200]}): {refuse}.")
    return done.stdout.decode("utf-8")


def _child() -> None:
    """Cap this process's address space first (so a template that builds a huge text fails here, not the
    server; set in the child itself, since a pre-exec hook is unsafe in a threaded server), then render one
    request from stdin with transformers' sandboxed renderer and refuse an oversized result."""
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
    from transformers.utils.chat_template_utils import render_jinja_template

    request = json.loads(sys.stdin.read())
    rendered, _ = render_jinja_template(conversations=[request["messages"]], chat_template=request["template"],
                                        add_generation_prompt=request["add_generation_prompt"], **request["special"])
    text = rendered[0]
    if len(text.encode("utf-8")) > RENDER_BYTES:
        sys.exit(f"the rendered prompt is over {RENDER_BYTES:,} bytes")
    sys.stdout.write(text)


if __name__ == "__main__":
    _child()
