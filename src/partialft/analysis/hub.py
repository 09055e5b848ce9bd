"""Upload an exported folder to the Hugging Face Hub (``partialft export --push-to-hub``).

Everything is checked before any work (repo id, token, offline mode), and a refused upload or a
network failure is one sentence; the tests mock ``huggingface_hub`` at this boundary.
"""

from __future__ import annotations

from pathlib import Path

from partialft import __version__
from partialft.errors import PartialFTError, option_error
from partialft.models.loading import first_line
from partialft.training.outputs import LOCK, MARKER
from partialft.utils.io import TMP_INFIX, TMP_SUFFIX


def check_hub(repo: str) -> None:
    """Before any work: a valid repo id, a token, not offline (one sentence each)."""
    from partialft.utils.extras import require

    require("huggingface_hub", "pushing to the Hub", cli="--push-to-hub")
    import huggingface_hub as hub
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError:
        valid = "use NAME or OWNER/NAME (letters, digits, '-', '_', '.')."
        raise PartialFTError(f"repo {repo!r} is not a Hub repo id; {valid}",
                             cli=f"--push-to-hub {repo!r} is not a Hub repo id; {valid}") from None
    if hub.constants.HF_HUB_OFFLINE:
        raise PartialFTError("pushing to the Hub needs the network but HF_HUB_OFFLINE is set; "
                             "unset it or export without a repo.",
                             cli="--push-to-hub needs the network but HF_HUB_OFFLINE is set; "
                             "unset it or export without --push-to-hub.")
    if not hub.get_token():
        what = "needs a Hugging Face token and none is set; run `hf auth login` or set HF_TOKEN"
        raise PartialFTError(f"pushing to the Hub {what}, then export again.",
                             cli=f"--push-to-hub {what}, then export again.")


def push_to_hub(folder: str | Path, repo: str, *, private: bool = False) -> str:
    """Create ``repo`` (if needed) and upload ``folder`` to it; returns the commit's URL."""
    import huggingface_hub as hub
    from huggingface_hub.utils import HfHubHTTPError

    try:
        url = hub.create_repo(repo, exist_ok=True, private=private)
        commit = hub.upload_folder(repo_id=getattr(url, "repo_id", repo),
                                   folder_path=str(folder),
                                   ignore_patterns=[MARKER, LOCK, f"{LOCK}.*",
                                                    f"*{TMP_INFIX}*{TMP_SUFFIX}"],
                                   commit_message=f"Upload from partialft {__version__}")
    except HfHubHTTPError as exc:
        raise option_error("the Hugging Face Hub refused the upload to {repo} ({why}); check "
                           "that your token may write there, then export again with "
                           "`overwrite=True`.", repo=repo, why=first_line(exc)) from None
    except (OSError, *_network_errors()) as exc:
        raise option_error("could not reach the Hugging Face Hub to upload to {repo} ({why}); "
                           "check the network connection, then export again with "
                           "`overwrite=True`.", repo=repo, why=first_line(exc)) from None
    return str(getattr(commit, "commit_url", None) or getattr(url, "url", repo))


def _network_errors() -> tuple[type[BaseException], ...]:
    """The HTTP client's errors (httpx in huggingface_hub >= 1; requests' are OSErrors)."""
    try:
        from huggingface_hub.errors import HTTPError  # type: ignore[attr-defined]
    except ImportError:
        return ()
    return (HTTPError,)
