"""Tokenizers (Llama 3 tiktoken, generic byte-level BPE) and chat formats (Llama 3, ChatML)."""

from herd.tokenizer.base import IncrementalDecoder, Tokenizer, TokenizerError
from herd.tokenizer.bpe import BPETokenizer
from herd.tokenizer.chat import ChatFormat, EncodedDialog, Message, ToolCall, ToolDefinition, chat_format_for
from herd.tokenizer.chatml import ChatMLFormat
from herd.tokenizer.files import save_tokenizer, tokenizer_from_directory
from herd.tokenizer.llama3 import Llama3Tokenizer
from herd.tokenizer.llama3_chat import Llama3ChatFormat, system_prompt_with_tools

__all__ = [
    "IncrementalDecoder", "Tokenizer", "TokenizerError", "BPETokenizer", "ChatFormat", "EncodedDialog", "Message",
    "ToolCall", "ToolDefinition", "chat_format_for", "ChatMLFormat", "save_tokenizer", "tokenizer_from_directory",
    "Llama3Tokenizer", "Llama3ChatFormat", "system_prompt_with_tools",
]
