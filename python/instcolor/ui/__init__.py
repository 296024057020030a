"""The browser hint editor that ``instcolor serve`` serves at ``/`` (``/ui/``).

* ``static/``: the page (plain HTML, CSS and ES modules; no build step, no CDN, works offline).
* :mod:`.editor`: the editor's core (edit sessions with an LRU store, "newest edit wins",
  previews, suggestions, gamut pictures, full-resolution results), plain Python.
* :mod:`.hintset`: the hint-set JSON the editor saves and loads (the API's and the CLI's format).

The HTTP routes are in :mod:`instcolor.serve.editor`. Importing this package imports no web stack.
"""
