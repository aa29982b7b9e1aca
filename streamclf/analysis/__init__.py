"""Reading a run back: timelines of files, detection metrics against labelled segments,
threshold sweeps, and the plots and HTML reports that show them.

Modules load matplotlib and the engine only when used, so ``import streamclf`` stays light.
"""
