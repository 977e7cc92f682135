"""Preferences between two samples of the same text: which one a listener (or a machine judge) prefers.

:mod:`flowtts.prefs.store` reads and writes the preferences file (JSON lines, append-only, safe against a
kill mid-write); :mod:`flowtts.prefs.pairs` samples the pairs to rate and keeps them in a pairs folder;
:mod:`flowtts.prefs.judge` decides pairs by machine (a recogniser's word error rate, a recording against a
sample, a quality predictor); :mod:`flowtts.prefs.model` is a learned score fitted to such answers.
Nothing is imported here: each module loads what it needs when used.
"""
