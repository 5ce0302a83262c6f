"""Code shield (paper 5.4.7): static detection of insecure code in model outputs and code-interpreter
calls before they run or reach a user.

    rules         the YAML rule format (CWE id, severity, prescan, regex or AST matcher) and its loader
    pyast         one parse of a Python source, import aliases resolved, shared by the matchers
    ast_matchers  the Python-AST matchers rules name where a regex is too coarse
    scanner       scan(code, language): prescan, then precise matching; regex fallback for broken Python
    extract       scan_output(text): the fenced code blocks of a model answer, each in its language
    policy        block / warn / ignore per severity, decide(findings, policy)

    >>> from herd.safety.code_shield import scan, decide
    >>> findings = scan("import subprocess\\nsubprocess.run(cmd, shell=True)\\n")
    >>> [(f.pattern_id, f.cwe_id, f.line) for f in findings]
    [('python.subprocess-shell-true', 'CWE-78', 2)]
    >>> decide(findings).action.value
    'block'
"""

from herd.safety.code_shield.extract import CodeBlock, code_blocks, scan_output
from herd.safety.code_shield.policy import DEFAULT_TREATMENTS, Decision, Policy, Treatment, decide
from herd.safety.code_shield.rules import (LANGUAGES, SEVERITIES, Rule, RuleError, builtin_rules, load_rule_file,
                                           parse_rules)
from herd.safety.code_shield.scanner import Finding, normalize_language, scan

__all__ = ["DEFAULT_TREATMENTS", "LANGUAGES", "SEVERITIES", "CodeBlock", "Decision", "Finding", "Policy", "Rule",
           "RuleError", "Treatment", "builtin_rules", "code_blocks", "decide", "load_rule_file",
           "normalize_language", "parse_rules", "scan", "scan_output"]
