"""What the model packages (``longva``, ``llava_video``, and the next ones) share, written once.

- :mod:`vlm_common.checkpoints`: locating a checkpoint, renaming keys by a table, reading and writing
  sharded safetensors with their index, and :class:`~vlm_common.checkpoints.CheckpointError`;
- :mod:`vlm_common.loading`: what ``device_map``, ``torch_dtype`` and ``attn_implementation`` mean for
  a loader;
- :mod:`vlm_common.modeling`: :class:`~vlm_common.modeling.SplicedCausalLM`, the loading, saving, generation
  config and decoding that the LLaVA-family model classes share;
- :mod:`vlm_common.qwen`: the prompt placeholder, Qwen2's special tokens, the LM config and tokenizer of a
  LLaVA-style ``config.json``, ``tokenizer_image_token``, and token-id/decoding helpers;
- :mod:`vlm_common.frames`: chunked, threaded frame preprocessing through a transformers image processor;
- :mod:`vlm_common.tiny_tokenizer`: the offline Qwen2-style byte-level BPE tokenizer of the tiny test
  checkpoints.

Like the model packages it serves, it imports none of this project's other packages (``cos``,
``cos_runtime``, ``cos_lmms_eval``) and no model package.
"""
