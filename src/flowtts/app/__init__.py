"""``flowtts app``: the web app (Gradio, ``pip install 'flowtts[app]'``). Importing this package imports
nothing heavy; :func:`flowtts.app.ui.build_app` builds the page."""
