"""The sweep engine: a per-item function over many items, in chunks under a memory budget,
sharded over devices, written to a resumable store, with a progress bar."""

from ._engine import (
    DEFAULT_MEMORY as DEFAULT_MEMORY,
    chunk_size as chunk_size,
    clear_cache as clear_cache,
    item_key as item_key,
    run as run,
    select_devices as select_devices,
    use_cpu_cores as use_cpu_cores,
)
from ._store import Store as Store
from ._study import (
    AbstractStudyItem as AbstractStudyItem,
    SweepFailureWarning as SweepFailureWarning,
    check_study as check_study,
    collect as collect,
    failure_counts as failure_counts,
    failures as failures,
    key_data as key_data,
    labelled as labelled,
    open_store as open_store,
    report as report,
    study_args as study_args,
    study_config as study_config,
    study_times as study_times,
)
