"""Reading real files (images, audio, text), splits, random-access sources, and the data
pipeline (Grain) that orders, shards, augments, batches and prefetches every data set.

These are the building blocks of the bundled data sets (``fusionjax_plugins/datasets/``)
and of any plugin's own.  Every reader raises :class:`fusionjax.errors.DataError` naming
the file and what is wrong with it, showing file content only through
:func:`fusionjax.errors.shown` (bounded), so that a corrupt file never floods the terminal.
"""
