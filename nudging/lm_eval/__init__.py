"""EleutherAI's lm-evaluation-harness, model type `nudging` (`pip install "nudging[lm-eval]"`).

Generation tasks (`generate_until`) are answered by nudging, with each request's stop strings and token budget,
batched on lanes; log-likelihood requests are refused (nudging is a decoding method). The adapter is
nudging.lm_eval.model; `python -m nudging.lm_eval ARGS` runs lm-eval's command line with it registered. This
package's own import needs no lm-eval.
"""
