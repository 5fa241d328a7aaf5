"""Why a file could not be fetched from the Hugging Face Hub, in words a user can act on."""
from __future__ import annotations

import errno


def download_cause(exc: BaseException, repo: str, filename: str) -> str:
    """A short cause for the failed download of ``repo/filename``: authentication or gated access, repository
    or file not on the hub, disk full, no network; else the exception's type and message."""
    from huggingface_hub import errors

    if isinstance(exc, errors.GatedRepoError):
        return f"access to {repo} is gated: accept its terms at https://huggingface.co/{repo} and log in (`hf auth login`)"
    if isinstance(exc, errors.RepositoryNotFoundError):
        return (f"repository {repo} not found on the hub, or it is private and needs authentication "
                "(`hf auth login` or HF_TOKEN)")
    if isinstance(exc, errors.RevisionNotFoundError):
        return f"revision not found in {repo}"
    if isinstance(exc, errors.RemoteEntryNotFoundError) or (
            isinstance(exc, errors.EntryNotFoundError) and not isinstance(exc, errors.LocalEntryNotFoundError)):
        return f"file {filename} not found in {repo} on the hub"
    if isinstance(exc, errors.HfHubHTTPError) and _status(exc) in (401, 403):
        return f"authentication refused by the hub (HTTP {_status(exc)}): log in with `hf auth login` or set HF_TOKEN"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "disk full: free space in the models folder and the hub cache (HF_HOME)"
    if isinstance(exc, (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled, ConnectionError, TimeoutError)):
        return "no network or hub unreachable"
    return f"{exc.__class__.__name__}: {exc}"


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)
