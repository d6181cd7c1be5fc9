"""Privacy evaluation: what one server can learn from what it received, over a whole video.

Each attack runs as the adversary would, from one server's share of each frame. What a server
receives on a frame is a function of the frame's *prologue* (``patch_embed + pos_embed``, the
first segment's input tokens) and of the schedule, so the evaluation runs the prologue on the
edge model and the rotation policies over the frames, without workers:

- :mod:`~pedsam.stream.privacy.wire`: the tokens as they cross the wire, through the edge's codec.
- :mod:`~pedsam.stream.privacy.inversion`: token inversion. The patch embedding is linear and public,
  so a server inverts it and gets the pixels of its windows back.
- :mod:`~pedsam.stream.privacy.mosaic`: cross-frame mosaic. Everything one server recovered, placed in
  scene coordinates with the camera motion (the edge's estimate, an upper bound on what the
  server could register itself), keeping the best view of each scene pixel, compared with each
  true frame (coverage, PSNR, SSIM) and with the run's whole scene (panorama coverage).
- :mod:`~pedsam.stream.privacy.detection`: OpenCV's HOG people detector and Haar face detector on the
  server's reconstruction, as recall relative to the true frame, matched on the visible part.
- :mod:`~pedsam.stream.privacy.parties`: the attackers (each worker, each small coalition), the
  worst of them fixed over the run; :mod:`~pedsam.stream.privacy.intervals`: their 95% intervals.
- :mod:`~pedsam.stream.privacy.context`, :mod:`~pedsam.stream.privacy.attackers`,
  :mod:`~pedsam.stream.privacy.leakage`: context leakage, ``pedsam bench-leakage``. Unlike the
  attacks above, these record what each worker is sent through the real split encoder, every
  segment of it, and learn facts of windows it was not sent; :mod:`~pedsam.stream.privacy.steering`
  is a worker that shapes its results to read a window back.
- :mod:`~pedsam.stream.privacy.report`: every policy over real videos, against the monolithic-cloud
  baseline (one server sees everything); :mod:`~pedsam.stream.privacy.html` draws the page;
  :mod:`~pedsam.stream.cli.privacy` is ``pedsam privacy-report``.
"""
