"""catrans: Conditional Attribute Transformers on a modern decoder-only trunk."""
from catrans import masks
from catrans.config import ModelConfig
from catrans.transformer import Transformer, TransformerOutput, init_cache

__all__ = ["ModelConfig", "Transformer", "TransformerOutput", "init_cache", "masks"]
