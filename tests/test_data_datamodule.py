"""MassiveDataModule end to end: validation of its arguments, a tokenizer set after construction, and Lightning's
fit / test / predict loops running on its loaders with a tiny XLM-R classifier."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from conftest import write_release
from conftest import tiny_config, tiny_tokenizer

from merginguriel.data import MassiveDataModule, load_locale
from merginguriel.data.config import DataConfig
from merginguriel.data.tokenized import TOKENIZE_CALLS, cache_file
from merginguriel.errors import InputError
from merginguriel.locales import LOCALES, UnknownLocaleError


class TinyClassifier(pl.LightningModule):
    def __init__(self):
        super().__init__()
        from transformers import XLMRobertaForSequenceClassification

        torch.manual_seed(0)
        self.model = XLMRobertaForSequenceClassification(tiny_config())
        self.tested: dict[int, int] = {}

    def training_step(self, batch, batch_idx):
        return self.model(**batch).loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.model(**batch).loss, batch_size=len(batch["labels"]))

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        self.tested[dataloader_idx] = self.tested.get(dataloader_idx, 0) + len(batch["labels"])

    def predict_step(self, batch, batch_idx, dataloader_idx=0):
        return self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


@pytest.fixture
def release(tmp_path):
    write_release(tmp_path / "release", ["sw-KE", "fr-FR", "de-DE"])
    return tmp_path


def make_dm(tmp_path, locales, **kw):
    return MassiveDataModule(locales, source="release", data_path=str(tmp_path / "release"), root=str(tmp_path / "root"),
                             max_length=16, batch_size=8, eval_batch_size=16, **kw)


def test_arguments_checked_early(release):
    with pytest.raises(UnknownLocaleError) as e:
        make_dm(release, ["sw-KE", "xx-XX"])
    assert "xx-XX" in str(e.value) and all(loc in str(e.value) for loc in LOCALES)
    with pytest.raises(InputError, match="data_path"):
        MassiveDataModule("sw-KE", source="release")
    dm = make_dm(release, "sw-KE")
    assert dm.locales == ["sw-KE"] and dm.test_locales == ["sw-KE"]
    with pytest.raises(InputError, match="no tokenizer"):
        dm.setup("fit")


def test_tokenizer_path_set_later(release):
    folder = release / "tok"
    tiny_tokenizer().save_pretrained(folder)
    dm = make_dm(release, "fr-FR")
    dm.tokenizer = str(folder)
    dm.setup("test")
    assert not isinstance(dm.tokenizer, str)
    batch = next(iter(dm.test_dataloader()))
    assert set(batch) == {"input_ids", "attention_mask", "labels"} and batch["input_ids"].dtype == torch.long


def test_fit_test_predict_with_lightning(release):
    locales = ["sw-KE", "de-DE"]
    dm = make_dm(release, locales, seed=5)
    dm.tokenizer = tiny_tokenizer()
    rows = {loc: load_locale(DataConfig(source="release", data_path=str(release / "release")), loc) for loc in locales}
    calls = {loc: TOKENIZE_CALLS[loc] for loc in locales}
    trainer = pl.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    model = TinyClassifier()
    trainer.fit(model, datamodule=dm)
    n_train = sum(len(rows[loc]["train"]) for loc in locales)
    assert trainer.global_step == 2 * -(-n_train // 8)
    assert len(dm.val_dataloader().dataset) == sum(len(rows[loc]["validation"]) for loc in locales)
    # the fit read train and validation, each locale's data once; the test split is not tokenised yet
    assert {loc: TOKENIZE_CALLS[loc] - calls[loc] for loc in locales} == {loc: 1 for loc in locales}
    assert not any(cache_file(dm.data, dm.tokenizer, loc, "test").exists() for loc in locales)
    assert all(cache_file(dm.data, dm.tokenizer, loc, "train").exists() for loc in locales)

    trainer.test(model, datamodule=dm, verbose=False)
    assert model.tested == {i: len(rows[loc]["test"]) for i, loc in enumerate(dm.test_locales)}

    # Lightning re-instantiates predict loaders (it injects its own sampler); the length-sorted order must survive.
    preds = trainer.predict(model, datamodule=dm)
    for i, loc in enumerate(dm.test_locales):
        labels = torch.cat([p[1] for p in preds[i]])
        order = dm.predict_dataloader()[i].order
        restored = torch.empty_like(labels)
        restored[order] = labels
        assert restored.tolist() == [r["label"] for r in rows[loc]["test"]]
    # Each split of each locale was tokenised once (fit: train + validation; test: test), however many loaders and
    # stages used it.
    assert {loc: TOKENIZE_CALLS[loc] - calls[loc] for loc in locales} == {loc: 2 for loc in locales}
