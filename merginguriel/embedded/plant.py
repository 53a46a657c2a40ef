"""The tiny embedded backbone: an XLM-R-architecture masked LM whose weights are planted, not trained.

What XLM-R brings to cross-lingual transfer is a shared space in which translations lie near each other (across
scripts and families), an encoder that reads an utterance's meaning into the <s> position, and weights so large
next to what fine-tuning changes that task vectors are small. Learning that from MASSIVE-sized text takes far longer
than a 90-second CPU build (a 300-step masked-LM run here learned nothing useful), so the backbone is built to have
those properties directly:

- word embeddings: each piece gets the vector of the meaning it writes, as its languages write it
  (``meaning.MeaningSpace.vector`` with each locale's distortion from ``relatedness``; the mean over the languages
  that share a piece), scaled large because the embedding LayerNorm makes their scale free;
- attention: in every head the <s> position (and every other) pools the utterance, weighting each token by its
  salience (content words dominate). Query and key rows come in pairs whose products cancel, so the content-free part
  of every attention logit is exactly zero while the weights keep ordinary norms; one row per head reads salience;
- values and attention outputs are a scaled rotation and its inverse, so the pooled meaning passes through intact;
- feed-forward neurons are sparse detectors that almost never fire on this data (bias ``FFN_THRESHOLD`` standard
  deviations below zero): their random features would only add noise, and fine-tuning can still recruit them;
- biases of ordinary size; the attention output bias cancels the value bias, so neither shifts every utterance;
- the masked-LM head is there so the folder loads as ``XLMRobertaForMaskedLM``, as XLM-R's does; it is not a language
  model (decoder rows are the normalised input embeddings; its masked-token loss is at the uniform level) and nothing
  in merginguriel uses it: the encoder is what fine-tuning and merging start from.

The new 60-intent head that fine-tuning adds starts near zero (``initializer_range = HEAD_INIT``, saved in the
config), so what each fine-tune's head learns, and which of its hidden units learns it, is set by that fine-tune's
data, not by a shared starting point: XLM-R's head also starts small next to what it learns (0.02 against the
learned weights). Fine-tunes of different languages therefore end with heads whose hidden units play different
roles, and averaging them mixes unrelated units: the classic cause of interference when weights are merged (Entezari
et al. 2022, Ainsworth et al. 2023). Languages whose data read alike keep more of their roles in common. The recipe's
label smoothing keeps each head's margins bounded, as XLM-R's fine-tunes end with bounded margins after a few epochs:
in this planted space a head's margins would otherwise keep growing, and the noise a merge adds to the logits would
flip only the predictions of targets the sources barely read. With these weights the recipe of
``configs/fit-embedded.yaml`` changes each encoder tensor by a few percent of its norm (the
regime task arithmetic, TIES and DARE assume) while the head learns the task; measured numbers are in
``benchmarks/results/calibration.md``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from merginguriel.embedded.meaning import MeaningSpace
from merginguriel.embedded.settings import PLANT_VERSION, BackboneSettings
from merginguriel.embedded.relatedness import distortions
from merginguriel.embedded.seeding import seeded_rng
from merginguriel.embedded.synthetic import SyntheticMassive
from merginguriel.embedded.vocab import SPECIAL_TOKENS, build_tokenizer, lexicon_concepts, word_uses

POSITION_SCALE = 0.3  # position and token-type rows, per element, next to word rows of about 1 per element
LN_WEIGHT_JITTER = 0.05
LN_BIAS = 0.25
BIAS = 0.35
QK_SCALE = 1.0  # the content-free logits a head would have if its paired rows did not cancel
SALIENCE_QUERY = 2.0  # constant query on the salience row; logit gap between content and function words ~8
SALIENCE_KEY = 1.4
POOL_GAIN = 12.0  # attention output = POOL_GAIN x the attended mean, split evenly between value and output weights
FFN_IN = 3.0
FFN_THRESHOLD = 4.0
FFN_OUT = 3.5
HEAD_INIT = 1e-4  # standard deviation of the new classification head's weights (see the module docstring)


def model_config(tokenizer, settings: BackboneSettings):
    from transformers import XLMRobertaConfig

    return XLMRobertaConfig(
        vocab_size=len(tokenizer),
        hidden_size=settings.hidden_size,
        num_hidden_layers=settings.num_layers,
        num_attention_heads=settings.num_heads,
        intermediate_size=4 * settings.hidden_size,
        max_position_embeddings=settings.max_length + 2,
        type_vocab_size=1,
        initializer_range=HEAD_INIT,  # the new classification head's scale
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )


def embedding_matrix(world: SyntheticMassive, tokenizer, uses: dict, space: MeaningSpace, seed: int) -> np.ndarray:
    """Row of each piece: the mean of its uses' vectors (each as its locale writes it), at norm sqrt(hidden)."""
    locales = list(world.languages)
    bent = distortions(locales, [*space.own, *space.topics], space.dim, seed)
    rng = seeded_rng(seed, "filler", space.dim)
    per_locale = {loc: bent.of(loc) for loc in locales}
    matrix = np.stack([space.filler(rng) for _ in range(len(tokenizer))])
    for piece, piece_uses in uses.items():
        vectors = [space.vector(c, None if c.startswith("digit:") else per_locale[loc]) for loc, c in piece_uses]
        matrix[tokenizer.convert_tokens_to_ids(piece)] = np.mean(vectors, axis=0)
    return matrix * (math.sqrt(space.dim) / np.linalg.norm(matrix, axis=1, keepdims=True).mean())


def _paired_rows(rows: int, dim: int, scale: float, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Query and key rows (and biases) in pairs (a, a) / (b, -b): every pair's contribution to q.k cancels."""
    half = rows // 2
    wq, wk = (torch.randn(half, dim, generator=gen) * scale for _ in range(2))
    bq, bk = (torch.randn(half, generator=gen) * BIAS for _ in range(2))
    return torch.cat([wq, wq]), torch.cat([wk, -wk]), torch.cat([bq, bq]), torch.cat([bk, -bk])


def plant_attention(layer, dim: int, heads: int, salience_axis: torch.Tensor, gen: torch.Generator) -> None:
    head = dim // heads
    scale = math.sqrt(QK_SCALE) * head**0.25 / math.sqrt(dim)
    q_w, k_w, q_b, k_b = (torch.zeros(dim, dim), torch.zeros(dim, dim), torch.zeros(dim), torch.zeros(dim))
    for h in range(heads):
        rows = slice(h * head, h * head + head - 2)
        q_w[rows], k_w[rows], q_b[rows], k_b[rows] = _paired_rows(head - 2, dim, scale, gen)
        sal = h * head + head - 2  # a constant query against each token's salience
        q_b[sal], k_w[sal] = SALIENCE_QUERY, SALIENCE_KEY * salience_axis
        spare = sal + 1  # a key row no query reads: keeps the key matrix's rows all of ordinary size
        k_w[spare] = torch.randn(dim, generator=gen) * scale
    attn = layer.attention
    attn.self.query.weight.copy_(q_w), attn.self.query.bias.copy_(q_b)
    attn.self.key.weight.copy_(k_w), attn.self.key.bias.copy_(k_b)
    rotation = torch.linalg.qr(torch.randn(dim, dim, generator=gen))[0]
    attn.self.value.weight.copy_(math.sqrt(POOL_GAIN) * rotation)
    attn.self.value.bias.copy_(torch.randn(dim, generator=gen) * BIAS)
    attn.output.dense.weight.copy_(math.sqrt(POOL_GAIN) * rotation.T)
    attn.output.dense.bias.copy_(-attn.output.dense.weight @ attn.self.value.bias + 0.05 * torch.randn(dim, generator=gen))


def plant_feed_forward(layer, dim: int, gen: torch.Generator) -> None:
    inner = layer.intermediate.dense.weight.shape[0]
    layer.intermediate.dense.weight.copy_(torch.randn(inner, dim, generator=gen) * FFN_IN / math.sqrt(dim))
    layer.intermediate.dense.bias.copy_(-FFN_IN * FFN_THRESHOLD + torch.randn(inner, generator=gen) * BIAS)
    layer.output.dense.weight.copy_(torch.randn(dim, inner, generator=gen) * FFN_OUT / math.sqrt(dim))
    layer.output.dense.bias.copy_(torch.randn(dim, generator=gen) * BIAS)


def plant_layer_norm(norm, gen: torch.Generator) -> None:
    norm.weight.copy_(1.0 + LN_WEIGHT_JITTER * torch.randn(norm.weight.shape, generator=gen))
    norm.bias.copy_(LN_BIAS * torch.randn(norm.bias.shape, generator=gen))


def build_backbone(world: SyntheticMassive, settings: BackboneSettings):
    """(XLMRobertaForMaskedLM with planted weights in eval mode, its tokenizer, stats) for the world's languages."""
    from transformers import XLMRobertaForMaskedLM

    uses = word_uses(world)
    tokenizer = build_tokenizer(uses, settings.max_length)
    dim = settings.hidden_size
    space = MeaningSpace.draw(lexicon_concepts(), dim, seeded_rng(settings.seed, "meaning", dim))
    words = embedding_matrix(world, tokenizer, uses, space, settings.seed)
    gen = torch.Generator().manual_seed(int(seeded_rng(settings.seed, "weights", dim).integers(2**62)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)  # the module constructor's own initialisation (all of it overwritten below)
        model = XLMRobertaForMaskedLM(model_config(tokenizer, settings))
    axis = torch.tensor(space.salience_axis, dtype=torch.float32)
    with torch.no_grad():
        emb = model.roberta.embeddings
        emb.word_embeddings.weight.copy_(torch.tensor(words, dtype=torch.float32))
        emb.position_embeddings.weight.copy_(torch.randn(emb.position_embeddings.weight.shape, generator=gen) * POSITION_SCALE)
        emb.token_type_embeddings.weight.copy_(torch.randn(emb.token_type_embeddings.weight.shape, generator=gen) * POSITION_SCALE)
        for layer in model.roberta.encoder.layer:
            plant_attention(layer, dim, settings.num_heads, axis, gen)
            plant_feed_forward(layer, dim, gen)
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                plant_layer_norm(module, gen)
        head = model.lm_head
        head.dense.weight.copy_(torch.linalg.qr(torch.randn(dim, dim, generator=gen))[0])
        head.dense.bias.copy_(torch.randn(dim, generator=gen) * BIAS)
        head.decoder.weight.copy_(emb.word_embeddings.weight / emb.word_embeddings.weight.norm(dim=1, keepdim=True))
        head.bias.zero_()
    model.eval()
    stats = {
        "plant_version": PLANT_VERSION,
        "pieces": len(tokenizer),
        "word_pieces": len(uses),
        "parameters": sum(p.numel() for p in model.parameters()),
        "special_tokens": list(SPECIAL_TOKENS),
    }
    return model, tokenizer, stats

