"""The one extraction path of query results.

``resultPages`` or the ``Sforce-Locator`` chain, every page streamed to storage with its count checked,
resumable from the manifest.
"""
