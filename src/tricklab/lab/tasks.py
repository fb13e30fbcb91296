"""Benchmark tasks, registered by name: a data set, a default model, a kind (and so the loss and the declared
metrics), or a loop of their own.

Two kinds of task object live in :data:`TASKS`:

* :class:`Task`: trained by the lab's supervised trainer. Its ``kind`` (see :mod:`tricklab.lab.kinds`) fixes
  the loss and the metrics; ``kind="auto"`` (the ``files`` task) reads it from the loaded data's
  ``meta["target_kind"]``.
* :class:`LoopTask`: brings its own run loop (reinforcement learning, federated rounds, few-shot episodes) and
  declares its metrics; the lab seeds it, calls it, and records what it returns in the same store, report and
  cards as any trained run (see ``docs/task-kinds.md`` for the worked example).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from tricklab.data import DATASETS
from tricklab.compress.lottery import LOTTERY_METRICS, LotteryConfig, run_lottery
from tricklab.errors import ConfigError, TrainingError
from tricklab.lab.bandit import BANDIT_METRICS, BanditConfig, run_bandit
from tricklab.lab.kinds import (
    IGNORE_INDEX,
    KINDS,
    classification_metric_fn,
    scored_positions,
    token_cross_entropy,
)
from tricklab.lab.metrics import MetricInfo, as_metric_info
from tricklab.lab.recipe import build_dataclass
from tricklab.models.vision.detr_task import DETECTION_METRICS, DetrConfig, run_detr
from tricklab.registry import Registry
from tricklab.paradigms.generative.bert_variants import BertVariantConfig, run_bert_variant
from tricklab.paradigms.generative.clip import CLIPConfig, run_clip
from tricklab.paradigms.generative.metrics import (
    BERT_VARIANT_METRICS,
    CLIP_METRICS,
    GAN_METRICS,
    REALNVP_METRICS,
    VAE_METRICS,
    WORD2VEC_METRICS,
)
from tricklab.paradigms.generative.paradigm import GANConfig, RealNVPConfig, VAEConfig, run_gan, run_realnvp, run_vae
from tricklab.paradigms.generative.word2vec import Word2VecConfig, run_word2vec
from tricklab.paradigms.continual.run import CONTINUAL_METRICS, ContinualConfig, run_continual
from tricklab.paradigms.federated.run import FEDERATED_METRICS, FederatedConfig, run_federated
from tricklab.paradigms.meta.run import META_METRICS, MetaConfig, run_meta
from tricklab.paradigms.nas.ofa_run import OFA_METRICS, OfaConfig, run_ofa
from tricklab.paradigms.nas.run import NAS_METRICS, NasConfig, run_nas
from tricklab.paradigms.nas.proxyless_run import PROXYLESS_METRICS, ProxylessConfig, run_proxyless
from tricklab.rl.alphazero import AlphaZeroConfig, run_alphazero
from tricklab.rl.metrics import ALPHAZERO_METRICS, EPISODE_METRICS, PREFERENCE_METRICS
from tricklab.rl.ppo import PPOConfig, run_ppo
from tricklab.rl.preferences import PreferenceConfig, run_preferences
from tricklab.rl.rainbow import RainbowConfig, run_rainbow
from tricklab.rl.sac import SACConfig, run_sac
from tricklab.paradigms.domain.run import DANN_METRICS, DannConfig, run_dann
from tricklab.paradigms.fewshot.run import FEWSHOT_METRICS, FewShotConfig, run_fewshot
from tricklab.paradigms.pretrain.run import GREEDY_METRICS, GreedyConfig, run_greedy
from tricklab.paradigms.selfsup.run import SELFSUP_METRICS, SelfSupConfig, run_selfsup
from tricklab.paradigms.semisup.run import SEMISUP_METRICS, SemiSupConfig, run_semisup
from tricklab.transfer.metrics import TRANSFER_METRICS
from tricklab.transfer.run_transfer import TransferConfig, run_transfer
from tricklab.uncertainty.metrics import LABEL_NOISE_METRICS, UNCERTAINTY_METRICS
from tricklab.uncertainty.paradigm import LabelNoiseConfig, UncertaintyConfig, run_label_noise, run_uncertainty

if TYPE_CHECKING:
    from tricklab.lab.recipe import Recipe

__all__ = ["IGNORE_INDEX", "TASKS", "LoopResult", "LoopTask", "Progress", "Task", "loop_result", "scored_positions",
           "token_cross_entropy"]

#: what a loop reports progress with: one dict per call, e.g. {"step": 100, "seconds": 2.1, "return": 35.0}
Progress = Callable[[dict[str, Any]], None]


@dataclass(frozen=True)
class Task:
    """A task the supervised trainer runs, over one registered data set.

    ``kind="classification"``: one label per example, logits (B, C). ``kind="token"``: one label per position
    (language modelling, sequence tasks), logits (B, T, V) against targets (B, T) where IGNORE_INDEX marks
    positions without a target; metrics are computed over the scored positions, plus bits per token
    (``bpc`` = nll / ln 2, bits per character for a character vocabulary). ``binary``, ``multilabel``,
    ``regression``: see :mod:`tricklab.lab.kinds`; ``auto``: the kind the data's targets call for.
    ``metrics`` replaces the kind's declared metrics (None keeps them).
    """

    name: str
    dataset: str
    default_model: str
    summary: str
    dataset_args: dict[str, Any] = field(default_factory=dict)
    kind: str = "classification"
    #: language models: a prompt to sample a continuation from at the end of each run (kept in its summary)
    sample_prompt: str | None = None
    metrics: tuple[MetricInfo, ...] | None = None

    def __post_init__(self) -> None:
        if self.kind != "auto" and self.kind not in KINDS:
            raise ValueError(f"task {self.name!r}: kind must be 'auto' or one of {sorted(KINDS)}, got {self.kind!r}")

    @property
    def loss(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return token_cross_entropy if self.kind == "token" else F.cross_entropy

    def metric_fn(self, num_classes: int) -> Callable[[torch.Tensor, torch.Tensor], dict[str, Any]]:
        return classification_metric_fn(self.kind == "token", num_classes)

    def declared_metrics(self, kind: str | None = None) -> tuple[MetricInfo, ...]:
        """The metrics a run of this task declares when it trains as ``kind`` (default its own)."""
        if self.metrics is not None:
            return self.metrics
        return KINDS[kind or self.kind].metrics


# ---------------------------------------------------------------------------------------------- own loops
@dataclass
class LoopResult:
    """What a loop task's run returned, normalised: ``metrics`` (final values, keyed as declared),
    ``history`` (rows with an integer ``step``, ``seconds`` and metric values, for learning curves),
    ``extras`` (JSON-able things to keep), optionally the trained ``model`` (its size is measured and its
    weights saved), the training seconds and the step count."""

    metrics: dict[str, float | None]
    history: list[dict[str, Any]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = None
    train_seconds: float | None = None
    steps: int | None = None


def loop_result(obj: Any) -> LoopResult:
    """A :class:`LoopResult` from what a loop returned: a LoopResult, any object with ``metrics``,
    ``history`` and ``extras`` attributes (a paradigm's ``ParadigmResult``; ``model``, ``train_seconds`` and
    ``steps`` are read when present), or a plain mapping of final metrics."""
    if isinstance(obj, LoopResult):
        return obj
    if isinstance(obj, Mapping):
        return LoopResult(dict(obj))
    if not hasattr(obj, "metrics"):
        raise TypeError(f"a loop must return its metrics (a LoopResult, a result with .metrics/.history/.extras "
                        f"or a dict), got {type(obj).__name__}")
    return LoopResult(dict(obj.metrics), list(getattr(obj, "history", None) or []),
                      dict(getattr(obj, "extras", None) or {}), getattr(obj, "model", None),
                      getattr(obj, "train_seconds", None), getattr(obj, "steps", None))


@dataclass(frozen=True)
class LoopTask:
    """A task with its own run loop.

    ``loop(config, *, seed, run_dir, progress[, resume]) -> result`` is called once per run, after the lab
    has seeded every RNG with ``seed`` and set the thread count. ``config`` is an instance of ``config`` (a
    dataclass validated in its ``__post_init__``) built from the recipe's ``task_args``; with ``config=None``
    the loop gets the whole :class:`~tricklab.lab.recipe.Recipe` instead (a loop that uses the recipe's model,
    optimizer, techniques or budget). ``run_dir`` is the run's folder (checkpoints go in
    ``run_dir/checkpoints``); ``progress(row)`` reports a history row as it happens. The result is anything
    :func:`loop_result` accepts; every declared metric of source ``test`` must be in its ``metrics``.
    ``metrics`` may be ``MetricInfo`` objects or a paradigm's ``MetricSpec`` list (converted by
    :func:`~tricklab.lab.metrics.as_metric_info`). ``resumable=True`` passes ``resume`` (``tricklab run
    --resume``) to the loop.
    """

    name: str
    summary: str
    loop: Callable[..., Any]
    metrics: tuple[MetricInfo, ...]
    config: type | None = None
    kind: str = "loop"
    resumable: bool = False

    def __post_init__(self) -> None:
        # a paradigm's MetricSpec list (tricklab.evaluate.declared) is taken as is
        object.__setattr__(self, "metrics", tuple(as_metric_info(m) for m in self.metrics))
        if not self.metrics:
            raise ValueError(f"loop task {self.name!r} declares no metric")

    def make_config(self, recipe: Recipe) -> Any:
        """The loop's configuration from the recipe's ``task_args`` (or the recipe itself when ``config`` is
        None); a bad key or value is a ConfigError naming it."""
        args = dict(recipe.task_args)
        kind = args.pop("kind", "loop")
        if kind != "loop":
            raise ConfigError(f"task {self.name!r} runs its own loop; task_args.kind must be 'loop' or absent, "
                              f"got {kind!r}")
        if self.config is None:
            if args:
                raise ConfigError(f"task {self.name!r} takes the recipe itself; task_args {sorted(args)} apply to "
                                  f"nothing")
            return recipe
        return build_dataclass(self.config, args, "task_args")

    def run(self, recipe: Recipe, *, seed: int, run_dir: Path, progress: Progress,
            resume: bool = False) -> LoopResult:
        """Call the loop for one run and check what it returned against the declared metrics."""
        kwargs: dict[str, Any] = {"seed": seed, "run_dir": run_dir, "progress": progress}
        if self.resumable:
            kwargs["resume"] = resume
        elif resume:
            raise ConfigError(f"task {self.name!r} cannot resume a run; start it again without --resume")
        config = self.make_config(recipe)
        start = time.perf_counter()
        result = loop_result(self.loop(config, **kwargs))
        # numpy / torch scalars as Python numbers: the store and the analysis read plain floats
        result.metrics = {k: v.item() if hasattr(v, "item") else v for k, v in result.metrics.items()}
        if result.train_seconds is None:
            result.train_seconds = time.perf_counter() - start
        missing = [m.name for m in self.metrics
                   if m.source == "test" and not m.optional and m.name not in result.metrics]
        if missing:
            raise TrainingError(f"task {self.name!r}: its loop returned no value for the declared metric(s) "
                                f"{missing}; it returned {sorted(result.metrics)}")
        bad = [i for i, row in enumerate(result.history) if not isinstance(row.get("step"), int)]
        if bad:
            raise TrainingError(f"task {self.name!r}: history row {bad[0]} has no integer 'step'")
        return result


def _check_task(name: str, obj: Any) -> Task | LoopTask:
    """A task from a plugin (entry point group ``tricklab.tasks``) or a ``module:attribute`` reference."""
    if not isinstance(obj, (Task, LoopTask)):
        raise ConfigError(f"task {name!r} is a {type(obj).__name__}; a task is a tricklab.lab.tasks.Task or "
                          f"LoopTask instance (docs/plugins.md)")
    return obj


def _dataset_task(name: str) -> Task | None:
    """A data set with no task of its own (one an installed package registers in ``tricklab.datasets``) is a
    task of the same name: an MLP by default, the kind its targets call for (``auto``)."""
    if name not in DATASETS:
        return None
    return Task(name, name, "mlp", DATASETS.summary(name), kind="auto")


TASKS: Registry[Task | LoopTask] = Registry("task", check=_check_task, fallback=_dataset_task)
for _t in (
    Task("mnist1d", "mnist1d", "cnn", "MNIST-1D (Greydanus 2020), 4000/1000, 10 classes, length 40"),
    Task("mnist1d-shuffled", "mnist1d-shuffled", "mlp", "MNIST-1D with the spatial order permuted"),
    Task("digits", "digits", "cnn2d", "scikit-learn 8x8 digits, 10 classes"),
    Task("fashion-mnist", "fashion-mnist", "cnn2d", "Fashion-MNIST 28x28, 60000/10000, 10 classes"),
    Task("wine", "wine", "mlp", "scikit-learn wine, 13 features, 3 classes"),
    Task("breast-cancer", "breast-cancer", "mlp", "scikit-learn breast cancer, 30 features, 2 classes"),
    Task("cora", "cora", "gcn", "Cora citation graph, node classification, standard split 140/500/1000"),
    Task("planetoid", "planetoid", "gcn", "any Planetoid folder (--data-dir DIR, data.args.dataset=citeseer...)"),
    Task("karate", "karate", "gcn", "Zachary's karate club (networkx), node classification"),
    Task("synthetic-graphs", "synthetic-graphs", "gcn_graph",
         "code-made graph classification: cycles, stars, trees, random graphs"),
    Task("shakespeare-char", "shakespeare-char", "gpt",
         "character-level language model on Shakespeare's plays; held-out last 10%, bits per character",
         kind="token", sample_prompt="ROMEO.\n"),
    Task("shakespeare-mlm", "shakespeare-mlm", "bert", "BERT masked-character pretraining on Shakespeare",
         kind="token"),
    Task("shakespeare-plays", "shakespeare-plays", "bert_classifier",
         "which play a 128-character passage comes from (8 plays; passages from disjoint parts of each play)"),
    Task("selective-copying", "selective-copying", "mamba_lm",
         "Mamba paper's selective copying: recall the data tokens scattered among noise, in order", kind="token"),
    Task("seq-reverse", "seq-reverse", "seq2seq_rnn",
         "toy seq2seq: reverse 8..12 random digits (encoder-decoder RNN with attention), teacher-forced tokens",
         kind="token"),
    Task("seq-sort", "seq-sort", "seq2seq_rnn",
         "toy seq2seq: sort 8..12 random digits (encoder-decoder RNN with attention), teacher-forced tokens",
         kind="token"),
    Task("induction-heads", "induction-heads", "mamba_lm",
         "Mamba paper's induction heads: after the trigger token again, recall the token that followed it",
         kind="token"),
    Task("files", "files", "mlp",
         "your own data from files (data: {format: csv, path: ..., target: ...}); the kind follows the targets "
         "(classification, binary, multilabel, regression) or task_args.kind", kind="auto"),
    LoopTask("bandit", "10-armed bandit testbed (Sutton & Barto 2018, sec. 2.3), epsilon-greedy, its own loop: "
             "the worked example of a loop task", run_bandit, BANDIT_METRICS, BanditConfig),
    LoopTask("mnist1d-uncertainty", "MNIST-1D with OOD detection against shuffled MNIST-1D: one uncertainty "
             "method (task_args.method: plain, mc_dropout, ensemble, bayes_by_backprop, sngp) with calibration; "
             "docs/uncertainty/", run_uncertainty,
             # mutual information needs several predictive samples: a plain network has none
             tuple(dataclasses.replace(as_metric_info(m), optional=True) if m.key == "ood_auroc_mi"
                   else m for m in UNCERTAINTY_METRICS), UncertaintyConfig),
    LoopTask("mnist1d-label-noise", "MNIST-1D with a fraction of the training labels flipped (task_args.noise, "
             "noise_fraction): one technique (task_args.technique: plain, co_teaching, bootstrap, gce); "
             "docs/uncertainty/", run_label_noise, LABEL_NOISE_METRICS, LabelNoiseConfig),
    LoopTask("fashion-mnist-vae", "VAE on 8-bit Fashion-MNIST (task_args.decoder: logistic or bernoulli, beta); "
             "test bits/dim by the IWAE bound; docs/generative/vae.md", run_vae, VAE_METRICS, VAEConfig),
    LoopTask("fashion-mnist-realnvp", "RealNVP on dequantized 8-bit Fashion-MNIST, test bits/dim; "
             "docs/generative/realnvp.md", run_realnvp, REALNVP_METRICS, RealNVPConfig),
    LoopTask("fashion-mnist-gan", "DCGAN-small, Frechet distance (ours) in our CNN's features with real and noise "
             "references; docs/generative/gan.md", run_gan, GAN_METRICS, GANConfig),
    LoopTask("fashion-mnist-clip", "CLIP-style image-text model, captions made by code: zero-shot accuracy, linear "
             "probe, recall@k; docs/generative/clip.md", run_clip, CLIP_METRICS, CLIPConfig),
    LoopTask("shakespeare-word2vec", "word2vec (task_args: model skipgram|cbow, objective negative|hs) on a text "
             "file (default shakespeare.txt): WordSim-353, SimLex-999, analogies; docs/generative/word2vec.md",
             run_word2vec, WORD2VEC_METRICS, Word2VecConfig),
    LoopTask("shakespeare-bert-variants", "masked-LM pre-training on Shakespeare then plays fine-tuning, one "
             "variant (task_args.variant: bert, roberta, albert, distilbert); docs/generative/albert.md etc.",
             run_bert_variant, BERT_VARIANT_METRICS, BertVariantConfig),
    LoopTask("mnist1d-lottery", "lottery tickets: iterative magnitude pruning with rewinding to step k against "
             "random re-init and random masks, one row per round (task_args: rounds, prune_fraction, scope, "
             "rewind_step, steps, model, model_args); docs/compress/lottery.md", run_lottery, LOTTERY_METRICS,
             LotteryConfig),
    LoopTask("fashion-collage-detr", "Fashion-MNIST items pasted on a 64 px canvas (boxes exact): DETR, COCO-style "
             "mAP; docs/detection.md", run_detr, DETECTION_METRICS, DetrConfig, resumable=True),
    LoopTask("selfsup", "self-supervised pretraining (task_args.method: simclr, moco, byol, random, supervised; "
             "dataset: mnist1d or fashion-mnist), linear probe and k-NN; docs/paradigms/simclr.md", run_selfsup,
             SELFSUP_METRICS, SelfSupConfig),
    LoopTask("semisup", "k labels per class (task_args.labels_per_class), the rest unlabelled; task_args.method: "
             "labelled_only, pseudo_label, pi_model, mean_teacher, fixmatch; docs/paradigms/semi-supervised.md",
             run_semisup,
             # no pseudo-label passes the threshold in some runs: its accuracy is then undefined
             tuple(dataclasses.replace(as_metric_info(m), optional=True) if m.key == "pseudo_label_acc" else m
                   for m in SEMISUP_METRICS), SemiSupConfig),
    LoopTask("transfer-new-classes", "backbone pretrained on 5 classes, transferred to 5 others with few labels: "
             "scratch, linear probe, fine-tuning, gradual unfreezing, adapters, LoRA (task_args.backbone_run: "
             "start from a saved run); docs/transfer/", run_transfer, TRANSFER_METRICS,
             TransferConfig),
    LoopTask("domain-adaptation", "source-only, DANN or self-training (task_args.method) on a domain pair "
             "(task_args.pair); docs/paradigms/dann.md", run_dann, DANN_METRICS, DannConfig),
    LoopTask("fewshot", "siamese network, N-way K-shot on unseen classes and ESZSL zero-shot; "
             "docs/paradigms/one-shot.md",
             run_fewshot,
             # the wide (e.g. 20-way) episodes are scored only when task_args.n_way_wide is set
             tuple(dataclasses.replace(as_metric_info(m), optional=True) if m.key.startswith("wide_") else m
                   for m in FEWSHOT_METRICS), FewShotConfig),
    LoopTask("greedy-pretraining", "deep sigmoid MLP from random init or greedy autoencoder/denoising/RBM "
             "pretraining (task_args.method); docs/paradigms/greedy-pretraining.md", run_greedy, GREEDY_METRICS,
             GreedyConfig),
    LoopTask("rl-ppo", "PPO on a gymnasium env (task_args.env_id, default CartPole-v1), SB3's defaults; docs/rl/",
             run_ppo, EPISODE_METRICS, PPOConfig, resumable=True),
    LoopTask("rl-sac", "SAC on a continuous gymnasium env (default Pendulum-v1), SB3's defaults; docs/rl/",
             run_sac, EPISODE_METRICS, SACConfig, resumable=True),
    LoopTask("rl-rainbow", "Rainbow DQN with switchable components (default CartPole-v1); docs/rl/",
             run_rainbow, EPISODE_METRICS, RainbowConfig, resumable=True),
    LoopTask("rl-alphazero", "AlphaZero self-play (connect4 or tictactoe), scored against minimax; docs/rl/",
             run_alphazero, ALPHAZERO_METRICS, AlphaZeroConfig, resumable=True),
    LoopTask("rl-preferences", "PPO on a Bradley-Terry reward learned from synthetic preferences (CartPole-v1); "
             "docs/rl/", run_preferences, PREFERENCE_METRICS, PreferenceConfig, resumable=True),
    LoopTask("mnist1d-meta", "N-way K-shot meta-learning on MNIST-1D, held-out classes (task_args.method: maml, "
             "fomaml, reptile, protonets); docs/paradigms/", run_meta, META_METRICS, MetaConfig),
    LoopTask("mnist1d-continual", "continual learning on split / permuted MNIST-1D (fine-tuning, EWC, replay, "
             "progressive nets); docs/paradigms/", run_continual, CONTINUAL_METRICS, ContinualConfig),
    LoopTask("mnist1d-federated", "FedAvg / FedProx on MNIST-1D clients (IID or Dirichlet) on Flower (simulation; "
             "SecAgg+, client- or sample-level DP); docs/paradigms/flower.md", run_federated, FEDERATED_METRICS,
             FederatedConfig),
    LoopTask("mnist1d-darts", "DARTS cell search on MNIST-1D against an equal-cost random cell; docs/paradigms/",
             run_nas, NAS_METRICS, NasConfig),
    LoopTask("mnist1d-ofa", "once-for-all supernet on MNIST-1D, a sub-network under a latency budget (use "
             "task_args.latency_model: macs for repeatable runs); docs/paradigms/", run_ofa, OFA_METRICS, OfaConfig),
    LoopTask("mnist1d-proxyless", "ProxylessNAS cell search on MNIST-1D (binarized paths, CPU latency table) against "
             "an equal-latency random cell; docs/paradigms/proxyless.md", run_proxyless, PROXYLESS_METRICS,
             ProxylessConfig),
):
    TASKS.register(_t.name, _t, summary=_t.summary)
