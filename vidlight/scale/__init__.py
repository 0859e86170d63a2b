"""Beyond one process: runs on a Ray cluster (``pip install 'vidlight[ray]'``).

* :func:`~vidlight.scale.batch.enhance_folder_on_ray`: a folder of videos as whole-file tasks
  on a pool of workers that load the model once (``vidlight process IN_DIR OUT_DIR
  --executor ray``).
"""
