"""Check the host kernel rules against onnxruntime's optimized graphs of the whole suite, at
the NCHWc block probed on this CPU, and write ``experiments/results/kernel_rules_<label>.json``.

    python -m experiments.check_kernel_rules [--size full|small] [--label NAME]

To check another instruction set without such a machine, run it under QEMU's user-mode
emulation, which onnxruntime's CPUID probe sees as that CPU (``/proc/cpuinfo`` still shows the
real one, so name it with ``--label``):

    qemu-x86_64 -cpu Haswell-v4 .venv/bin/python -m experiments.check_kernel_rules \\
        --label qemu-haswell-v4-avx2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=("full", "small"), default="full")
    p.add_argument("--label", default="", help="name of the CPU (default: its model name)")
    args = p.parse_args(argv)

    import onnxruntime

    from targets.agent import device_info
    from targets.host import cpu_isa
    from targets.kernel_check import check_kernel_rules, probe_nchwc_block
    from targets.suite import suite

    t0 = time.time()
    block = probe_nchwc_block()
    check = check_kernel_rules(suite(size=args.size), block)
    info = device_info(threads=1)
    out = {
        "label": args.label or info["cpu_model"],
        "cpu_model_in_proc_cpuinfo": info["cpu_model"],
        "cpu_isa_in_proc_cpuinfo": cpu_isa(),
        "onnxruntime": onnxruntime.__version__,
        "suite": args.size,
        "nchwc_block_probed": block,
        "models": check["models"],
        "agree": check["agree"],
        "disagree": check["disagree"],
        "seconds": round(time.time() - t0, 1),
    }
    label = "".join(c if c.isalnum() or c in "-_" else "-" for c in out["label"]).strip("-")
    path = RESULTS / f"kernel_rules_{label}.json"
    path.write_text(json.dumps(out, indent=1))
    print(
        f"{out['label']}: NCHWc block {block}; kernel rules match onnxruntime on "
        f"{check['agree']}/{check['models']} {args.size}-suite models; wrote {path}"
    )
    return 0 if check["agree"] == check["models"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
