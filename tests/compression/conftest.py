"""The tiny SST-2 run of the fine-tuning tests is what gets pruned here."""

from tests.finetune.conftest import sst2_slice, tiny_run  # noqa: F401
