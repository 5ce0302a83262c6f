"""Evaluation: tasks and scorers shared by training gates, post-training and the report card."""

from herd.eval.niah import NIAHCase, NIAHReport, build_case, evaluate_niah, score_response, training_documents

__all__ = ["NIAHCase", "NIAHReport", "build_case", "evaluate_niah", "score_response", "training_documents"]
