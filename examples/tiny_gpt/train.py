"""Train a tiny character-level GPT with the Podium SDK: checkpoints, metrics, preemption.

Runs as one process (``python train.py``) or data-parallel under ``torchrun`` (one or
more nodes, gloo on CPU, NCCL on GPUs). Step k is the k-th optimizer step; the checkpoint
of step S holds the state after S steps, and a run resumed from it continues with step
S + 1. Every rank draws its batch from a generator seeded by (seed, step, rank), so a
resumed run sees the same batches as an uninterrupted one.

``python train.py --make-corpus`` rewrites corpus.txt from the small grammar below.
"""

import argparse
import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from model import GPTConfig, TinyGPT
from torch import distributed
from torch.nn.parallel import DistributedDataParallel

from podium import sdk

HERE = Path(__file__).resolve().parent
CHECKPOINT_FILE = "model.pt"
WARMUP_STEPS = 20
LOG_EVERY = 50
SAMPLE_CHARS = 80

log = logging.getLogger("tiny_gpt")


# Options ------------------------------------------------------------------------------------


def _option(
    parser: argparse.ArgumentParser, name: str, kind: type, default: object, text: str
) -> None:
    """Add ``--name``; its default comes from $TRAIN_<NAME> when that is set."""
    env = "TRAIN_" + name.upper().replace("-", "_")
    value = os.environ.get(env)
    parser.add_argument(
        f"--{name}",
        type=kind,
        default=default if value is None else kind(value),
        help=f"{text} (env {env}; default {default})",
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options, each with an environment fallback."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_data = os.environ.get("PODIUM_DATASET_CORPUS") or str(HERE / "corpus.txt")
    parser.add_argument("--data", default=default_data, help="a text file or a folder of .txt")
    parser.add_argument("--make-corpus", action="store_true", help="write corpus.txt and exit")
    _option(parser, "steps", int, 600, "optimizer steps in the whole run")
    _option(parser, "batch-size", int, 32, "sequences per rank per step")
    _option(parser, "block-size", int, 64, "context length in characters")
    _option(parser, "n-layer", int, 3, "transformer blocks")
    _option(parser, "n-head", int, 4, "attention heads")
    _option(parser, "n-embd", int, 96, "embedding width")
    _option(parser, "lr", float, 3e-3, "peak learning rate")
    _option(parser, "seed", int, 1337, "seed of the initial weights and of every batch")
    _option(parser, "checkpoint-every", int, 100, "save a checkpoint every this many steps")
    _option(parser, "report-every", int, 1, "report metrics every this many steps")
    _option(parser, "step-sleep", float, 0.0, "seconds to sleep after each step")
    return parser.parse_args(argv)


# Corpus -------------------------------------------------------------------------------------

NAMES = ["Ada", "Bram", "Cora", "Dov", "Edda", "Finn", "Greta", "Hugo", "Ines", "Jory"]
NOUNS = [
    "miller", "baker", "river", "lantern", "garden", "harbour", "letter", "window", "orchard",
    "bridge", "kettle", "meadow", "shepherd", "tower", "market", "candle", "forest", "wagon",
    "sailor", "village", "teacher", "mountain", "fox", "heron", "clock", "road", "well", "barn",
]  # fmt: skip
ADJECTIVES = [
    "old", "quiet", "bright", "narrow", "green", "cold", "patient", "small", "crooked",
    "golden", "wet", "tired", "careful", "distant", "loud", "gentle", "empty", "busy",
]  # fmt: skip
VERBS = [
    "watched", "carried", "found", "painted", "crossed", "mended", "followed", "opened",
    "counted", "noticed", "visited", "cleaned", "remembered", "passed", "built", "sold",
]  # fmt: skip
PLACES = ["across", "beside", "behind", "under", "near", "beyond", "inside", "along"]
TIMES = ["In the morning", "At dusk", "Before the rain", "Every winter", "Late at night"]
FEELINGS = ["glad", "worried", "certain", "surprised", "sorry", "curious"]


def _sentence(rng: random.Random) -> str:
    """One sentence from a small English-like grammar."""
    a, b = (f"the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}" for _ in range(2))
    name, verb, place = rng.choice(NAMES), rng.choice(VERBS), rng.choice(PLACES)
    forms = [
        f"{a.capitalize()} {verb} {b}.",
        f"{rng.choice(TIMES)}, {name} {verb} {b} {place} {a}.",
        f"{name} was {rng.choice(FEELINGS)} that {a} had {verb} {b}.",
        f'"Where is {a}?" asked {name}.',
        f'"It is {place} {b}," said {rng.choice(NAMES)}.',
        f"Nobody {verb} {b}, so {name} walked {place} {a} alone.",
    ]
    return rng.choice(forms)


def corpus_text(*, seed: int = 7, size: int = 300_000) -> str:
    """About ``size`` characters of paragraphs, the same for the same seed."""
    rng = random.Random(seed)  # noqa: S311 -- reproducible text, not secrets
    paragraphs: list[str] = []
    total = 0
    while total < size:
        paragraph = " ".join(_sentence(rng) for _ in range(rng.randint(3, 7)))
        paragraphs.append(paragraph)
        total += len(paragraph) + 2
    return "\n\n".join(paragraphs) + "\n"


def corpus_read(path: Path) -> str:
    """The training text: the file, or every .txt file of a folder in name order."""
    if path.is_dir():
        named = path / "corpus.txt"
        files = [named] if named.is_file() else sorted(path.glob("*.txt"))
        return "".join(f.read_text(encoding="utf-8") for f in files)
    return path.read_text(encoding="utf-8")


# Distributed setup --------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """Where this process sits: its global rank, the number of ranks, and its device."""

    rank: int
    size: int
    device: torch.device


def world_start() -> World:
    """Join the process group when started by torchrun; pick threads and the device."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if "OMP_NUM_THREADS" not in os.environ and size > 1:
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_size))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if size > 1:
        distributed.init_process_group("nccl" if cuda else "gloo")
    return World(rank=rank, size=size, device=device)


def world_agree(world: World, loss: float, stop: bool) -> tuple[float, bool]:
    """The mean loss over ranks, and whether any rank was asked to stop."""
    if world.size == 1:
        return loss, stop
    values = torch.tensor([loss, float(stop)], dtype=torch.float64, device=world.device)
    distributed.all_reduce(values)
    return values[0].item() / world.size, values[1].item() > 0


# Training state -----------------------------------------------------------------------------


@dataclass
class Trainer:
    """The model, its optimizer, the data and the number of steps done."""

    config: GPTConfig
    model: TinyGPT
    optimizer: torch.optim.Optimizer
    data: torch.Tensor
    vocab: str
    step: int = 0


def checkpoint_read(world: World, resume: Path) -> dict[str, Any]:
    """The saved state: rank 0 reads it and sends it to the others, so only it needs the file."""
    saved = [torch.load(resume / CHECKPOINT_FILE, map_location="cpu") if world.rank == 0 else None]
    if world.size > 1:
        distributed.broadcast_object_list(saved, src=0)
    return saved[0]


def trainer_build(args: argparse.Namespace, world: World, text: str) -> Trainer:
    """A fresh trainer, or one restored from $PODIUM_RESUME_FROM when that is set."""
    vocab = "".join(sorted(set(text)))
    index = {ch: i for i, ch in enumerate(vocab)}
    data = torch.tensor([index[ch] for ch in text], dtype=torch.long)
    config = GPTConfig(
        vocab_size=len(vocab),
        block_size=args.block_size,
        n_layer=args.n_layer,
        n_head=args.n_head,
        n_embd=args.n_embd,
    )
    resume = sdk.resume_from()
    saved = None if resume is None else checkpoint_read(world, resume)
    if saved is not None:
        if saved["vocab"] != vocab:
            raise SystemExit(f"{resume}: the checkpoint was trained on another alphabet")
        config = GPTConfig(**saved["config"])
    torch.manual_seed(args.seed)
    model = TinyGPT(config).to(world.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    trainer = Trainer(config=config, model=model, optimizer=optimizer, data=data, vocab=vocab)
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        torch.set_rng_state(saved["rng"])
        trainer.step = saved["step"]
        log.info("resumed from step %d (%s)", trainer.step, resume)
    return trainer


def trainer_save(trainer: Trainer) -> None:
    """Checkpoint the state after ``trainer.step`` steps (the SDK writes on rank 0 only)."""
    state = {
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "step": trainer.step,
        "rng": torch.get_rng_state(),
        "config": asdict(trainer.config),
        "vocab": trainer.vocab,
    }

    def write(directory: Path) -> None:
        torch.save(state, directory / CHECKPOINT_FILE)

    sdk.save(trainer.step, write)


def batch_sample(
    trainer: Trainer, *, seed: int, step: int, rank: int, size: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-character targets for one rank at one step."""
    generator = torch.Generator().manual_seed((seed * 1_000_003 + step) * 4_096 + rank)
    block = trainer.config.block_size
    starts = torch.randint(len(trainer.data) - block - 1, (size,), generator=generator)
    x = torch.stack([trainer.data[s : s + block] for s in starts.tolist()])
    y = torch.stack([trainer.data[s + 1 : s + 1 + block] for s in starts.tolist()])
    return x.to(device), y.to(device)


def learning_rate(step: int, *, peak: float, total: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak at the last step."""
    if step <= WARMUP_STEPS:
        return peak * step / WARMUP_STEPS
    progress = (step - WARMUP_STEPS) / max(1, total - WARMUP_STEPS)
    return peak * (0.1 + 0.45 * (1 + math.cos(math.pi * min(1.0, progress))))


def sample_text(trainer: Trainer, *, seed: int, device: torch.device) -> str:
    """A few dozen characters the model writes after "The "."""
    trainer.model.eval()
    prompt = torch.tensor([[trainer.vocab.index(ch) for ch in "The "]], device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = trainer.model.generate(prompt, SAMPLE_CHARS, generator)
    return "".join(trainer.vocab[i] for i in out[0].tolist())


# The loop -----------------------------------------------------------------------------------


def train(args: argparse.Namespace, world: World, trainer: Trainer) -> bool:
    """Run steps until ``args.steps``; False when stopped early by a preemption request."""
    step_fn: Callable[..., torch.Tensor] = trainer.model
    if world.size > 1:
        step_fn = DistributedDataParallel(trainer.model)
    tokens = args.batch_size * trainer.config.block_size * world.size
    loss_value = math.nan
    while trainer.step < args.steps:
        step = trainer.step + 1
        started = time.perf_counter()
        lr = learning_rate(step, peak=args.lr, total=args.steps)
        for group in trainer.optimizer.param_groups:
            group["lr"] = lr
        x, y = batch_sample(
            trainer,
            seed=args.seed,
            step=step,
            rank=world.rank,
            size=args.batch_size,
            device=world.device,
        )
        loss = step_fn(x, y)
        trainer.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        trainer.optimizer.step()
        trainer.step = step
        elapsed = time.perf_counter() - started
        time.sleep(args.step_sleep)
        loss_value, stop = world_agree(world, loss.item(), sdk.stop_requested())
        if step % args.report_every == 0 or step == args.steps:
            sdk.report(
                step,
                loss=round(loss_value, 5),
                lr=round(lr, 7),
                tokens_per_s=round(tokens / elapsed),
            )
        if step % LOG_EVERY == 0:
            log.info("step %d: loss %.4f", step, loss_value)
        if step % args.checkpoint_every == 0 or step == args.steps or stop:
            trainer_save(trainer)
        if stop and trainer.step < args.steps:
            log.info("stopped at step %d on request; checkpoint saved", step)
            return False
    if math.isnan(loss_value):
        log.info("done: %d steps", trainer.step)
    else:
        log.info("done: %d steps, final loss %.4f", trainer.step, loss_value)
    return True


def main(argv: list[str] | None = None) -> int:
    """Parse options, train, and print a sample on rank 0."""
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    if args.make_corpus:
        (HERE / "corpus.txt").write_text(corpus_text(), encoding="utf-8")
        log.info("wrote %s", HERE / "corpus.txt")
        return 0
    sdk.handle_preemption()
    world = world_start()
    if world.rank != 0:
        log.setLevel(logging.WARNING)
    trainer = trainer_build(args, world, corpus_read(Path(args.data)))
    finished = train(args, world, trainer)
    if finished and world.rank == 0:
        log.info("sample: %r", sample_text(trainer, seed=args.seed, device=world.device))
    if world.size > 1:
        distributed.barrier()
        distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
