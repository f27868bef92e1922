"""Published checkpoints on the Hugging Face hub, named `hf://OWNER/REPO[@REVISION]/PATH/step_N`.

`resolve_hub_checkpoint` downloads the weights and the `all_config.yaml` of their repo folder into the
huggingface_hub cache (which reuses cached files and honours HF_HUB_OFFLINE=1) and returns the local
weights path; the caller reads it with `rundir.states.safe_load(path, mmap=True)` and the config beside it.
"""
import os
import posixpath
from urllib.parse import quote, unquote

from rundir.layout import CONFIG_FILE, WEIGHTS_PATTERN, weights_name
from utils.errors import CheckpointError

HUB_SCHEME = "hf://"
LOGIN_HINT = "run `hf auth login` (older versions: `huggingface-cli login`) or set HF_TOKEN"
HUB_FORM = (f"{HUB_SCHEME}OWNER/REPO[@REVISION]/PATH/TO/{WEIGHTS_PATTERN}, "
            f"e.g. {HUB_SCHEME}arcprize/trm_arc_prize_verification/arc_v1_public/{weights_name(518071)}")


def is_hub_path(path: str) -> bool:
    return isinstance(path, str) and path.startswith(HUB_SCHEME)


def parse_hub_path(uri: str) -> tuple[str, str, str | None]:
    """`hf://owner/repo[@rev]/path/file` -> ("owner/repo", "path/file", "rev" or None).

    A revision with a slash (refs/pr/1) is written URL-encoded (refs%2Fpr%2F1), as HfFileSystem does."""
    parts = uri[len(HUB_SCHEME):].split("/") if is_hub_path(uri) else []
    if len(parts) >= 3:
        repo, at, revision = parts[1].partition("@")
        if (revision or not at) and all(p not in ("", ".", "..") for p in [parts[0], repo, *parts[2:]]):
            return f"{parts[0]}/{repo}", "/".join(parts[2:]), unquote(revision) if revision else None
    raise CheckpointError(f"Malformed hub checkpoint {uri!r}: expected {HUB_FORM}.")


def _hub_uri(repo_id: str, filename: str, revision: str | None) -> str:
    at = f"@{quote(revision, safe='')}" if revision else ""
    return f"{HUB_SCHEME}{repo_id}{at}/{filename}"


class _MissingInRepo(Exception):
    """The repo (at that revision) has no such file: the caller decides whether that is fatal."""


def _download(repo_id: str, filename: str, revision: str | None) -> str:
    """hf_hub_download with each huggingface_hub failure turned into one CheckpointError line."""
    try:
        import huggingface_hub
        from huggingface_hub import constants, errors
    except ImportError:
        raise CheckpointError("Hub checkpoints (hf://...) need huggingface_hub: pip install huggingface_hub") from None
    uri = _hub_uri(repo_id, filename, revision)
    at_revision = f" at revision {revision}" if revision else ""
    missing = f"Hub repository {repo_id}{at_revision} has no file {filename}."
    cached = None
    try:
        cached = huggingface_hub.try_to_load_from_cache(repo_id, filename, revision=revision)
        if not isinstance(cached, str) and not constants.is_offline_mode():
            _check_hub_reachable(uri, repo_id, filename, revision)
            # huggingface_hub draws its own progress bar; this line says what it is for and where it goes.
            cache = constants.HF_HUB_CACHE.replace(os.path.expanduser("~"), "~", 1)
            print(f"Downloading {uri} from the Hugging Face hub (cached in {cache})", flush=True)
        return huggingface_hub.hf_hub_download(repo_id, filename, revision=revision)
    except errors.GatedRepoError:
        raise CheckpointError(f"Hub repository {repo_id} is gated: accept its terms on huggingface.co, "
                              f"then {LOGIN_HINT}.") from None
    except errors.RepositoryNotFoundError:
        raise CheckpointError(f"Hub repository {repo_id} not found: check the name in {uri}; "
                              f"if it is private, {LOGIN_HINT}.") from None
    except errors.RevisionNotFoundError:
        raise CheckpointError(f"Hub repository {repo_id} has no revision {revision!r} (from {uri}).") from None
    except errors.LocalEntryNotFoundError as err:
        # Not in the cache and the hub could not be asked: offline mode, or no network. An earlier online
        # lookup may have recorded that the repo lacks the file (the cache's .no_exist marker): that answer holds.
        if cached is huggingface_hub._CACHED_NO_EXIST:
            raise _MissingInRepo(missing) from None
        if constants.is_offline_mode():
            raise CheckpointError(f"{uri} is not in the Hugging Face cache and HF_HUB_OFFLINE=1 is set: unset it, "
                                  "or download the file once with network access.") from None
        raise _unreachable(uri, err.__cause__ or err) from None
    except errors.EntryNotFoundError:
        # After LocalEntryNotFoundError (its subclass): this one is the hub saying the file does not exist.
        raise _MissingInRepo(missing) from None
    except errors.HFValidationError as err:
        raise CheckpointError(f"Malformed hub checkpoint {uri!r} ({_first_line(err)}): expected {HUB_FORM}.") from None
    except errors.HfHubHTTPError as err:
        status = err.response.status_code if err.response is not None else "an error"
        raise CheckpointError(f"The Hugging Face hub answered {status} for {uri}: {_first_line(err)}") from None
    except (errors.HTTPError, errors.OfflineModeIsEnabled) as err:
        # Transport failures mid-download (connection reset, timeout): huggingface_hub drops the partial file.
        raise CheckpointError(f"Network error while downloading {uri} ({_first_line(err)}): check the network "
                              "and run again.") from None


def _unreachable(uri: str, err: BaseException) -> CheckpointError:
    from huggingface_hub import constants
    return CheckpointError(f"Cannot reach the Hugging Face hub ({constants.ENDPOINT}) for {uri}, which is not in the "
                           f"Hugging Face cache ({_first_line(err)}): check the network (and HF_ENDPOINT, a proxy) "
                           "and try again; HF_HUB_OFFLINE=1 uses only files already cached.")


def _check_hub_reachable(uri: str, repo_id: str, filename: str, revision: str | None) -> None:
    """One HEAD request for the file, without hf_hub_download's retries: a hub it cannot reach at all (connection
    refused, no route, a name that does not resolve, or no answer within HF_HUB_ETAG_TIMEOUT) is reported now,
    not after five more tries with back-off (about 25 s). Any answer of the hub, an error too, is left to
    hf_hub_download, which reports it as before (and retries a busy hub)."""
    import huggingface_hub
    from huggingface_hub import constants, errors
    try:
        huggingface_hub.get_hf_file_metadata(huggingface_hub.hf_hub_url(repo_id, filename, revision=revision),
                                             timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except errors.HfHubHTTPError:
        return  # the hub answered
    except errors.HTTPError as err:  # the transport failed: nothing answered
        raise _unreachable(uri, err) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def resolve_hub_checkpoint(uri: str, need_config: bool = True) -> str:
    """Download (or find in the cache) the weights named by `uri` and the all_config.yaml of the same repo folder.

    Returns the local weights path; the config is the CONFIG_FILE beside it. With `need_config=False` (the caller
    names its own config) only the weights are fetched."""
    repo_id, filename, revision = parse_hub_path(uri)
    try:
        weights = _download(repo_id, filename, revision)
    except _MissingInRepo as err:
        raise CheckpointError(f"{err} Check the path in {uri}.") from None
    if not need_config:
        return weights
    config_name = posixpath.join(posixpath.dirname(filename), CONFIG_FILE)
    try:
        config = _download(repo_id, config_name, revision)
    except _MissingInRepo:
        folder = posixpath.dirname(filename) or "the top level"
        raise CheckpointError(f"Hub repository {repo_id}: folder {folder} has no {CONFIG_FILE} beside {filename}; "
                              "name the training config with config=PATH.") from None
    # Evaluation reads the config beside the weights; the snapshot layout promises that, but a branch that moved
    # between the two downloads would put them in different snapshots.
    if os.path.dirname(config) != os.path.dirname(weights):
        raise CheckpointError(f"The {CONFIG_FILE} of {uri} was cached at {config}, not beside the weights {weights} "
                              "(the repo changed between the two downloads?): run again.")
    return weights
