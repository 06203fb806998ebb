"""Published weights from the Hugging Face Hub, through huggingface_hub's own cache.

huggingface_hub is optional (``pip install 'stmsearch[hub]'``). The cache is where
``HF_HOME`` / ``HF_HUB_CACHE`` say; with ``HF_HUB_OFFLINE=1`` only cached files are used.
A downloaded file is an ordinary checkpoint: it still goes through the weights-only loader.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .checkpoint import CheckpointError


@dataclass(frozen=True)
class HubFile:
    """One file of a Hub model repository."""

    repo_id: str
    filename: str

    def __str__(self) -> str:
        return f"{self.repo_id}/{self.filename}"

    @property
    def how_to_get(self) -> str:
        return f"fetch it with `hf download {self.repo_id} {self.filename}` or pass checkpoint=PATH"


def hub_download(file: HubFile) -> Path:
    """The local path of ``file``: from the cache, downloading it first when the Hub is reachable."""
    try:
        import huggingface_hub
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ImportError:
        raise CheckpointError(f"loading {file} needs huggingface_hub: pip install 'stmsearch[hub]' "
                              f"(or pass checkpoint=PATH)") from None
    try:
        return Path(huggingface_hub.hf_hub_download(file.repo_id, file.filename))
    except LocalEntryNotFoundError:
        raise CheckpointError(f"{file}: not in the Hugging Face cache and the Hub cannot be reached "
                              f"(offline?); {file.how_to_get}") from None
    except Exception as exc:  # unknown repository or file, HTTP errors: name what was asked for
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CheckpointError(f"{file}: could not be fetched from the Hugging Face Hub "
                              f"({type(exc).__name__}: {first}); {file.how_to_get}") from None
