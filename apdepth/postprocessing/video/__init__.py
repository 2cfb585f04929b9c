"""Video depth: frames in and out (:mod:`.frames`), pixel correspondences (:mod:`.flow`), temporal
stabilisation with flicker and drift reports (:mod:`.stabilize`) and the error against ground truth on
rendered clips (:mod:`.ground_truth`)."""
