"""Coral cover reports from the coral stage: per quadrat, per genus, point-intercept, CoralNet points.

Pure modules (numpy/OpenCV, no I/O; bytes out): ``raster`` (polygons and CVAT RLE masks → pixels),
``cover`` (one label per pixel, overlaps resolved by drawing order; pixel and point counts),
``points`` (stratified / random / grid points, Wilson interval), ``tables`` (CSV, Parquet),
``plot`` (stacked bar PNG), ``report`` (tables and files of a whole report).

``collect`` is the only module that talks to CVAT (through ``CvatClient``) and writes files: it reads
a task's frames, labels and shapes, follows the chain of stage tasks back to the source photos, and
writes the report under ``<data_dir>/reports/``. ``cli`` is ``bridge report``.
"""
