"""Data: record loading, prompt formatting, batching and the shared RLHFDataModule."""

from seam_lightning.data.datamodule import RLHFDataModule
from seam_lightning.data.formatting import PLAIN_TEMPLATE, PromptFormatter
from seam_lightning.data.records import DataError, DataSource, Record, load_records

__all__ = ["PLAIN_TEMPLATE", "DataError", "DataSource", "PromptFormatter", "RLHFDataModule", "Record", "load_records"]
