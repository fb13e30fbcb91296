"""Semi-supervised learning with k labels per class: ``run_semisup`` (:mod:`.run`) trains labelled-only,
pseudo-labelling, the Pi-model, mean teacher or FixMatch; the methods themselves are trainer techniques
(:mod:`tricklab.techniques`) and the low-label split is :mod:`tricklab.data.low_label`."""
