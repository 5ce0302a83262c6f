"""Chat-data curation (paper section 4.2.3): `herd chatdata clean|score|dedup|mix`.

Each step reads SFT dialogs (any format `herd.post.records` reads), writes herd JSONL (`{"messages": [...],
...}` with the record's other fields kept, so scores and topics travel from step to step) and a JSON
report of what it did, counted by reason. The modules are import-light (no torch at import time):

  rows      read dialogs keeping their extra fields; write JSONL and reports
  clean     the rule-based cleaning of assistant turns (emojis, exclamation marks, tonal apologies)
  judge     LLM-judge prompts (MT-bench's single-answer template, 3-point difficulty, intent tags), parsing
  score     reward-model quality (score, quartile), judge quality/difficulty, derived quality x difficulty
  dedup     semantic dedup: MiniLM embeddings, k-means, keep by quality x difficulty below a cosine threshold
  mix       combine sources with weights and caps per source/capability/topic, seeded
"""
