"""The typed schema: one dataclass per config group option, one field per key, with its range.

`validate_config` (validate.py) checks the composed config against these: unknown keys (a typo in a preset
or on the command line, with the nearest valid key), types (`seed=1.5`), choices and ranges. Defaults here
mirror the YAML; the YAML stays the place users read. When you add a key to a YAML file, add it here too
(tests/test_configs.py composes every option and preset and fails on a key the schema does not know)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .fields import fraction, interval, listed, num, one_of, positive, required


def _datasets():
    from ..data.readers import READERS

    return READERS


def _models():
    from ..models import MODELS

    return MODELS


# ---- paths, dataset, model, augmentation ------------------------------------------------------------
@dataclass(kw_only=True)
class PathsConfig:
    output_root: str = required()
    data_dir: str = required()
    buffer_root: str = required()
    cache_dir: str = required()


@dataclass(kw_only=True)
class DatasetConfig:
    name: str = one_of(source=_datasets)
    root: str | None = required()
    download: bool = required()
    num_classes: int = num(ge=2)
    image_size: int = num(ge=8)
    channels: Literal[1, 3] = required()
    mean: list[float] = listed()
    std: list[float] = listed()
    zca: Literal["none", "kornia", "kip"] = required()
    zca_eps: float = positive()
    zca_fit: Literal["subset", "all"] = "subset"  # fit on the images used | every train image before train_subset
    train_subset: int | None = positive(None)
    train_indices: str | None = None  # a .npy of indices into the full train set: exactly those images
    subset_seed: int = num(0, ge=0)
    val_size: float = num(0, ge=0)  # a count, or a fraction in (0, 1); 0: no validation split
    val_seed: int = num(0, ge=0)
    val_mode: Literal["held_out", "within_train"] = "held_out"  # within_train: train set whole, val for selection
    class_order: Literal["wnids", "sorted"] = "wnids"  # sorted: classes renumbered by identifier (Tiny-ImageNet)


@dataclass(kw_only=True)
class ModelConfig:
    """The ConvNet family (conf/model/convnet*.yaml). Other families below; picked by `model.name`."""

    name: str = one_of(source=_models)
    width: int = positive()
    depth: int | None = positive(None)
    norm: Literal["instancenorm", "batchnorm", "layernorm", "groupnorm", "none"] = required()
    act: Literal["relu", "sigmoid", "leakyrelu"] = required()
    pooling: Literal["avgpooling", "maxpooling", "none"] = required()


@dataclass(kw_only=True)
class ResNetModelConfig:
    name: str = one_of(source=_models)
    norm: Literal["instancenorm", "batchnorm"] = required()
    avg_pool_downsample: bool = required()
    stem: Literal["auto", "cifar", "imagenet"] = "cifar"  # auto: cifar up to 32 px, imagenet from 64 px


@dataclass(kw_only=True)
class VGGModelConfig:
    name: str = one_of(source=_models)
    norm: Literal["instancenorm", "batchnorm"] = required()


@dataclass(kw_only=True)
class AlexNetModelConfig:
    name: str = one_of(source=_models)


@dataclass(kw_only=True)
class ViTModelConfig:
    name: str = one_of(source=_models)
    patch_size: int = positive()
    dim: int = positive()
    depth: int = positive()
    heads: int = positive()
    dim_head: int = positive()
    mlp_dim: int = positive()
    dropout: float = fraction()
    emb_dropout: float = fraction()


MODEL_FAMILY_SCHEMAS = {"convnet": ModelConfig, "resnet18": ResNetModelConfig, "vgg11": VGGModelConfig,
                        "alexnet": AlexNetModelConfig, "vit": ViTModelConfig}


class _ModelSchemas(Mapping):
    """`model.name` -> its family's schema, read lazily from the model registry (models/__init__.py)."""

    def _table(self) -> dict:
        return {n: MODEL_FAMILY_SCHEMAS[spec.family] for n, spec in _models().items()}

    def __getitem__(self, name):
        return self._table()[name]

    def __iter__(self):
        return iter(self._table())

    def __len__(self) -> int:
        return len(self._table())


@dataclass(kw_only=True)
class AugmentConfig:
    """DSA (`name: dsa`) or nothing (`name: none`: the other keys are unused)."""

    name: Literal["dsa", "none"] = required()
    strategy: str = "color_crop_cutout_flip_scale_rotate"
    mode: Literal["one", "all"] = "one"
    scale: float = num(1.2, ge=1)
    rotate: float = num(15.0, ge=0, le=180)
    crop: float = fraction(0.125)
    cutout: float = fraction(0.5, closed_high=True)
    brightness: float = num(1.0, ge=0)
    saturation: float = num(2.0, ge=0)
    contrast: float = num(0.5, ge=0, le=1)
    flip: float = fraction(0.5, closed_high=True)
    align_corners: bool = True


@dataclass(kw_only=True)
class InnerAugmentConfig:
    """RaT-BPTT's own augmentation of the synthetic / real batches."""

    name: Literal["dsa", "none"] = required()
    strategy: str = "flip_rotate"
    mode: Literal["one", "all"] = "one"
    align_corners: bool = False


# ---- synthetic sets -----------------------------------------------------------------------------------
@dataclass(kw_only=True)
class PixelsConfig:
    name: Literal["pixels"] = required()
    init: Literal["real", "noise", "unit_noise"] = required()
    labels: Literal["hard", "teacher", "teacher_last", "learned"] = required()
    init_from: str | None = None
    init_from_format: Literal["tesla_podd", "mtt", "datm", "rat_bptt"] = "tesla_podd"
    init_from_space: Literal["model", "pixels"] = "model"


@dataclass(kw_only=True)
class PocoConfig:
    encoder: str = required()


@dataclass(kw_only=True)
class PosterConfig:
    name: Literal["poster"] = required()
    poster_height: int | None = positive(None)
    poster_width: int | None = positive(None)
    class_num_y: int | None = positive(None)
    class_num_x: int | None = positive(None)
    patch_num_y: int | None = positive(None)
    patch_num_x: int | None = positive(None)
    class_order: Literal["poco", "natural"] = required()
    poco: PocoConfig = field(default_factory=PocoConfig)
    labels: Literal["poddl_fixed", "poddl_learned", "hard"] = required()
    label_layout: Literal["pooled", "reference"] = "pooled"
    init: Literal["noise", "reference", "unit_noise", "gaussian", "real"] = required()


# ---- algorithms ---------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class RandomConfig:
    name: Literal["random"] = required()


@dataclass(kw_only=True)
class TrajectoryConfig:
    """MTT and TESLA (conf/algorithm/mtt.yaml; tesla.yaml inherits it)."""

    name: Literal["mtt", "tesla"] = required()
    grad_mode: Literal["unrolled", "tesla", "exact"] = required()
    iterations: int = positive()
    syn_steps: int = positive()
    expert_epochs: int = positive()
    max_start_epoch: int = positive()
    expert_order: Literal["uniform", "cycle"] = "uniform"
    batch_syn: int | None = positive(None)
    lr_img: float = positive()
    lr_lr: float = positive()
    lr_label: float = positive()
    lr_teacher: float = positive()
    momentum: float = fraction()
    learn_lr: bool = required()
    synset_grad_scale: float = positive(1.0)  # x the synthetic set's gradient (tesla.yaml: 0.5, the TESLA code's)
    synset_grad_warmup: int = num(0, ge=0)  # ramp that scale linearly over this many first iterations (0: none)
    exact_keep_every: int = num(0, ge=0)
    compile: bool = False
    compile_mode: Literal["default", "reduce-overhead", "max-autotune-no-cudagraphs"] = "default"  # CUDA only
    lanes: int | Literal["auto"] = positive("auto")  # tesla: both passes side by side; auto: CPU threads


@dataclass(kw_only=True)
class RatBPTTConfig:
    name: Literal["rat_bptt"] = required()
    iterations: int = positive()
    window: int = positive()
    min_window: int | None = positive(None)
    total_window: int = positive()
    window_redraw: Literal["epoch", "step"] = "epoch"
    inner_lr: float = positive()
    inner_optim: Literal["adam", "sgd"] = required()
    batch_syn: int | None = positive(None)
    batch_sampling: Literal["uniform", "per_class"] = "uniform"  # per_class: the reference's subsample
    batch_real: int = positive()
    lr_img: float = positive()
    lr_label: float = positive()
    clip_coef: float = positive()
    ema_decay: float = fraction()
    syn_augment: InnerAugmentConfig = field(default_factory=lambda: InnerAugmentConfig(name="dsa"))
    real_augment: InnerAugmentConfig = field(default_factory=lambda: InnerAugmentConfig(name="dsa"))


# ---- stages -------------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class BufferConfig:
    num_experts: int = positive()
    train_epochs: int = positive()
    lr_teacher: float = positive()
    momentum: float = fraction()
    weight_decay: float = num(ge=0)
    batch_size: int = positive()
    augment: bool = required()
    experts: list[int] | None = None  # [start, stop) of the experts this job builds; null: all
    worker: int = num(0, ge=0)
    num_workers: int = positive(1)
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    keep_epochs: int | None = positive(None)
    repair: bool = False
    preload: Literal["auto", "cpu", "device"] = "auto"  # where distillation keeps the expert epochs it reaches
    amp: Literal["none", "bf16"] = required()
    channels_last: bool = False  # NHWC expert convs (speed only)
    compile: bool = False  # torch.compile the expert network (speed only)
    seed: int = num(ge=0)
    dir: str | None = None
    import_from: str | list[str] | None = None  # MTT/TESLA replay_buffer_*.pt folder or files: import, don't train


@dataclass(kw_only=True)
class DistillConfig:
    log_every: int = positive()
    checkpoint_every: int = interval()
    image_every: int = interval()
    eval_every: int = interval()
    select_every: int | None = interval(0)  # full evaluations over checkpoints (stages/selection.py); 0/None: off
    select_keep_sets: bool = False  # keep the checkpoint sets after eval.json is written
    eval_at_start: bool = required()
    snapshot_every: int = interval()
    average_decay: float = fraction()
    eval_models: int = positive()
    eval_epochs: int = positive()
    lr_schedule: Literal["constant", "cosine"] = required()


@dataclass(kw_only=True)
class SynsetImportConfig:
    """eval.synset_import: reading another code's set (tesla_podd/synset/interop.py)."""

    space: Literal["model", "pixels"] = "model"
    zca_from: str | None = None
    lr: float | None = positive(None)
    softmax_labels: bool = False
    check: bool = True
    class_grid: list[int] | None = None
    patch_grid: list[int] | None = None
    order: list[int] | None = None


@dataclass(kw_only=True)
class DDRankingConfig:
    """eval.ddranking: DD-Ranking's scores (tesla_podd/evaluation/ddranking.py)."""

    enabled: bool = False
    weight: float = fraction(0.5, closed_high=True)
    real_acc: float | None = num(None, ge=0, le=100)
    real_epochs: int = positive(20)
    real_models: int = positive(1)
    temperature: float = positive(1.0)


@dataclass(kw_only=True)
class EvalConfig:
    """conf/eval/*.yaml (tesla_podd/evaluation/)."""

    num_models: int = positive()
    models: list[str] | None = None  # architecture names (tesla_podd.models); None: the distillation's model
    length_unit: Literal["epoch", "step"] = required()
    epochs: int = positive()
    steps: int = positive()
    eval_at: list[int] = listed()  # extra lengths where accuracies are measured (>= 1)
    train_measure: int | Literal["all"] = num(0, ge=0)  # real train images measured per length (PoDD rule)
    schedule: Literal["mtt", "half", "constant"] = required()
    batch_size: int | None = positive(None)  # None: the whole set
    optimizer: Literal["sgd", "adam"] = required()
    lr: float | Literal["learned"] = positive()
    lr_by_model: dict[str, float] | None = field(default=None, metadata={"bounds": {"gt": 0}})  # {arch: lr}
    batch_sampling: Literal["uniform", "per_class"] = "uniform"  # step unit: RaT-BPTT draws per class
    fallback_lr: float = positive()
    momentum: float = fraction()
    weight_decay: float = num(ge=0)
    augment: bool = required()
    batched: bool | Literal["auto"] = required()  # auto: stacked on CUDA only
    lanes: int | Literal["auto"] = positive("auto")  # CPU networks side by side, one thread each; auto: the threads
    synset_path: str | None = None
    synset_format: Literal["tesla_podd", "mtt", "datm", "rat_bptt", "podd"] = "tesla_podd"
    synset_import: SynsetImportConfig = field(default_factory=SynsetImportConfig)
    ddranking: DDRankingConfig = field(default_factory=DDRankingConfig)
    output_dir: str | None = None
    units: list[int] | None = None  # [start, stop) of the evaluation units this job runs; None: all
    merge: bool = required()


@dataclass(kw_only=True)
class WandbConfig:
    mode: Literal["online", "offline", "disabled"] = required()
    project: str = required()
    entity: str | None = None
    group: str | None = None
    name: str | None = None
    tags: list[str] = listed()


# ---- the whole run ------------------------------------------------------------------------------------
@dataclass(kw_only=True)
class RunConfig:
    ipc: float = positive()
    seed: int = num(ge=0)
    stages: list[Literal["buffer", "distill", "eval"]] = listed()
    device: str = required()
    precision: Literal["tf32", "fp32"] = "tf32"  # CUDA float32 matmuls/convolutions: TF32 tensor cores or full fp32
    deterministic: bool = False  # deterministic kernels (CUDA bit-exact resume; slower)
    num_threads: int | None = positive(None)
    resume: bool | Literal["auto"] = required()
    resume_dir: str | None = None
    run_name: str = required()
    objective: Literal["eval/acc_mean", "eval/val_mean"] = "eval/acc_mean"  # returned to a Hydra sweeper
    sweep_name: str | None = None  # a multirun's folder under outputs/multirun/ (null: the launch time)
    paths: PathsConfig = required()
    dataset: DatasetConfig = required()
    model: Any = required()  # by model.name's family: MODEL_SCHEMAS
    augment: AugmentConfig = required()
    synset: Any = required()  # by synset.name: SYNSET_SCHEMAS
    algorithm: Any = required()  # by algorithm.name: ALGORITHM_SCHEMAS
    buffer: BufferConfig = required()
    distill: DistillConfig = required()
    eval: EvalConfig = required()
    wandb: WandbConfig = required()


# Nodes whose schema depends on the option picked (the `name` key).
SYNSET_SCHEMAS = {"pixels": PixelsConfig, "poster": PosterConfig}
ALGORITHM_SCHEMAS = {"random": RandomConfig, "mtt": TrajectoryConfig, "tesla": TrajectoryConfig,
                     "rat_bptt": RatBPTTConfig}
MODEL_SCHEMAS = _ModelSchemas()
BY_NAME = {"synset": SYNSET_SCHEMAS, "algorithm": ALGORITHM_SCHEMAS, "model": MODEL_SCHEMAS}
