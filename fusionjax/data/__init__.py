"""Reading real files: images, audio, text; splits; background prefetch.

These are the building blocks of the bundled data sets (``plugins/``) and of any
plugin's own.  Every reader raises :class:`fusionjax.errors.DataError` naming the
file and what is wrong with it.
"""
