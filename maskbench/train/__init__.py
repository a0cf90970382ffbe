"""The shared training machinery: configs (:mod:`.config`), data (:mod:`.data`), losses (:mod:`.losses`),
checkpoints (:mod:`.checkpoint`) and the loop (:mod:`.loop`). ``maskbench train`` drives it."""
