"""Chain-of-Shot prompting (CoS, arXiv 2502.06428): the method, model-agnostic.

Arrays and tensors in, indices, codes and logits out. This package imports neither ``longva`` nor
``lmms_eval``; a model is seen only through :class:`cos.protocol.VideoLM`.
"""

from cos.errors import ConfigError, CosError, VideoDecodeError

__version__ = "0.1.0"
__all__ = ["CosError", "ConfigError", "VideoDecodeError", "__version__"]
