"""`python -m nudging.lm_eval ARGS`: lm-eval's own command line (`lm_eval ARGS`) with the model type `nudging`
registered first. lm-eval releases up to 0.4.13 find models only in their own source tree; later ones load the
entry point this package declares, and there `lm_eval --model nudging ...` works as well."""

from __future__ import annotations

import sys

from nudging.errors import NudgingError


def main() -> int:
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        print('nudging: error: lm-eval is not installed: pip install "nudging[lm-eval]"', file=sys.stderr)
        return 2
    import nudging.lm_eval.model  # noqa: F401  (registers the model type)

    sys.argv[0] = "lm_eval"
    try:
        cli_evaluate()
    except NudgingError as error:
        print(f"nudging: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
