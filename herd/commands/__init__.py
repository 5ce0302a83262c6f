"""The command-line layer's commands that span layers (`convert`); the shared flags are in herd.cli_args.

Stage commands (`herd pretrain`, `herd curate`, `herd serve`, ...) stay beside their stage in
`herd/<stage>/cli.py`; this package holds what no one stage owns. Core packages (model, tokenizer,
checkpoint) never import from here.
"""
