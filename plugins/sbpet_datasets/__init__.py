"""Built-in dataset sources: the LFW layout, a folder per class, and a CSV manifest."""

from sbpet_bench import hookimpl


@hookimpl
def sbpet_register_dataset_sources():
    from .sources import CsvManifest, ClassFolders, LfwLayout

    return [LfwLayout, ClassFolders, CsvManifest]
