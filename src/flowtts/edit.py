"""Speech editing under its first import path (``flowtts.edit``): re-exports of :mod:`flowtts.synthesis.edit`."""

from flowtts.synthesis.edit import EditPlan, EditResult, edit_speech, plan_edit

__all__ = ["EditPlan", "EditResult", "edit_speech", "plan_edit"]
