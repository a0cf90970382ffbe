"""The benchmark half: run a method over a dataset and score it (:mod:`.evaluate`, the in-the-wild track
:mod:`.wild`, both on the run engine :mod:`.runs`), build the leaderboard (:mod:`.leaderboard`, drawn by :mod:`.report`), method figures
(:mod:`.demo`)."""
