"""The web app's tabs, one builder each (Speak, Multi-voice, Edit, Compare, Train), joined by
:func:`flowtts.app.ui.build_app`. A builder lays out its tab's components and wires their events to
:mod:`flowtts.app.engine`; it is called inside the app's ``gr.Blocks``. Importing this package imports
nothing heavy."""
