"""Methods: the predictor contract and the registry (:mod:`.predictors`), the base of learned methods
(:mod:`.learned`) and what ``maskbench train`` does with a method (:mod:`.launch`). The methods themselves
live in ``baselines/`` (``maskbench.baselines``) or in a plug-in."""
