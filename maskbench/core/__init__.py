"""What every stage shares: file and image helpers (:mod:`.io`), model files and provenance
(:mod:`.resources`) and the error base a user can act on (:mod:`.errors`)."""
