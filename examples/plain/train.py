"""Fit a linear model by SGD with nothing but the standard library and the Podium SDK.

The same contract as the PyTorch example: step k is the k-th update, the checkpoint of
step S holds the weights after S updates, a run resumed from it continues with step
S + 1 and computes exactly the losses an uninterrupted run would, and a SIGTERM ends the
run cleanly after saving the current step.
"""

import argparse
import json
import logging
import os
import random
import sys
import time
from dataclasses import asdict, dataclass

from podium import sdk

STATE_FILE = "state.json"
FEATURES = 8
EXAMPLES = 512
BATCH = 16

log = logging.getLogger("plain")

Example = tuple[list[float], float]


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
    _option(parser, "steps", int, 200, "SGD updates in the whole run")
    _option(parser, "checkpoint-every", int, 20, "save a checkpoint every this many steps")
    _option(parser, "step-sleep", float, 0.05, "seconds to sleep after each step")
    _option(parser, "log-every", int, 10, "print the loss every this many steps")
    _option(parser, "lr", float, 0.05, "learning rate")
    _option(parser, "seed", int, 0, "seed of the data and of every batch")
    return parser.parse_args(argv)


def _rng(*parts: int) -> random.Random:
    """A generator determined by ``parts`` alone."""
    return random.Random(",".join(map(str, parts)))  # noqa: S311 -- reproducible, not secret


def dataset(seed: int) -> list[Example]:
    """Noisy points around a hidden linear function of ``FEATURES`` inputs."""
    rng = _rng(seed)
    truth = [rng.uniform(-2, 2) for _ in range(FEATURES)]
    points = []
    for _ in range(EXAMPLES):
        x = [rng.gauss(0, 1) for _ in range(FEATURES)]
        y = sum(w * v for w, v in zip(truth, x, strict=True)) + 0.5 + rng.gauss(0, 0.1)
        points.append((x, y))
    return points


@dataclass
class State:
    """Everything a resume needs: the step count and the parameters."""

    step: int
    weights: list[float]
    bias: float

    def predict(self, x: list[float]) -> float:
        return sum(w * v for w, v in zip(self.weights, x, strict=True)) + self.bias


def state_load() -> State:
    """The state saved at $PODIUM_RESUME_FROM, or zeros at step 0."""
    resume = sdk.resume_from()
    if resume is None:
        return State(step=0, weights=[0.0] * FEATURES, bias=0.0)
    state = State(**json.loads((resume / STATE_FILE).read_text()))
    log.info("resumed from step %d (%s)", state.step, resume)
    return state


def state_save(state: State) -> None:
    """Checkpoint the state after ``state.step`` steps."""
    sdk.save(state.step, {STATE_FILE: json.dumps(asdict(state)).encode()})


def sgd_step(state: State, batch: list[Example], lr: float) -> None:
    """One update of the mean squared error over ``batch``."""
    grad_w = [0.0] * FEATURES
    grad_b = 0.0
    for x, y in batch:
        error = state.predict(x) - y
        grad_b += error
        for i, v in enumerate(x):
            grad_w[i] += error * v
    scale = 2 * lr / len(batch)
    state.weights = [w - scale * g for w, g in zip(state.weights, grad_w, strict=True)]
    state.bias -= scale * grad_b
    state.step += 1


def mse(state: State, points: list[Example]) -> float:
    """Mean squared error over ``points``."""
    return sum((state.predict(x) - y) ** 2 for x, y in points) / len(points)


def main(argv: list[str] | None = None) -> int:
    """Train to ``--steps``, checkpointing and reporting the loss after every step."""
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(message)s")
    sdk.handle_preemption()
    points = dataset(args.seed)
    state = state_load()
    while state.step < args.steps:
        batch = _rng(args.seed, state.step + 1).sample(points, BATCH)
        sgd_step(state, batch, args.lr)
        loss = mse(state, points)
        sdk.report(state.step, loss=loss)
        if state.step % args.log_every == 0:
            log.info("step %d loss %.6f", state.step, loss)
        time.sleep(args.step_sleep)
        stop = sdk.stop_requested()
        if state.step % args.checkpoint_every == 0 or state.step == args.steps or stop:
            state_save(state)
        if stop and state.step < args.steps:
            log.info("stopped at step %d on request; checkpoint saved", state.step)
            return 0
    log.info("done: %d steps, final loss %.6f", state.step, mse(state, points))
    return 0


if __name__ == "__main__":
    sys.exit(main())
