"""Join the two stages' weights into one file: ``python -m maskbench.baselines.prior3d.combine N3D GEN [OUT]``
(OUT defaults to the committed ``weights.safetensors`` beside this module)."""

from __future__ import annotations

import sys

from .predictor import combine_weights


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    print(combine_weights(*args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
