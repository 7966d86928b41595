"""The fine-tuning worker under Ray Train: ``train_fn_per_worker`` (one DDP rank) reads its ``WorkerConfig`` and runs a
``FineTuneRun``, as a study trial and ``study train`` both run it (``study.train.pipeline`` builds the trainer).

Zero-shot protocol: the English dev set is the only signal for checkpoint selection (and for Tune); target-language
test sets are evaluated at the same points and reported, never used to choose anything.

Determinism and resume: the data order comes from a seeded ``DistributedSampler`` (epoch-dependent) and every
micro-batch re-seeds the torch generator from (seed, rank, epoch, batch), so a run restored from a checkpoint
continues at the same step with the same batches and the same dropout draws as a run that never stopped.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import tempfile
import time

import torch

from study.core.errors import StudyError
from study.core.faults import FaultHooks
from study.core.flops import ModelShape
from study.core.protocol import (
    ALIGNMENT_EMBEDDINGS_ARTIFACT,
    ALIGNMENT_METRICS,
    ALIGNMENT_UNITS,
    ENGLISH_DEV,
    EVAL_SUBSET_SEED,
    EXAMPLES_ARTIFACT,
    TOTAL_STEPS_KEY,
    evaluation_metrics,
    improves,
    selection_key,
    target_average_key,
)
from study.train.checkpoints import Progress, load_train_state, save_train_state
from study.train.config import TrainConfig
from study.train.throughput import count_batch, device_peak, new_counts, throughput_metrics, torch_settings


class FineTuneRun:
    """One worker's view of a fine-tuning run, independent of how it is launched (Ray Train, a test, a benchmark):
    construction builds it (data pairs, model, optimizer, schedule), ``restore`` resumes from a checkpoint,
    ``train(report)`` runs it, calling ``report(metrics, checkpoint_dir)`` at every evaluation, and
    ``save_checkpoint`` writes what ``restore`` reads."""

    alignment = None  # the last evaluation's alignment probe (``alignment_probe.ProbeReport``), when it is on

    def __init__(self, cfg: TrainConfig, rank: int, world: int, device: torch.device, run_name: str = "local",
                 started: float | None = None, outbox: str | None = None, faults: FaultHooks | None = None):
        self.cfg, self.rank, self.world, self.device, self.run_name = cfg, rank, world, device, run_name
        self.outbox = outbox  # where rank 0 leaves the selected evaluation's records (None: nowhere)
        self.faults = faults or FaultHooks()  # the tests' fault injection: a no-op unless a test sets it
        self.started = started or time.time()
        self._setup_data()
        self._setup_model()
        self._setup_optimizer()
        self.progress = Progress()
        self.resumed_from_step = 0  # the checkpoint's step when this worker group restored one (after a failure)
        self.bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        self.peak = device_peak(device, self.bf16)  # MFU's denominator (None on a CPU)

    def _setup_data(self) -> None:
        """The task, the tokenizer, the English training pairs (x, x~), the English dev subset, and every target test
        set read once (hub data included: ``--data-dir`` files are parsed before Ray starts)."""
        from study.data.augment import load_synonyms
        from study.data.pairs import build_pairs
        from study.data.sources import load_split, subsample
        from study.data.tasks import get_task
        from study.models.registry import get_spec, load_tokenizer

        cfg = self.cfg
        self.task, self.spec = get_task(cfg.task), get_spec(cfg.model)
        self.tokenizer = load_tokenizer(self.spec)
        records = subsample(load_split(self.task, "train", "en", cfg.data_dir), cfg.max_train_examples, cfg.seed)
        synonyms = load_synonyms(cfg.synonyms, cfg.synonym_matching)
        self.pairs, self.data_stats = build_pairs(self.task, records, synonyms, self.tokenizer, k=cfg.k_copies,
                                                  seed=cfg.seed, max_length=cfg.max_length)
        self.dev = subsample(load_split(self.task, "dev", "en", cfg.data_dir), cfg.max_eval_examples,
                             EVAL_SUBSET_SEED)
        self.languages = cfg.languages or self.task.languages
        for language in self.languages:  # every test set is read now, so a bad file stops the run before step 1
            load_split(self.task, "test", language, cfg.data_dir)

    def _setup_model(self) -> None:
        """The encoder with the task's head (seeded), the trimmed vocabulary of the fast step, the attention
        capture for Attention-Pull and, on rank 0, the alignment probe."""
        from study.data.tasks import QA
        from study.models.registry import checkpoint_task, load_model
        from study.vme.capture import VMECapture

        cfg = self.cfg
        torch.manual_seed(cfg.seed)  # the head's initialisation
        # an intermediate encoder gets a fresh head; a checkpoint with this task's head kind keeps it (XCOPA goes on
        # from the Social IQa model, as XTREME's scripts/train_xcopa.sh does)
        self.model = load_model(self.spec, self.task.head, num_labels=max(len(self.task.labels), 2),
                                path=cfg.init_checkpoint).to(self.device)
        self.init_task = checkpoint_task(cfg.init_checkpoint) if cfg.init_checkpoint else None
        self.reference = cfg.implementation == "reference"
        if self.reference:  # the authors' way: every layer eager, so that it can return its attention map
            self.model.set_attn_implementation("eager")
        elif cfg.weight_decay == 0:  # exact only without weight decay (it would move rows that get no gradient)
            from study.vme.trim import trim_vocabulary, used_token_ids

            trim_vocabulary(self.model, used_token_ids((p[s]["input_ids"] for p in self.pairs for s in ("x", "xt")),
                                                       self.tokenizer))
        # ap_padding=max_length: the reference pads every input to max_length, as the released code does; the fast
        # path runs the batch's own length and adds the rows padding would add to Attention-Pull's maps (exact, see
        # study/vme/capture.py), except where a head reads every position (QA's start/end softmax), which pads too
        self.ap_length = cfg.max_length if cfg.ap_padding == "max_length" else None
        self.pad_to = self.ap_length if self.reference or self.task.kind == QA else None
        self.capture = VMECapture(self.model, cfg.ap_layer, padded_rows=self.ap_length is not None
                                  and cfg.ap_mask == "none") if cfg.objective == "vme" and not self.reference else None
        self.probe = None  # the alignment probe: only the rank that evaluates runs it
        if cfg.alignment_probe and self.rank == 0:
            from study.evaluation.probe import RunProbe

            self.probe = RunProbe(cfg, self.task, self.spec, self.tokenizer, self.model.config.num_hidden_layers,
                                  self.device)

    def _setup_optimizer(self) -> None:
        """The seeded data order, the batches, the step budget, AdamW with its linear schedule, and DDP."""
        from transformers import get_linear_schedule_with_warmup

        from study.data.pairs import collate_pairs
        from study.vme.engine import make_optimizer

        cfg = self.cfg
        self.grad_accum = cfg.accumulation(self.world)  # global_batch: the same examples per step at any world size
        self.sampler = torch.utils.data.DistributedSampler(self.pairs, num_replicas=self.world, rank=self.rank,
                                                           shuffle=True, seed=cfg.seed, drop_last=self.world > 1)
        self.loader = torch.utils.data.DataLoader(self.pairs, batch_size=cfg.batch_size, sampler=self.sampler,
                                                  collate_fn=collate_pairs(self.tokenizer.pad_token_id, self.pad_to),
                                                  pin_memory=self.device.type == "cuda")  # faster host-to-GPU copies
        self.total_steps = self._total_steps()
        self.optimizer = make_optimizer(self.model, cfg.lr, cfg.weight_decay, head_lr=cfg.head_lr,
                                        fused=not self.reference)
        self.scheduler = get_linear_schedule_with_warmup(self.optimizer, int(cfg.warmup_ratio * self.total_steps),
                                                         self.total_steps)
        self.ddp = self._wrap()

    def _to_outbox(self, name: str, data: bytes) -> None:
        """Hand one record of the selected evaluation to the study's MLflow callback (nothing outside a study)."""
        if self.outbox:
            from study.track.outbox import put

            put(self.outbox, name, data)

    def _wrap(self):
        if self.world == 1:
            return self.model
        import ray.train.torch

        return ray.train.torch.prepare_model(self.model, move_to_device=False)

    def _total_steps(self) -> int:
        from study.core.budget import total_steps  # the study plan counts with the same rule

        return total_steps(len(self.pairs), self.cfg.batch_size, self.grad_accum, self.world, self.cfg.epochs,
                           self.cfg.max_steps)

    # -- checkpoints --

    def restore(self, checkpoint) -> None:
        """Continue from a Ray ``Checkpoint`` written by ``save_checkpoint`` (None: start fresh): weights, optimizer,
        schedule and the position in the data, so the run goes on exactly as if it had not stopped."""
        if checkpoint is not None:
            with checkpoint.as_directory() as directory:
                self.progress = load_train_state(directory, self.model, self.optimizer, self.scheduler, self.device)
            self.resumed_from_step = self.progress.step

    def save_checkpoint(self, directory: str, examples: bytes) -> None:
        """Write a restorable checkpoint into ``directory`` (see ``study.train.checkpoints``)."""
        save_train_state(directory, self.model, self.tokenizer, self.spec, self.optimizer, self.scheduler,
                         self.progress, examples, task=self.task.name, init_checkpoint=self.cfg.init_checkpoint,
                         init_task=self.init_task, seed=self.cfg.seed)

    def _examples_json(self) -> bytes:
        """What the report bootstraps over: per example (numerator, denominator) of the metric, per language."""
        examples = {"step": self.progress.step, "metric": self.task.metric, "units": self.units}
        if self.alignment:  # the probe's retrieval, per sentence: {"<measure>/layer<n>": {language: units}}
            examples[ALIGNMENT_UNITS] = self.alignment.units
            examples[ALIGNMENT_METRICS] = self.alignment.metrics  # the selected step's, exactly (MLflow keeps the last)
        return json.dumps(examples).encode()

    # -- training --

    def _step_seed(self, micro: int) -> int:
        return hash((self.cfg.seed, self.rank, self.progress.epoch, micro)) % (2**31)

    def _loss(self, batch):
        from study.vme.engine import (
            head_logits,
            reference_vme_forward,
            split_batch,
            vme_forward,
        )
        from study.vme.objective import task_cross_entropy

        x_inputs, labels_x = split_batch({k: v.to(self.device) for k, v in batch["x"].items()})
        xt_inputs, labels_xt = split_batch({k: v.to(self.device) for k, v in batch["xt"].items()})
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with autocast:
            if self.cfg.objective == "plain":  # fine-tuning on x only: the matched baseline
                loss = task_cross_entropy(head_logits(self.ddp(**x_inputs)), labels_x)
                return loss, {"total": loss.item(), "task": loss.item()}
            if self.reference:
                terms = reference_vme_forward(self.ddp, x_inputs, xt_inputs, labels_x, labels_xt, self.cfg.weights,
                                              self.cfg.ap_layer, self.cfg.ap_mask)
                return terms.total, terms.detached()
            terms = vme_forward(self.ddp, self.capture, x_inputs, xt_inputs, labels_x, labels_xt, self.cfg.weights,
                                self.cfg.ap_mask, ap_length=self.ap_length, pad_id=self.tokenizer.pad_token_id)
        return terms.total, terms.detached()

    def train(self, report) -> None:
        """Train to the end, evaluating every ``eval_every`` steps (or each epoch) and at the last step; every
        evaluation calls ``report(metrics, checkpoint_dir)`` (rank 0 passes a directory, other ranks None)."""
        cfg, progress = self.cfg, self.progress
        if self.rank == 0 and progress.step == 0:
            from study.data.augment import synonym_source_label

            self._log(f"virtual copies: {self.data_stats['changed_fraction']:.1%} changed by "
                      f"{synonym_source_label(cfg.synonyms)}, {cfg.synonym_matching} matching; "
                      f"{cfg.batch_size} x {self.grad_accum} x {self.world} = "
                      f"{cfg.batch_size * self.grad_accum * self.world} examples per optimizer step")
        self.model.train()  # from_pretrained returns the model in eval mode: dropout must be on from the first step
        log_started, examples = time.perf_counter(), 0
        for epoch in range(progress.epoch, cfg.epochs):
            progress.epoch = epoch
            self.sampler.set_epoch(epoch)
            batches = itertools.islice(enumerate(self.loader), progress.micro_in_epoch, None)  # resume mid-epoch
            for micro, batch in batches:
                step_started = time.perf_counter()
                torch.manual_seed(self._step_seed(micro))
                sync = micro % self.grad_accum == self.grad_accum - 1
                context = self.ddp.no_sync() if (self.world > 1 and not sync) else contextlib.nullcontext()
                with context:
                    loss, terms = self._loss(batch)
                    if self.faults.forced_nan(self.run_name) or not torch.isfinite(loss):
                        raise StudyError(f"the loss became non-finite at step {progress.step + 1} "
                                         f"(terms: {terms}); this run stops")
                    (loss / self.grad_accum).backward()
                self._accumulate(terms)
                batch_examples = batch["x"]["input_ids"].shape[0] * self.world
                examples += batch_examples
                progress.micro_in_epoch = micro + 1
                if sync:
                    torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    progress.step += 1
                step_seconds = time.perf_counter() - step_started
                progress.train_seconds += step_seconds  # since the last report (throughput)
                progress.seconds["train"] += step_seconds  # over the whole run (time profile)
                progress.train_examples += batch_examples
                count_batch(progress.counts, batch, cfg.objective == "vme", self.world)
                if not sync:
                    continue
                self.faults.after_step(progress.step)
                if progress.step % cfg.log_every == 0 and self.rank == 0:
                    rate = examples / (time.perf_counter() - log_started)
                    self._log(f"step {progress.step}/{self.total_steps} epoch {epoch} "
                              + " ".join(f"{k} {v / progress.window['n']:.4f}" for k, v in progress.window.items()
                                         if k != "n") + f" | {rate:.1f} examples/s")
                    log_started, examples = time.perf_counter(), 0
                done = progress.step >= self.total_steps
                if done or (cfg.eval_every and progress.step % cfg.eval_every == 0):
                    self._evaluate_and_report(report)
                if done:
                    return
            progress.micro_in_epoch = 0
            if not cfg.eval_every:
                progress.epoch = epoch + 1
                self._evaluate_and_report(report)

    def _accumulate(self, terms: dict) -> None:
        window = self.progress.window
        window["n"] += 1
        for name, value in terms.items():
            window[name] = window.get(name, 0.0) + value

    def _log(self, line: str) -> None:
        print(f"[train] {line}", file=sys.stderr, flush=True)

    # -- evaluation and reporting --

    def _evaluate_and_report(self, report) -> None:
        metrics = self._evaluate() if self.rank == 0 else None
        if self.world > 1:
            holder = [metrics]
            torch.distributed.broadcast_object_list(holder, src=0)
            metrics = holder[0]
        self.progress.window = {"n": 0}
        self.progress.train_seconds, self.progress.train_examples, self.progress.counts = 0.0, 0, new_counts()
        if self.rank != 0:
            report(metrics, None)
            return
        examples = self._examples_json()  # serialised once: for the outbox and for the checkpoint
        if improves(metrics[selection_key(self.task.metric)], self.progress.best_dev):
            # what English dev selects so far: the report bootstraps these examples even if the trial is stopped
            self.progress.best_dev = metrics[selection_key(self.task.metric)]
            self._to_outbox(EXAMPLES_ARTIFACT, examples)
            if self.alignment:
                self._to_outbox(ALIGNMENT_EMBEDDINGS_ARTIFACT, self.alignment.figure)
        with tempfile.TemporaryDirectory(prefix="study-ckpt-") as directory:
            started = time.perf_counter()
            self.save_checkpoint(directory, examples)
            metrics["time/checkpoint_s"] = self.progress.seconds["checkpoint"] + time.perf_counter() - started
            report(metrics, directory)
            self.progress.seconds["checkpoint"] += time.perf_counter() - started  # Ray's copy to storage included

    @torch.no_grad()
    def _evaluate(self) -> dict:
        from study.evaluation.scoring import evaluate_languages, score_supervised

        started = time.perf_counter()
        self.model.eval()
        metric = self.task.metric
        dev, dev_extra = score_supervised(self.task, self.dev, self.model, self.tokenizer, self.cfg.max_length,
                                          "dev-en")
        results = evaluate_languages(self.task, self.model, self.tokenizer, self.languages,
                                     data_dir=self.cfg.data_dir, max_length=self.cfg.max_length,
                                     limit=self.cfg.max_eval_examples, seed=EVAL_SUBSET_SEED, log=None)
        tests = {lang: score for lang, (score, _) in results.items()}
        self.units = {ENGLISH_DEV: dev_extra["units"], **{lang: extra["units"] for lang, (_, extra) in results.items()}}
        probe_started = time.perf_counter()
        self.alignment = self.probe.measure(self.model) if self.probe else None
        align_seconds = time.perf_counter() - probe_started
        self.model.train()
        window, eval_seconds = self.progress.window, time.perf_counter() - started
        self.progress.seconds["eval"] += eval_seconds
        metrics = {selection_key(metric): dev, "step": self.progress.step, "epoch": self.progress.epoch,
                   **evaluation_metrics(metric, tests, english_dev=dev),
                   "eval_seconds": eval_seconds,
                   "time/train_s": self.progress.seconds["train"],
                   "time/eval_s": self.progress.seconds["eval"],
                   "train/examples_per_s": self.progress.train_examples / max(self.progress.train_seconds, 1e-9),
                   **throughput_metrics(self.progress.counts, self.progress.train_seconds,
                                        ModelShape.from_config(self.model.config), self.peak, self.world),
                   "time/worker_start_unix": self.started, "time/worker_seconds": time.time() - self.started,
                   "train/resumed_from_step": self.resumed_from_step, TOTAL_STEPS_KEY: self.total_steps,
                   # which share of the virtual copies the synonyms changed (method.md asks to record it)
                   "data/changed_fraction": self.data_stats["changed_fraction"], **torch_settings()}
        metrics.update({f"loss/{k}": v / window["n"] for k, v in window.items() if k != "n" and window["n"]})
        if self.alignment:
            metrics.update(self.alignment.metrics)
            metrics["align_seconds"] = align_seconds  # inside eval_seconds
        if "macro_f1" in dev_extra:
            metrics[f"{ENGLISH_DEV}/macro_f1"] = dev_extra["macro_f1"]
        self._log(f"eval step {self.progress.step}: dev_en {metric} {dev:.4f}, target avg "
                  f"{metrics[target_average_key(metric)]:.4f} ({len(tests)} languages, "
                  f"{metrics['eval_seconds']:.0f} s)")
        return metrics

