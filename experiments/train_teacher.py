"""Train a built-in teacher on Fashion-MNIST and save its plain state_dict.

    .venv/bin/python -m experiments.train_teacher --model resnet8 --epochs 5 --seed 0 \
        --out experiments/fashion_mnist/resnet8_teacher.pt

``edgetune train SPEC`` does the same through ``search.teacher.train_teacher``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from search.teacher import EpochLog, train_teacher
from search.workloads.fashion_mnist import load_fashion_mnist, normalize
from search.workloads.models import BUILTIN_MODELS
from spaces.distillation import accuracy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(BUILTIN_MODELS), default="resnet8")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="where to save the state_dict")
    parser.add_argument("--data", type=Path, default=None, help="folder with the idx files")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--holdout",
        type=int,
        default=5000,
        help="leave out the last N training images: the search validates students on them",
    )
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    x_train, y_train, x_test, y_test = load_fashion_mnist(args.data)
    n = len(x_train) - args.holdout
    x_train, y_train = normalize(x_train[:n]), y_train[:n]
    x_test = normalize(x_test)
    model = BUILTIN_MODELS[args.model]((1, 28, 28), 10)

    def log(entry: EpochLog) -> None:
        print(entry, flush=True)

    start = time.perf_counter()
    train_teacher(
        model,
        x_train,
        y_train,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        log=log,
    )
    seconds = time.perf_counter() - start
    test_accuracy = accuracy(model, x_test, y_test)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), args.out)
    print(
        f"{args.model}: test accuracy {test_accuracy:.4f} on {len(y_test)} images, "
        f"trained {args.epochs} epochs on the first {n} training images in {seconds:.0f} s "
        f"({args.threads} threads), "
        f"saved to {args.out}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
