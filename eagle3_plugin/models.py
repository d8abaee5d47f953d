"""The one way to name a model: a local folder or a Hugging Face Hub id, resolved to a folder, and its config.

``resolve_model("Qwen/Qwen3-VL-2B-Instruct")`` downloads (or finds in the local Hub cache) the snapshot with
``huggingface_hub``; ``HF_HUB_OFFLINE=1`` is respected (cache only). Every command that takes a model (train,
dump-features, check --target, bench) goes through here, so they all accept the same names and fail the same way.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

CONFIG_NAME = "config.json"


class ModelNotFound(SystemExit):
    """A model name that is neither a model folder nor a reachable Hub id (one line on the command line)."""


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{p}: not found") from None
    except IsADirectoryError:
        raise ValueError(f"{p}: is a folder, expected a JSON file") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{p}:{e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: expected a JSON object, got {type(data).__name__}")
    return data


def _looks_like_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~"))


def resolve_model(name: str | os.PathLike) -> Path:
    """A local folder holding config.json, or a Hub repo id resolved to its snapshot folder."""
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / CONFIG_NAME).is_file():
            raise ModelNotFound(f"{p}: no {CONFIG_NAME} in this folder; a model folder is what "
                                f"`save_pretrained` writes (config.json, weights, tokenizer)")
        return p
    if p.exists():
        raise ModelNotFound(f"{p}: is a file; give the model's folder (the one holding {CONFIG_NAME})")
    if not _looks_like_hub_id(str(name)):
        raise ModelNotFound(f"{name}: no such folder, and not a Hub id of the form org/name")
    return _snapshot(str(name))


def _snapshot(repo_id: str) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    try:
        return Path(snapshot_download(repo_id, local_files_only=offline))
    except RepositoryNotFoundError:
        raise ModelNotFound(f"{repo_id}: no such model on the Hub (or it is private: log in with "
                            f"`huggingface-cli login`)") from None
    except LocalEntryNotFoundError:
        how = ("HF_HUB_OFFLINE is set and it is not in the local Hub cache" if offline else
               "the Hub is unreachable and it is not in the local Hub cache")
        raise ModelNotFound(f"{repo_id}: {how}; download it once with network access "
                            f"(`huggingface-cli download {repo_id}`) or pass a local folder") from None
    except (HfHubHTTPError, OSError) as e:
        raise ModelNotFound(f"{repo_id}: cannot fetch from the Hub ({type(e).__name__}: {e}); pass a local "
                            f"folder or set HF_HUB_OFFLINE=1 to use the cache") from None


def model_config(name: str | os.PathLike) -> dict[str, Any]:
    """config.json of a model folder or Hub id."""
    return read_json(resolve_model(name) / CONFIG_NAME)
