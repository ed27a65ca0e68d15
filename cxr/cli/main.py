"""The `cxr` command line. One module per command group (data, train, assess, predict, roi, records),
each with its parsers beside their handlers; this one puts them together."""
from __future__ import annotations

import argparse
import logging
import sys

from cxr.cli import assess, data, predict, records, roi, train
from cxr.core.config import BACKEND_ENV, BACKENDS, DEVICE_ENV, get_config
from cxr.core.runtime import DEVICES, device

GROUPS = (data, train, assess, predict, roi, records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="cxr", description=__doc__)
    parser.add_argument("--profile", choices=("full", "smoke"), default=None,
                        help="configuration profile (default: $CXR_PROFILE, else full)")
    sub = parser.add_subparsers(dest="command", required=True)
    # every command that runs a model takes --device and --backend
    on = argparse.ArgumentParser(add_help=False)
    on.add_argument("--device", choices=DEVICES, default=None,
                    help=f"where models run: auto (CUDA when there is a GPU, else the CPU), cpu or cuda "
                         f"(default: ${DEVICE_ENV}, else auto)")
    on.add_argument("--backend", choices=BACKENDS, default=None,
                    help="what runs the model in bulk: auto (on the CPU the fastest installed runtime that agrees "
                         "with PyTorch: OpenVINO, then ONNX Runtime; on a GPU PyTorch), torch, onnxruntime or "
                         f"openvino (default: ${BACKEND_ENV}, else auto)")

    for group in GROUPS:
        group.add(sub, on)

    args = parser.parse_args(argv)
    from cxr.core.runtime import tune_malloc

    tune_malloc()
    # progress and cache messages (cxr.train.run's log) on stderr, without touching a caller's logging
    log = logging.getLogger("cxr")
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.command == "data" and args.action == "import" and not args.path:
        parser.error("cxr data import needs PATH: the Kaggle zip or its unpacked folder")
    try:
        # the configuration, resolved once here (--profile, --device, --backend) and passed to every handler
        given = {k: getattr(args, k, None) for k in ("device", "backend")}
        args.config = get_config(args.profile, **{k: v for k, v in given.items() if v})
        if hasattr(args, "device"):
            log.info("models run on %s", device(args.config.device))  # fails here, clearly, for cuda without a GPU
        return args.func(args)
    except (FileNotFoundError, ValueError) as e:
        print(f"cxr: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
