"""MassiveDataModule: MASSIVE intent data for one or several locales as a LightningDataModule."""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

import lightning.pytorch as pl
from torch.utils.data import DataLoader

from merginguriel.checkpoints import DEFAULT_ROOT
from merginguriel.data.config import EVAL_BATCH_SIZE, DataConfig, DataSourceKind
from merginguriel.data.loaders import split_dataloader, train_dataloader, train_split
from merginguriel.data.sources import check_source
from merginguriel.errors import InputError
from merginguriel.locales import check_locales


class MassiveDataModule(pl.LightningDataModule):
    """MASSIVE intent classification data (text ``utt``, label = intent id in the hub order).

    Train is the concatenation of the locales' train splits (length-grouped, shuffled, seeded); validation is their
    validation splits together; test (and predict) give one loader per locale, in the order of ``test_locales``.
    Tokenisation happens once per locale and is cached on disk under ``<root>/cache/tokenized``.

    Args:
        locales: one MASSIVE locale (e.g. ``sw-KE``) or a list of them.
        source: ``embedded`` (generated offline), ``release`` (official jsonl files or tarball) or ``hub``.
        data_path: for ``release``: the folder holding ``1.1/data/<locale>.jsonl`` or the ``.tar.gz`` file.
        root: checkpoints root; the embedded data and the tokenisation cache live under it.
        max_length: truncate utterances to this many tokens.
        tokenizer: tokenizer path or hub id; may also be set later (``dm.tokenizer = ...``, a path or a tokenizer
            object), e.g. by the model, before ``setup``.
        batch_size: training batch size.
        eval_batch_size: batch size of validation, test and predict loaders.
        num_workers: DataLoader worker processes (0 loads in the main process; collation is cheap).
        seed: seed of the training order and of the ``max_train_examples`` subset.
        max_train_examples: train on a seeded random subset of this many examples (all when unset).
        predict_split: which split the predict loaders read.
    """

    def __init__(
        self,
        locales: Union[str, list[str]],
        source: DataSourceKind = "embedded",
        data_path: Optional[str] = None,
        root: str = DEFAULT_ROOT,
        max_length: int = 128,
        tokenizer: Optional[str] = None,
        batch_size: int = 32,
        eval_batch_size: int = EVAL_BATCH_SIZE,
        num_workers: int = 0,
        seed: int = 42,
        max_train_examples: Optional[int] = None,
        predict_split: Literal["train", "validation", "test"] = "test",
    ):
        super().__init__()
        self.locales = check_locales([locales] if isinstance(locales, str) else list(locales))
        if not self.locales:
            raise InputError("MassiveDataModule needs at least one locale (--data.locales)")
        if max_length < 1:
            raise InputError(f"max_length must be positive, got {max_length}")
        self.data = DataConfig(source=source, data_path=data_path, root=root, max_length=max_length)
        check_source(self.data)
        if predict_split not in ("train", "validation", "test"):
            raise InputError(f"predict_split must be train, validation or test, got {predict_split!r}")
        self.tokenizer: Any = tokenizer
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.max_train_examples = max_train_examples
        self.predict_split = predict_split

    @property
    def test_locales(self) -> list[str]:
        """The locale of each test/predict loader, in order (dataloader_idx i is ``test_locales[i]``)."""
        return list(self.locales)

    def _resolved_tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise InputError(
                "MassiveDataModule has no tokenizer: pass --data.tokenizer (a path or hub id) or set dm.tokenizer "
                "before setup"
            )
        if isinstance(self.tokenizer, str):
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(self.tokenizer)
        return self.tokenizer

    def stage_splits(self) -> tuple[str, ...]:
        """The splits the attached trainer's current stage reads (all three when no trainer is attached)."""
        stage = getattr(getattr(getattr(self, "trainer", None), "state", None), "fn", None)
        stage = getattr(stage, "value", stage)
        return {"fit": ("train", "validation"), "validate": ("validation",), "test": ("test",),
                "predict": (self.predict_split,)}.get(stage, ("train", "validation", "test"))

    def prepare_data(self) -> None:
        """Tokenise (or load from the cache) every locale's splits this stage reads, once, in the main process, before
        any worker starts: a test run never tokenises training rows."""
        tok = self._resolved_tokenizer()
        from merginguriel.data.tokenized import tokenized_locale

        for loc in self.locales:
            tokenized_locale(self.data, tok, loc, self.stage_splits())

    def check_rows(self, *splits: str) -> None:
        """InputError (naming the data file) when a locale has no rows in one of ``splits``: called before a run
        starts, so a fit or an evaluation without data stops before anything is written."""
        from merginguriel.data.tokenized import tokenized_split

        tok = self._resolved_tokenizer()
        for loc in self.locales:
            for split in splits:
                tokenized_split(self.data, tok, loc, split)

    def setup(self, stage: Optional[str] = None) -> None:
        self._resolved_tokenizer()

    def _eval_loaders(self, split: str) -> Union[DataLoader, list[DataLoader]]:
        from merginguriel.data.loaders import eval_dataloader

        tok = self._resolved_tokenizer()
        loaders = [eval_dataloader(self.data, tok, loc, split, self.eval_batch_size, self.num_workers) for loc in self.locales]
        return loaders[0] if len(loaders) == 1 else loaders

    def train_dataloader(self) -> DataLoader:
        return train_dataloader(self.data, self._resolved_tokenizer(), self.locales, self.batch_size, self.seed,
                                self.max_train_examples, self.num_workers)

    def val_dataloader(self) -> DataLoader:
        tok = self._resolved_tokenizer()
        return split_dataloader(train_split(self.data, tok, self.locales, split="validation"), tok,
                                self.eval_batch_size, self.num_workers)

    def test_dataloader(self) -> Union[DataLoader, list[DataLoader]]:
        return self._eval_loaders("test")

    def predict_dataloader(self) -> Union[DataLoader, list[DataLoader]]:
        return self._eval_loaders(self.predict_split)
