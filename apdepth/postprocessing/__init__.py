"""Post-processing of predicted depth maps: affine and metric scale (:mod:`.affine`,
:mod:`.metric_scale`), test-time augmentation (:mod:`.tta`), point clouds (:mod:`.pointcloud`) and
temporally stable video depth (:mod:`.video`)."""
