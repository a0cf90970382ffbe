"""Measures shared by both halves: per-image metrics (:mod:`.metrics`), the FID network and statistics
(:mod:`.fid`), set distances with intervals (:mod:`.set_distances`: FID, KID) and paired statistics
(:mod:`.stats`)."""
