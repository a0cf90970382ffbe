"""The dataset half: sources (:mod:`.sources`) -> masks put on faces (:mod:`.masks`, :mod:`.synth`, its output
folder :mod:`.synth_folder`) -> the Masked-Faces format (:mod:`.format`, :mod:`.dataset`, :mod:`.card`) ->
publishing (:mod:`.publish`); :mod:`.realism` measures how real the synthesis looks, :mod:`.testing` makes
small datasets for tests."""
